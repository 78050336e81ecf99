"""Registry credentials as an operator gives them: from the environment or a file, never the configuration file,
masked by check-config and in no log line; a bridge with the right ones delivers, with wrong ones it waits."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config.model import ConfigError, load_config
from bridge.decoding.avro import contract_schema
from bridge.ops.logs import REDACTED
from bridge.sandbox.registry import SchemaRegistry
from bridge.sandbox.server import Sandbox
from devtools.kafka_local import free_ports
from devtools.testkit.bridge_child import BridgeProcess, bridge_config
from devtools.testkit.configs import cli_in_process
from devtools.testkit.kafka import TopicFactory, committed, end_offsets, produce
from devtools.testkit.records import KEY, SUBJECT, event, seqs, wire
from devtools.testkit.waiting import wait_for

USER, PASSWORD = "bridge-reader", "0123+pa/ss%20wörd:&"
"""Looks like a YAML number at first, holds characters that URL encodings change, and a colon."""
SASL_PASSWORD = "yes"
"""YAML would read it as true."""
TOKEN = "tok+en/with=padding=="
KEY_PASSWORD = "key-pässword"


def every_form(secret: str) -> list[str]:
    return [secret, quote(secret), quote_plus(secret), quote(secret, safe="")]


def write_config(path: Path, **avro: Any) -> Path:
    config = bridge_config("127.0.0.1:1", "t", "https://api.example", group="g", registry_url="https://sr:8081")
    config["kafka"]["properties"] = {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "u"}
    config["avro"].update(avro)
    path.write_text(yaml.safe_dump(config))
    return path


def check_config(config: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """check-config with only `env` set, asked of the command in process."""
    done = cli_in_process("check-config", "--config", str(config), env={"BRIDGE_POST_API_KEY": None, **env})
    return done.returncode, done.stdout, done.stderr


def test_check_config_prints_no_credential_of_any_kind(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    env = {
        "BRIDGE_POST_API_KEY": KEY,
        "BRIDGE_KAFKA__PROPERTIES__SASL.PASSWORD": SASL_PASSWORD,
        "BRIDGE_AVRO__SCHEMA_REGISTRY_PROPERTIES__SSL.KEY.PASSWORD": KEY_PASSWORD,
    }
    with_user_info = write_config(
        tmp_path / "a.yaml", schema_registry_properties={"ssl.ca.location": "/etc/registry/ca.pem"}
    )
    code, out, err = check_config(with_user_info, {**env, "BRIDGE_SCHEMA_REGISTRY_USER_INFO": f"{USER}:{PASSWORD}"})
    assert code == 0, err
    shown = yaml.safe_load(out)
    assert shown["avro"]["schema_registry_credentials"] == {"user_info": "set", "bearer_token": "not set"}
    assert shown["avro"]["schema_registry_properties"]["ssl.ca.location"] == "/etc/registry/ca.pem"
    with_token = write_config(tmp_path / "b.yaml", schema_registry_bearer_token_file=str(token_file))
    code, out_token, err_token = check_config(with_token, env)
    assert code == 0, err_token
    assert yaml.safe_load(out_token)["avro"]["schema_registry_credentials"]["bearer_token"] == "set"
    shown_values = [str(value) for value in leaves(shown) + leaves(yaml.safe_load(out_token))]
    for secret in [PASSWORD, SASL_PASSWORD, TOKEN, KEY_PASSWORD, KEY]:
        for form in every_form(secret):
            assert not any(form in value for value in shown_values), form
            for output in (out, err, out_token, err_token):
                assert form not in output, form


def leaves(data: Any) -> list[Any]:
    if isinstance(data, dict):
        return [leaf for value in data.values() for leaf in leaves(value)]
    if isinstance(data, list):
        return [leaf for value in data for leaf in leaves(value)]
    return [data]


@pytest.mark.parametrize(
    ("avro", "env", "message"),
    [
        (
            {"schema_registry_properties": {"basic.auth.user.info": f"{USER}:{PASSWORD}"}},
            {},
            "avro.schema_registry_properties: basic.auth.user.info is not set here: "
            "use BRIDGE_SCHEMA_REGISTRY_USER_INFO",
        ),
        (
            {"schema_registry_properties": {"bearer.auth.token": TOKEN}},
            {},
            "avro.schema_registry_properties: bearer.auth.token is not set here: "
            "use BRIDGE_SCHEMA_REGISTRY_BEARER_TOKEN",
        ),
        (
            {},
            {"BRIDGE_SCHEMA_REGISTRY_USER_INFO": PASSWORD.replace(":", "")},
            "avro.schema_registry_user_info_file / BRIDGE_SCHEMA_REGISTRY_USER_INFO: must be user:password",
        ),
        (
            {"schema_registry_url": f"https://{USER}:{quote(PASSWORD, safe='')}@sr:8081"},
            {"BRIDGE_SCHEMA_REGISTRY_USER_INFO": f"{USER}:{PASSWORD}"},
            "avro.schema_registry_url: holds user info as well as BRIDGE_SCHEMA_REGISTRY_USER_INFO",
        ),
        (
            {"schema_registry_user_info_file": "/nonexistent/user-info"},
            {},
            "avro.schema_registry_user_info_file / BRIDGE_SCHEMA_REGISTRY_USER_INFO: cannot read",
        ),
    ],
)
def test_credentials_in_the_wrong_place_are_refused_in_one_line(
    avro: dict[str, Any], env: dict[str, str], message: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.yaml", **avro)
    code, out, err = check_config(config, {"BRIDGE_POST_API_KEY": KEY, **env})
    assert code == 2
    assert out == ""
    assert err.startswith(f"appmetrica-bridge: configuration error: {message}"), err
    assert err.count("\n") == 1
    for form in every_form(PASSWORD) + every_form(TOKEN):
        assert form not in err


def test_secret_properties_from_the_environment_stay_text_as_given(tmp_path: Path) -> None:
    config = write_config(tmp_path / "d.yaml")
    env = {
        "BRIDGE_POST_API_KEY": KEY,
        "BRIDGE_KAFKA__PROPERTIES__SASL.PASSWORD": "0123",
        "BRIDGE_KAFKA__PROPERTIES__SESSION.TIMEOUT.MS": "30000",
        "BRIDGE_SCHEMA_REGISTRY_USER_INFO": f"{USER}:{PASSWORD}",
    }
    settings = load_config(config, env)
    assert settings.config.kafka.properties["sasl.password"] == "0123"
    assert settings.config.kafka.properties["session.timeout.ms"] == 30000
    assert settings.registry.client_properties() == {"basic.auth.user.info": f"{USER}:{PASSWORD}"}
    assert {"0123", f"{USER}:{PASSWORD}", PASSWORD} <= set(settings.secrets())
    with pytest.raises(ConfigError, match="not both"):
        load_config(config, {**env, "BRIDGE_SCHEMA_REGISTRY_BEARER_TOKEN": TOKEN})


@settings(max_examples=200, deadline=None)
@given(
    password=st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1),
    user=st.text(st.characters(whitelist_categories=("L", "N")), min_size=1),
)
def test_any_password_reaches_the_clients_exactly_as_given(tmp_path_factory: Any, password: str, user: str) -> None:
    config = write_config(tmp_path_factory.mktemp("hyp") / "h.yaml")
    env = {
        "BRIDGE_POST_API_KEY": KEY,
        "BRIDGE_KAFKA__PROPERTIES__SASL.PASSWORD": password,
        "BRIDGE_SCHEMA_REGISTRY_USER_INFO": f"{user}:{password}",
    }
    loaded = load_config(config, env)
    assert loaded.config.kafka.properties["sasl.password"] == password
    assert loaded.registry.client_properties() == {"basic.auth.user.info": f"{user}:{password}"}
    assert password in loaded.secrets()
    shown = loaded.redacted()
    assert shown["kafka"]["properties"]["sasl.password"] == REDACTED
    assert shown["avro"]["schema_registry_credentials"]["user_info"] == "set"


@pytest.fixture
async def auth_registry() -> AsyncIterator[SchemaRegistry]:
    registry = SchemaRegistry(basic_auth=(USER, PASSWORD))
    await registry.start()
    yield registry
    await registry.stop()


def produce_events(bootstrap: str, topic: str, registry: SchemaRegistry, total: int) -> None:
    schema_id = registry.register(SUBJECT, json.dumps(contract_schema()))
    produce(bootstrap, topic, [wire(schema_id, event(seq)) for seq in range(total)])


async def test_user_info_from_the_environment_alone_delivers_every_event(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, auth_registry: SchemaRegistry, tmp_path: Path
) -> None:
    topic = new_topic(4)
    total = 3000
    produce_events(kafka_bootstrap, topic, auth_registry, total)
    (dead_port,) = free_ports(1)
    urls = f"http://127.0.0.1:{dead_port},{auth_registry.url}"  # the first is down: the second is asked
    config = bridge_config(kafka_bootstrap, topic, sandbox.url, group=f"g-{topic}", registry_url=urls)
    bridge = BridgeProcess(config, tmp_path, env={"BRIDGE_SCHEMA_REGISTRY_USER_INFO": f"{USER}:{PASSWORD}"}).start()
    try:
        await wait_for(lambda: len(sandbox.state.events) >= total, 90, "all events accepted")
        _, metrics = await bridge.get("/metrics")
        ends = end_offsets(kafka_bootstrap, topic)
        await wait_for(lambda: committed(kafka_bootstrap, f"g-{topic}", topic) == ends, 20, "offsets at the end")
        bridge.signal(signal.SIGTERM)
        assert await bridge.wait(30) == 0
    finally:
        bridge.kill()
    assert sorted(seqs(sandbox.state.events)) == list(range(total))
    assert auth_registry.refused_logins == 0
    text = bridge.log_path.read_text()
    for form in every_form(PASSWORD):
        assert form not in text
        assert form not in metrics


async def test_wrong_user_info_delivers_nothing_dead_letters_nothing_is_not_ready_and_names_the_cause(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, auth_registry: SchemaRegistry, tmp_path: Path
) -> None:
    topic, dlq = new_topic(4), new_topic(1)
    total = 10_000
    produce_events(kafka_bootstrap, topic, auth_registry, total)
    wrong = f"{USER}:not-{PASSWORD}"
    config = bridge_config(
        kafka_bootstrap,
        topic,
        sandbox.url,
        group=f"g-{topic}",
        registry_url=auth_registry.url,
        kafka={"dead_letter_topic": dlq},
        batch={"max_rows": 10_000, "linger_ms": 1000},
    )
    bridge = BridgeProcess(config, tmp_path, env={"BRIDGE_SCHEMA_REGISTRY_USER_INFO": wrong}).start()
    try:
        await bridge.serving()
        await wait_for(lambda: auth_registry.refused_logins >= 2, 60, "the registry asked twice")
        await wait_for(lambda: "registry" in bridge.readiness().lower(), 30, "not ready because of the registry")
        status, body = await bridge.get("/readyz")
        assert status == 503, body
        started = time.monotonic()
        bridge.signal(signal.SIGTERM)  # during the outage: the drain is bounded
        assert await bridge.wait(30) == 0, bridge.tail()
        assert time.monotonic() - started < 25
    finally:
        bridge.kill()
    assert sandbox.state.events == []
    assert end_offsets(kafka_bootstrap, dlq, 1) == {0: 0}, "nothing dead-lettered"
    assert set(committed(kafka_bootstrap, f"g-{topic}", topic).values()) <= {-1001}, "nothing committed"
    lines = [json.loads(line) for line in bridge.log_path.read_text().splitlines()]
    waits = [line for line in lines if line.get("event") == "schema registry unavailable; records wait"]
    assert waits and "401" in waits[0]["error"], lines[-5:]
    text = bridge.log_path.read_text()
    for form in every_form(PASSWORD) + every_form("not-" + PASSWORD):
        assert form not in text
