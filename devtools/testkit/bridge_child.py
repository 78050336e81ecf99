"""The bridge as a child process: the one runner of `appmetrica-bridge run` for the tests, the demo and the
benchmark, and the runners of its short commands (`check-config`, `dead-letters`, `preview`, ...).

The test suite's tiers (tests/conftest.py) treat any test that reaches these names as end-to-end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from devtools.testkit.records import APP, KEY, ROOT

# Loopback only: a proxy from the environment (http_proxy) must not see the runner's requests.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_environment(key: str | None = KEY, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without BRIDGE_* overrides (they would point the child elsewhere), unbuffered
    output, `key` as the default Post API key (None leaves it unset), then `extra`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("BRIDGE_")}
    env["PYTHONUNBUFFERED"] = "1"
    if key is not None:
        env["BRIDGE_POST_API_KEY"] = key
    env.update(extra or {})
    return env


def bridge_config(
    bootstrap: str,
    topic: str,
    post_api_url: str,
    *,
    group: str,
    registry_url: str | None = None,
    schema_file: Path | None = None,
    port: int | None = None,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """A bridge configuration for tests; `sections` are merged over the defaults, section by section.

    The designed waits are short here (drain 5 s, retries from 50 ms to 1 s, 2 s after a 403); the one test of
    each default sets it (tests/test_delivery.py, SIGTERM during an outage). One transform worker, not two.
    """
    avro: dict[str, Any] = (
        {"format": "confluent", "schema_registry_url": registry_url}
        if registry_url
        else {"format": "raw", "schema_file": str(schema_file or ROOT / "schemas" / "appmetrica_event.avsc")}
    )
    config: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": group,
            "topics": [topic],
            "properties": {"session.timeout.ms": 10000, "heartbeat.interval.ms": 1000},
        },
        "avro": avro,
        "post_api": {"url": post_api_url, "application_id": APP},
        "batch": {"max_rows": 1000, "linger_ms": 200},
        "upload": {
            "max_in_flight": 4,
            "requests_per_second": 200,
            "retry_base_s": 0.05,
            "retry_max_s": 1,
            "forbidden_retry_s": 2,
        },
        "server": {"host": "127.0.0.1", "port": port or free_port()},
        "shutdown": {"drain_timeout_s": 5},
        "log": {"progress_interval_s": 2},
        # One worker process, not the default two: a test's few records never need two, and each costs a start.
        # The tests of worker death and of signals to the process group set two.
        "transform": {"workers": 1},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


class BridgeProcess:
    """`appmetrica-bridge run` in a child process, its configuration and JSON log lines in files of `workdir`."""

    def __init__(
        self,
        config: Mapping[str, Any],
        workdir: Path,
        name: str = "bridge",
        key: str | None = KEY,
        env: Mapping[str, str] | None = None,
        launcher: Sequence[str] = (sys.executable,),
        own_session: bool = False,
    ) -> None:
        """`key` is the default Post API key (BRIDGE_POST_API_KEY), None leaves it unset; `env` adds variables.

        `launcher` runs `-m bridge run ...` (a profiler can wrap it); `own_session` keeps a terminal's Ctrl-C
        from reaching the child, for callers that stop it themselves, in order.
        """
        self.config = dict(config)
        self.port: int = config["server"]["port"]
        self.endpoints = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False), encoding="utf-8")
        self.log_path = workdir / f"{name}.log"
        self._env = child_environment(key, env)
        self._launcher = list(launcher)
        self._own_session = own_session
        self._process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        """When it was started, on the monotonic clock."""

    def start(self, own_process_group: bool = False) -> BridgeProcess:
        """`own_process_group`: the bridge leads a process group of its own (with its transform workers), as under
        a terminal or an init that signals the whole group."""
        with self.log_path.open("ab") as log:
            self.started = time.monotonic()
            self._process = subprocess.Popen(
                [*self._launcher, "-m", "bridge", "run", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=ROOT,
                start_new_session=self._own_session,
                process_group=0 if own_process_group and not self._own_session else None,
            )
        return self

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self._process is not None, "not started"
        return self._process

    @property
    def exit_code(self) -> int | None:
        """None while it runs (or before it started)."""
        return None if self._process is None else self._process.poll()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    async def wait(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"bridge still running {timeout_s:g} s later; log tail:\n{self.tail()}")
            await asyncio.sleep(0.1)
        return self.process.returncode

    def terminate(self, timeout_s: float) -> int | None:
        """SIGTERM, then wait up to `timeout_s`; SIGKILL if it did not exit (and return None)."""
        if self._process is None or self._process.poll() is not None:
            return self.exit_code
        self._process.send_signal(signal.SIGTERM)
        try:
            return self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def catches(self, signum: int) -> bool:
        """Whether the bridge has installed its own handler of `signum` yet (Linux's view of the process).

        Before that, SIGTERM kills it as the default action would: a test of what the bridge does with a signal
        during start-up sends it only once this says so, not after a sleep that a loaded machine outlasts.
        """
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return False
        caught = next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1]
        return bool(int(caught, 16) >> (signum - 1) & 1)

    async def get(self, path: str) -> tuple[int, str]:
        """GET one of the bridge's HTTP endpoints: status and body."""
        async with aiohttp.ClientSession() as session, session.get(f"{self.endpoints}{path}") as response:
            return response.status, await response.text()

    async def serving(self, timeout_s: float = 30) -> None:
        """Wait until the bridge's HTTP endpoints answer."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await self.get("/healthz")
                return
            except aiohttp.ClientError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise AssertionError(f"the bridge does not serve HTTP; log tail:\n{self.tail()}") from None
                await asyncio.sleep(0.2)

    def readiness(self) -> str:
        """What /readyz says, in a few words (blocking: for callers without an event loop)."""
        try:
            with _DIRECT.open(f"{self.endpoints}/readyz", timeout=1) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
        except OSError:
            return "not answering yet"
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            return "unreadable"
        if answer.get("ready"):
            return "ready"
        return "not ready (" + "; ".join(map(str, answer.get("reasons") or [])) + ")"

    def logs(self) -> list[dict[str, Any]]:
        """The log's lines as JSON objects; a line that is not one becomes {"event": line, "level": "unparsed"}."""
        lines = []
        for text in self.log_path.read_text(errors="replace").splitlines():
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                line = None
            lines.append(line if isinstance(line, dict) else {"event": text, "level": "unparsed"})
        return lines

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.asynccontextmanager
async def bridge_command(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m bridge ARGS` with its output piped; killed on the way out if the caller left it running."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def run_cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m bridge ARGS` to the end, with only PATH and `env` in its environment; its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin", **env},
        cwd=cwd,
        check=False,
    )
