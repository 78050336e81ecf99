"""Secrets never leave: the Post API key in any spelling an echo gives it back, registry user info, Kafka
credentials: in no log line, answer detail or check-config output (issue 10)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from bridge.config.model import PostApiKeys, UploadConfig, load_config
from bridge.ops.logs import REDACTED, Redactor
from bridge.ops.metrics import Metrics
from bridge.postapi.uploader import AiohttpTransport, Uploader, Verdict
from bridge.runtime.clock import LoopClock
from devtools.testkit.bridge_child import run_cli
from devtools.testkit.leaks import leaked, spellings

HOSTILE_KEYS = ["a+b/c=d%", "ключ+é/=?&#🎮", "%2B%25already-encoded", "K3Y~with.dots_and-dashes"]


@pytest.mark.parametrize("secret", HOSTILE_KEYS)
def test_every_spelling_of_a_secret_is_redacted(secret: str) -> None:
    text = " | ".join(f"echo {form} end" for form in spellings(secret))
    redacted = Redactor([secret]).redact(text)
    assert not leaked(secret, redacted)
    assert redacted.count(REDACTED) == len(spellings(secret))


@given(st.text(st.characters(exclude_categories=["Cs", "Zs", "Cc", "Zl", "Zp"]), min_size=8, max_size=40))
def test_any_key_is_redacted_in_every_spelling(secret: str) -> None:
    redacted = Redactor([secret]).redact(" ".join(spellings(secret)))
    assert not [form for form in leaked(secret, redacted) if form not in REDACTED]


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    """A Post API that refuses every request and echoes it: the URL raw and decoded, the query as JSON."""

    async def echo(request: web.Request) -> web.Response:
        echoed = f"bad request {request.url} raw {request.raw_path} query {json.dumps(dict(request.query))}"
        return web.Response(status=400, text=echoed)

    app = web.Application()
    app.router.add_post("/logs/v1/import/events.csv", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


class OneBody:
    def __init__(self, body: bytes, rows: int) -> None:
        self._body = (body, rows)

    async def body(self) -> tuple[bytes, int]:
        return self._body

    def withdrawn(self) -> bool:
        return False


@pytest.mark.parametrize("secret", HOSTILE_KEYS)
async def test_an_answer_that_echoes_the_request_never_carries_the_key(echo_url: str, secret: str) -> None:
    keys = PostApiKeys(SecretStr(secret), {})
    async with aiohttp.ClientSession() as session:
        uploader = Uploader(AiohttpTransport(session), echo_url, keys, UploadConfig(), Metrics(), LoopClock())
        answer = await uploader.deliver("events", 1111, OneBody(b"application_id\r\n1111\r\n", 1))
    assert answer.verdict == Verdict.REFUSED
    assert "bad request" in answer.detail and REDACTED in answer.detail
    assert not leaked(secret, answer.detail), answer.detail


GOOD = """
kafka:
  bootstrap_servers: "127.0.0.1:9092"
  topics: ["appmetrica.events"]
  properties:
    security.protocol: SASL_SSL
    sasl.mechanism: OAUTHBEARER
    sasl.oauthbearer.config: "clientId=bridge clientSecret=oauth-Secret-42 scope=kafka"
    sasl.jaas.config: 'PlainLoginModule required username="u" password="jaas-pw-7";'
    ssl.key.password: ssl-key-pw-9
avro:
  format: confluent
  schema_registry_url: "https://reg-user:reg%2Bpass%3Dword@registry.internal:8081,https://registry-2.internal"
post_api:
  application_id: 1111
"""
KEY = "a+b/c=d%-post-api-key"
SECRETS = ["oauth-Secret-42", "jaas-pw-7", "ssl-key-pw-9", "reg%2Bpass%3Dword", "reg+pass=word", KEY]


def check_config(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    return run_cli("check-config", "--config", str(path), env={"BRIDGE_POST_API_KEY": KEY})


def test_check_config_masks_registry_user_info_and_kafka_credentials(tmp_path: Path) -> None:
    result = check_config(tmp_path, GOOD)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for secret in SECRETS:
        assert not leaked(secret, output), secret
    assert f"https://{REDACTED}@registry.internal:8081,https://registry-2.internal" in output
    assert "security.protocol: SASL_SSL" in output, "what is not a secret stays readable"


def test_the_log_redactor_knows_every_secret_the_configuration_holds(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(GOOD)
    secrets = load_config(path, {"BRIDGE_POST_API_KEY": KEY}).secrets()
    line = Redactor(secrets).redact(" ".join(form for secret in SECRETS for form in spellings(secret)))
    for secret in SECRETS:
        assert not leaked(secret, line), secret


@pytest.mark.parametrize(
    "url",
    [
        "registry.internal:8081",
        "ftp://user:hunter2-pw@registry.internal",
        "http://user:hunter2-pw@registry.internal:notaport",
        "http://registry.internal:8081,registry-2:8081",
        "http://:8081",
    ],
)
def test_a_registry_url_that_is_not_one_is_a_configuration_error_naming_the_key(tmp_path: Path, url: str) -> None:
    result = check_config(tmp_path, GOOD.replace(GOOD.split('schema_registry_url: "')[1].split('"')[0], url))
    assert result.returncode == 2
    assert "avro.schema_registry_url" in result.stderr and result.stderr.strip().count("\n") == 0
    assert url not in result.stderr, "the URL is not quoted: it may hold a password"
    assert "hunter2-pw" not in result.stderr


LIBRARY_LOG = """
import logging, sys
from urllib.parse import quote
from bridge.ops import logs
logs.REDACTOR.add([sys.argv[1]])
logs.configure("info")
try:
    raise RuntimeError(f"request to http://api/x?post_api_key={quote(sys.argv[1], safe='')} failed")
except RuntimeError:
    logging.getLogger("asyncio").exception("Task exception was never retrieved")
"""


def test_a_library_log_line_quoting_the_key_is_redacted() -> None:
    """Libraries log through the standard logging module, not structlog: their lines are redacted too."""
    secret = "a+b/c=d%-library-echo"
    result = subprocess.run([sys.executable, "-c", LIBRARY_LOG, secret], capture_output=True, text=True, check=True)
    assert "Task exception was never retrieved" in result.stdout and REDACTED in result.stdout
    assert not leaked(secret, result.stdout), result.stdout
