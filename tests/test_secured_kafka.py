"""The bridge through the secured listeners of a real broker: SASL_SSL with SCRAM and ACLs, and mutual TLS.

Each run also reads its schemas from a registry that demands basic auth over TLS, so one bridge start covers
Kafka security, registry credentials from the environment and the registry's own CA.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

# NewTopic is documented in confluent_kafka.admin, which re-exports it without listing it as public.
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bridge.decoding.avro import contract_schema
from bridge.kafka.dead_letter_producer import HEADER_REASON
from bridge.sandbox.registry import SchemaRegistry
from bridge.sandbox.server import Sandbox
from bridge.sandbox.serving import server_tls
from devtools.kafka_local import free_ports
from devtools.testkit.bridge_child import BridgeProcess, bridge_config
from devtools.testkit.kafka import committed, consume_all, end_offsets, produce
from devtools.testkit.records import KEY, SUBJECT, event, seqs, wire
from devtools.testkit.secured import SecuredKafka
from devtools.testkit.waiting import wait_for

REGISTRY_USER, REGISTRY_PASSWORD = "sr-user", "sr-pässword:with+colon&%41"
USER_INFO = f"{REGISTRY_USER}:{REGISTRY_PASSWORD}"
EVENTS = 2000

TopicMaker = Callable[[str], str]
Case = tuple[dict[str, Any], dict[str, str], Callable[[str], bool]]
"""A bridge that must not start: its configuration, its environment, and whether its one error line is right."""


@pytest.fixture
def secured_topic(secured_kafka: SecuredKafka) -> Iterator[TopicMaker]:
    """Create topics on the secured broker (through its plain, super-user listener); deleted at the end."""
    admin = AdminClient({"bootstrap.servers": secured_kafka.plain})
    created: list[str] = []

    def create(prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        admin.create_topics([NewTopic(name, num_partitions=4, replication_factor=1)])[name].result(timeout=30)
        created.append(name)
        return name

    yield create
    if created:
        for future in admin.delete_topics(created).values():
            future.result(timeout=30)


@pytest.fixture
async def tls_registry(secured_kafka: SecuredKafka) -> AsyncIterator[SchemaRegistry]:
    """The registry stand-in demanding basic auth, over TLS with the session CA's server certificate."""
    registry = SchemaRegistry(basic_auth=(REGISTRY_USER, REGISTRY_PASSWORD))
    tls = secured_kafka.tls
    await registry.start(tls=server_tls(tls.server_cert, tls.server_key))
    yield registry
    await registry.stop()


def secured_config(
    secured: SecuredKafka, bootstrap: str, properties: dict[str, str], topic: str, dlq: str, post_api: str, url: str
) -> dict[str, Any]:
    config = bridge_config(
        bootstrap,
        topic,
        post_api,
        group=f"g-{topic}",
        registry_url=url,
        kafka={"dead_letter_topic": dlq, "properties": properties},
    )
    config["avro"]["schema_registry_properties"] = {"ssl.ca.location": str(secured.tls.ca)}
    return config


def produce_with_one_poison(secured: SecuredKafka, registry: SchemaRegistry, topic: str) -> None:
    schema_id = registry.register(SUBJECT, json.dumps(contract_schema()))
    values = [wire(schema_id, event(seq)) for seq in range(EVENTS)]
    values.append(b"\x07not the wire format")
    produce(secured.plain, topic, values)


async def delivered_through(
    secured: SecuredKafka, bridge: BridgeProcess, sandbox: Sandbox, topic: str, dlq: str
) -> list[str]:
    """Run the bridge until every event and the poison record are done; return its log text."""
    bridge.start()
    try:
        try:
            await wait_for(
                lambda: len(sandbox.state.events) >= EVENTS or bridge.process.poll() is not None,
                90,
                "all events accepted",
            )
            assert bridge.process.poll() is None, "the bridge exited"
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log ends:\n{bridge.tail()}") from None
        ends = end_offsets(secured.plain, topic)
        await wait_for(lambda: committed(secured.plain, f"g-{topic}", topic) == ends, 30, "offsets at the end")
        bridge.signal(signal.SIGTERM)
        assert await bridge.wait(30) == 0, bridge.tail()
    finally:
        bridge.kill()
    assert sorted(seqs(sandbox.state.events)) == list(range(EVENTS))
    dead = consume_all(secured.plain, dlq, 1)
    assert len(dead) == 1
    assert dict(dead[0].headers())[HEADER_REASON] == b"decode"
    return bridge.log_path.read_text().splitlines()


def assert_no_secret(lines: list[str], *secrets: str) -> None:
    text = "\n".join(lines)
    for secret in secrets:
        assert secret not in text


async def test_sasl_ssl_with_only_the_documented_acls_delivers_and_dead_letters(
    secured_kafka: SecuredKafka,
    secured_topic: TopicMaker,
    sandbox: Sandbox,
    tls_registry: SchemaRegistry,
    tmp_path: Path,
) -> None:
    topic, dlq = secured_topic("sasl"), secured_topic("sasl-dlq")
    secured_kafka.grant(f"User:{secured_kafka.user}", [topic], f"g-{topic}", dlq)
    produce_with_one_poison(secured_kafka, tls_registry, topic)
    config = secured_config(
        secured_kafka,
        secured_kafka.broker.sasl_bootstrap,
        secured_kafka.sasl_properties(),
        topic,
        dlq,
        sandbox.url,
        tls_registry.url,
    )
    env = {
        "BRIDGE_KAFKA__PROPERTIES__SASL.PASSWORD": secured_kafka.password,
        "BRIDGE_SCHEMA_REGISTRY_USER_INFO": USER_INFO,
    }
    bridge = BridgeProcess(config, tmp_path, env=env)
    lines = await delivered_through(secured_kafka, bridge, sandbox, topic, dlq)
    assert tls_registry.refused_logins == 0
    assert_no_secret(lines, secured_kafka.password, REGISTRY_PASSWORD, KEY)


async def test_mutual_tls_delivers_and_dead_letters(
    secured_kafka: SecuredKafka,
    secured_topic: TopicMaker,
    sandbox: Sandbox,
    tls_registry: SchemaRegistry,
    tmp_path: Path,
) -> None:
    topic, dlq = secured_topic("mtls"), secured_topic("mtls-dlq")
    secured_kafka.grant("User:bridge-mtls", [topic], f"g-{topic}", dlq)
    produce_with_one_poison(secured_kafka, tls_registry, topic)
    config = secured_config(
        secured_kafka,
        secured_kafka.broker.ssl_bootstrap,
        secured_kafka.mtls_properties(),
        topic,
        dlq,
        sandbox.url,
        tls_registry.url,
    )
    bridge = BridgeProcess(config, tmp_path, env={"BRIDGE_SCHEMA_REGISTRY_USER_INFO": USER_INFO})
    lines = await delivered_through(secured_kafka, bridge, sandbox, topic, dlq)
    assert_no_secret(lines, REGISTRY_PASSWORD, KEY)


async def failed_start(config: dict[str, Any], tmp_path: Path, env: dict[str, str]) -> str:
    """Run a bridge that must not start: exit 1, and its one error line, which no librdkafka line surrounds."""
    bridge = BridgeProcess(config, tmp_path, env={"BRIDGE_SCHEMA_REGISTRY_USER_INFO": USER_INFO, **env}).start()
    try:
        assert await bridge.wait(40) == 1, bridge.tail()
    finally:
        bridge.kill()
    lines = bridge.log_path.read_text().splitlines()
    assert all(line.startswith("{") for line in lines), lines  # only the bridge's own JSON lines
    errors = [json.loads(line) for line in lines if json.loads(line)["level"] == "error"]
    assert len(errors) == 1, lines
    assert errors[0]["event"] == "cannot start"
    error: str = errors[0]["error"]
    return error


MISSING_ACLS = ("group", "topic", "dead-letter topic", "read, given only describe")


def missing_acl_case(missing: str, secured_kafka: SecuredKafka, secured_topic: TopicMaker, post_api: str) -> Case:
    """The documented ACLs but one, and the one line the bridge must say about it."""
    topic, dlq = secured_topic("acl"), secured_topic("acl-dlq")
    group = f"g-{topic}"
    secured_kafka.grant(
        f"User:{secured_kafka.user}",
        [] if missing in ("topic", "read, given only describe") else [topic],
        "someone-else" if missing == "group" else group,
        None if missing == "dead-letter topic" else dlq,
    )
    if missing == "read, given only describe":
        secured_kafka.grant_describe(f"User:{secured_kafka.user}", topic)
    config = bridge_config(
        secured_kafka.broker.sasl_bootstrap,
        topic,
        post_api,
        group=group,
        kafka={"properties": secured_kafka.sasl_properties(), "dead_letter_topic": dlq},
    )
    expected = {
        "group": f"Kafka denies access to consumer group {group!r}: grant the bridge's principal Read on it",
        "topic": f"Kafka denies access to topic {topic!r}: grant the bridge's principal Read on it",
        "dead-letter topic": f"Kafka denies access to topic {dlq!r}: grant the bridge's principal Write on it",
        "read, given only describe": f"Kafka denies access to topic {topic!r}: grant the bridge's principal Read on it",
    }[missing]
    env = {"BRIDGE_KAFKA__PROPERTIES__SASL.PASSWORD": secured_kafka.password}
    return config, env, lambda error: error == expected


async def test_each_refusal_fails_start_up_with_one_line_naming_it(
    secured_kafka: SecuredKafka, secured_topic: TopicMaker, sandbox: Sandbox, tmp_path: Path
) -> None:
    """A wrong password, an untrusted CA, and each missing ACL: one bridge each, all started at once."""
    cases: dict[str, Case] = {}

    topic = secured_topic("badpw")
    secured_kafka.grant(f"User:{secured_kafka.user}", [topic], f"g-{topic}", None)
    config = bridge_config(
        secured_kafka.broker.sasl_bootstrap,
        topic,
        sandbox.url,
        group=f"g-{topic}",
        kafka={"properties": secured_kafka.sasl_properties()},
    )
    wrong = "not-" + secured_kafka.password
    cases["wrong password"] = (
        config,
        {"BRIDGE_KAFKA__PROPERTIES__SASL.PASSWORD": wrong},
        lambda error: (
            error.startswith("Kafka refused the credentials: SASL authentication error")
            and "invalid credentials" in error
            and wrong not in error
        ),
    )

    topic = secured_topic("badca")
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    config = bridge_config(
        secured_kafka.broker.sasl_bootstrap,
        topic,
        sandbox.url,
        group=f"g-{topic}",
        kafka={"properties": {**secured_kafka.sasl_properties(), "ssl.ca.location": str(other_ca)}},
    )
    cases["untrusted CA"] = (
        config,
        {"BRIDGE_KAFKA__PROPERTIES__SASL.PASSWORD": secured_kafka.password},
        lambda error: error.startswith("TLS with Kafka failed") and "certificate verify failed" in error,
    )

    for missing in MISSING_ACLS:
        cases[f"missing ACL: {missing}"] = missing_acl_case(missing, secured_kafka, secured_topic, sandbox.url)

    async def refused(name: str, config: dict[str, Any], env: dict[str, str], right: Callable[[str], bool]) -> None:
        error = await failed_start(config, tmp_path / name.replace(" ", "-").replace(",", ""), env)
        assert right(error), (name, error)

    async with asyncio.TaskGroup() as group:
        for name, (config, env, right) in cases.items():
            group.create_task(refused(name, config, env, right))


async def test_kafka_down_at_start_up_is_waited_out_not_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    """Only a refusal ends start-up: a cluster that does not answer leaves the bridge up and not ready."""
    (port,) = free_ports(1)
    config = bridge_config(f"127.0.0.1:{port}", "nowhere", sandbox.url, group="g-down")
    # The two bridges are independent: they run side by side, each on its own HTTP port.
    checking = {**config, "server": {**config["server"], "port": free_ports(1)[0]}}
    during_check = BridgeProcess(checking, tmp_path, name="during-check").start()
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        await wait_for(lambda: during_check.catches(signal.SIGTERM), 30, "the bridge to handle SIGTERM")
        during_check.signal(signal.SIGTERM)
        assert await during_check.wait(5) == 0, during_check.tail()  # SIGTERM while it still asks Kafka: gone at once
        await wait_for(lambda: "Kafka unreachable at start-up" in bridge.log_path.read_text(), 40, "the warning")
        await bridge.serving()
        status, body = await bridge.get("/readyz")
        assert status == 503, body
        bridge.signal(signal.SIGTERM)
        assert await bridge.wait(30) == 0, bridge.tail()
    finally:
        during_check.kill()
        bridge.kill()
