"""Helpers shared by more than one test module."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

from bridge.cli import main

KEY = "config-checks-post-api-key"


ENV = {"BRIDGE_POST_API_KEY": KEY}


JSON_ONLY = """
kafka:
  bootstrap_servers: "127.0.0.1:9092"
  dead_letter_topic: game.events.dlq
post_api:
  application_id: 3713842
routes:
  - topics: [game.events]
    method: events
    format: json
    mapping:
      profile_id: user
      event_name: type
      event_timestamp: {path: ts, unit: s}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    return path


def cli(*args: str, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it; `env` adds variables to the test key, or unsets one with None."""
    variables = {"PATH": "/usr/bin", **ENV, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        env={name: value for name, value in variables.items() if value is not None},
        timeout=60,
    )


def check_config(
    tmp_path: Path, text: str, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    return cli("check-config", "--config", str(write(tmp_path, text)), env=env)


def problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    prefix = "appmetrica-bridge: configuration error: "
    lines = result.stderr.splitlines()
    assert all(line.startswith(prefix) for line in lines), result.stderr
    return [line.removeprefix(prefix) for line in lines]


def cli_in_process(*args: str, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess[str]:
    """What `cli` answers, from `bridge.cli.main` in this process (milliseconds instead of a second of imports):
    the environment is the test key and `env` alone for the call, as in the child `cli` starts."""
    variables = {**ENV, **(env or {})}
    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, {n: v for n, v in variables.items() if v is not None}, clear=True),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse refusing the arguments
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return subprocess.CompletedProcess([sys.executable, "-m", "bridge", *args], code, out.getvalue(), err.getvalue())


def check_config_in_process(
    tmp_path: Path, text: str, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """`check_config`'s answer from `cli_in_process`."""
    return cli_in_process("check-config", "--config", str(write(tmp_path, text)), env=env)
