"""The Post API as a user's network has it: over HTTPS with a private CA, through a real forward proxy (proxy.py,
from PyPI) named by HTTPS_PROXY, around it for hosts in NO_PROXY, and the key in none of the proxy's log lines."""

from __future__ import annotations

import asyncio
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import aiohttp
import pytest

from bridge.sandbox.config import Keys
from bridge.sandbox.server import Sandbox, SandboxOptions
from bridge.sandbox.serving import server_tls
from devtools.kafka_local import free_ports, port_open
from devtools.testkit.bridge_child import BridgeProcess, bridge_command, bridge_config
from devtools.testkit.kafka import TopicFactory, committed, end_offsets, produce
from devtools.testkit.records import APP, KEY, event, raw_avro, seqs
from devtools.testkit.waiting import wait_for
from devtools.tls_local import TlsFiles, make_tls_files

TOTAL = 2000


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("post-api-tls"))


@pytest.fixture
async def https_sandbox(tls_files: TlsFiles) -> AsyncIterator[Sandbox]:
    server = Sandbox(SandboxOptions(keys=Keys(post_api_key=KEY, application_id=APP), seed=7))
    await server.start(tls=server_tls(tls_files.server_cert, tls_files.server_key))
    yield server
    await server.stop()


class ForwardProxy:
    def __init__(self, port: int, log_file: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_file = log_file

    def lines(self) -> list[str]:
        return self.log_file.read_text(errors="replace").splitlines() if self.log_file.exists() else []


@pytest.fixture
def forward_proxy(tmp_path: Path) -> Iterator[ForwardProxy]:
    """proxy.py on a free loopback port, logging every request at debug level to a file."""
    (port,) = free_ports(1)
    log_file = tmp_path / "proxy.log"
    command = [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", str(port)]
    command += ["--num-acceptors", "1", "--num-workers", "1", "--log-level", "DEBUG", "--log-file", str(log_file)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not port_open(port):
            assert process.poll() is None, f"proxy.py exited with {process.returncode}"
            assert time.monotonic() < deadline, "proxy.py does not listen"
            time.sleep(0.1)
        yield ForwardProxy(port, log_file)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def run_bridge(
    kafka_bootstrap: str, topic: str, sandbox: Sandbox, tls: TlsFiles, env: dict[str, str], workdir: Path
) -> BridgeProcess:
    # The certificate names localhost, as a real API's names its host; the sandbox listens on 127.0.0.1.
    url = sandbox.url.replace("127.0.0.1", "localhost")
    config = bridge_config(
        kafka_bootstrap, topic, url, group=f"g-{topic}-{workdir.name}", post_api={"ca_file": str(tls.ca)}
    )
    bridge = BridgeProcess(config, workdir, env=env).start()
    group = config["kafka"]["group_id"]
    try:
        await wait_for(lambda: len(sandbox.state.events) >= TOTAL, 90, "all events accepted")
        ends = end_offsets(kafka_bootstrap, topic)
        await wait_for(lambda: committed(kafka_bootstrap, group, topic) == ends, 20, "offsets at the end")
        bridge.signal(signal.SIGTERM)
        assert await bridge.wait(30) == 0, bridge.tail()
    finally:
        bridge.kill()
    assert sorted(seqs(sandbox.state.events)) == list(range(TOTAL))
    return bridge


async def test_uploads_go_through_https_proxy_and_the_key_is_in_no_proxy_log_line(
    kafka_bootstrap: str,
    new_topic: TopicFactory,
    https_sandbox: Sandbox,
    forward_proxy: ForwardProxy,
    tls_files: TlsFiles,
    tmp_path: Path,
) -> None:
    topic = new_topic(4)
    produce(kafka_bootstrap, topic, [raw_avro(event(seq)) for seq in range(TOTAL)])
    env = {"HTTPS_PROXY": forward_proxy.url, "NO_PROXY": "", "https_proxy": forward_proxy.url, "no_proxy": ""}
    await run_bridge(kafka_bootstrap, topic, https_sandbox, tls_files, env, tmp_path / "proxied")
    tunnels = [line for line in forward_proxy.lines() if "CONNECT" in line and "localhost" in line]
    assert tunnels, forward_proxy.lines()[-20:]
    log = "\n".join(forward_proxy.lines())
    for form in (KEY, quote(KEY), quote_plus(KEY), "post_api_key"):
        assert form not in log


async def test_no_proxy_sends_uploads_around_the_proxy(
    kafka_bootstrap: str,
    new_topic: TopicFactory,
    https_sandbox: Sandbox,
    forward_proxy: ForwardProxy,
    tls_files: TlsFiles,
    tmp_path: Path,
) -> None:
    topic = new_topic(4)
    produce(kafka_bootstrap, topic, [raw_avro(event(seq)) for seq in range(TOTAL)])
    env = {"HTTPS_PROXY": forward_proxy.url, "NO_PROXY": "localhost", "https_proxy": forward_proxy.url}
    env["no_proxy"] = "localhost"
    await run_bridge(kafka_bootstrap, topic, https_sandbox, tls_files, env, tmp_path / "direct")
    assert not [line for line in forward_proxy.lines() if "CONNECT" in line], forward_proxy.lines()[-20:]


async def test_a_post_api_certificate_from_an_unknown_ca_is_never_trusted(
    kafka_bootstrap: str, new_topic: TopicFactory, https_sandbox: Sandbox, tmp_path: Path
) -> None:
    """Without post_api.ca_file the sandbox's private CA is not trusted: nothing is sent, the key stays home."""
    topic = new_topic(4)
    produce(kafka_bootstrap, topic, [raw_avro(event(seq)) for seq in range(100)])
    url = https_sandbox.url.replace("127.0.0.1", "localhost")
    config = bridge_config(kafka_bootstrap, topic, url, group=f"g-{topic}")
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        await wait_for(lambda: "connection_error" in bridge.log_path.read_text(), 60, "a refused connection")
        bridge.signal(signal.SIGTERM)
        assert await bridge.wait(30) == 0, bridge.tail()
    finally:
        bridge.kill()
    assert https_sandbox.state.events == []
    assert KEY not in bridge.log_path.read_text()


async def test_sandbox_cli_serves_https_with_tls_flags(tls_files: TlsFiles) -> None:
    args = ("sandbox", "--port", "0", "--post-api-key", KEY)
    tls_args = ("--tls-cert", str(tls_files.server_cert), "--tls-key", str(tls_files.server_key))
    async with bridge_command(*args, *tls_args) as process:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line.startswith("Post API sandbox listening on https://127.0.0.1:"), line
        url = line.split()[-1]
        trusted = ssl.create_default_context(cafile=str(tls_files.ca))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/sandbox/stats", ssl=trusted) as response:
                assert response.status == 200
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(f"{url}/sandbox/stats")
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == 0
    async with bridge_command("sandbox", "--port", "0", "--tls-cert", str(tls_files.server_cert)) as half:
        _, errors = await asyncio.wait_for(half.communicate(), 20)
    assert half.returncode == 2
    assert errors.decode() == "appmetrica-bridge: error: give --tls-cert and --tls-key together\n"
