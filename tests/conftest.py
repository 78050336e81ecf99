"""Session-wide real Kafka for the tests.

`BRIDGE_TEST_BOOTSTRAP` names a broker to use. Otherwise a broker on the default port (a developer's
`python -m devtools.kafka_local start`) is reused, and failing that the session starts its own on free ports
and stops it at the end. Own brokers never take the default port, so sessions running side by side (other
checkouts, parallel CI jobs) never share a broker that one of them stops.
"""

from __future__ import annotations

import os
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Protocol

import pytest
from confluent_kafka import KafkaError, KafkaException

# NewTopic is documented in confluent_kafka.admin, which re-exports it without listing it as public.
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bridge.sandbox.config import Keys
from bridge.sandbox.registry import SchemaRegistry
from bridge.sandbox.server import Sandbox, SandboxOptions
from devtools.kafka_local import DEFAULT_PORT, HOST, LocalKafka, Secured, free_ports, port_open
from tests.harness import APP, KEY, SecuredKafka

_STARTED = pytest.StashKey[tuple[str, float]]()
_SECURED_STARTED = pytest.StashKey[tuple[str, float]]()


class TopicFactory(Protocol):
    def __call__(self, partitions: int = 4) -> str: ...


@pytest.fixture(scope="session")
def kafka_broker(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka | None]:
    """The broker this session started, or None when it uses one it does not own."""
    if os.environ.get("BRIDGE_TEST_BOOTSTRAP") or port_open(DEFAULT_PORT):
        yield None
        return
    port, controller_port = free_ports(2)
    broker = LocalKafka(port=port, controller_port=controller_port, data_dir=tmp_path_factory.mktemp("kafka"))
    pytestconfig.stash[_STARTED] = (broker.bootstrap, broker.start())
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def secured_kafka(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    """A broker of the session's own with SASL_SSL and mutual-TLS listeners and the authorizer on.

    Started only by the tests that ask for it, once a session: a shared plain broker cannot have them.
    """
    port, controller_port, sasl_port, ssl_port = free_ports(4)
    password = secrets.token_urlsafe(18)
    broker = LocalKafka(
        port=port,
        controller_port=controller_port,
        data_dir=tmp_path_factory.mktemp("secured-kafka"),
        secured=Secured(sasl_port=sasl_port, ssl_port=ssl_port, scram_users={"bridge": password}),
    )
    pytestconfig.stash[_SECURED_STARTED] = (broker.sasl_bootstrap, broker.start())
    try:
        yield SecuredKafka(broker, "bridge", password)
    finally:
        broker.stop()


@pytest.fixture
def owned_kafka_broker(kafka_broker: LocalKafka | None) -> LocalKafka:
    """The session's own broker, for tests that stop or restart it; skips when the broker is shared."""
    if kafka_broker is None:
        pytest.skip("the session uses a broker it did not start, so it must not stop or restart it")
    return kafka_broker


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: LocalKafka | None) -> str:
    if kafka_broker is not None:
        bootstrap = kafka_broker.bootstrap
    else:
        bootstrap = os.environ.get("BRIDGE_TEST_BOOTSTRAP") or f"{HOST}:{DEFAULT_PORT}"
    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    except KafkaException as error:
        pytest.fail(f"no Kafka answers at {bootstrap}: {error}")
    return bootstrap


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def new_topic(request: pytest.FixtureRequest, kafka_admin: AdminClient) -> Iterator[TopicFactory]:
    """Create uniquely named topics (named after the test) and delete them when the test ends."""
    created: list[str] = []

    def create(partitions: int = 4) -> str:
        test_name = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name)[:180]
        topic = f"test-{test_name}-{uuid.uuid4().hex[:8]}"
        futures = kafka_admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        futures[topic].result(timeout=30)
        created.append(topic)
        _wait_for_leaders(kafka_admin, topic, partitions)
        return topic

    yield create
    if created:
        for future in kafka_admin.delete_topics(created).values():
            try:
                future.result(timeout=30)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:  # the test deleted it itself
                    raise


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """The local Post API, accepting the tests' key for their application; seeded, so fault draws replay."""
    server = Sandbox(SandboxOptions(keys=Keys(post_api_key=KEY, application_id=APP), seed=7))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def registry() -> AsyncIterator[SchemaRegistry]:
    """A local Confluent-compatible schema registry."""
    server = SchemaRegistry()
    await server.start()
    yield server
    await server.stop()


def _wait_for_leaders(admin: AdminClient, topic: str, partitions: int) -> None:
    # create_topics() answers once the controller accepted the topic; a client that starts right after
    # could still see no leader and, with auto-creation off, report the topic as unknown.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metadata = admin.list_topics(topic, timeout=10).topics[topic]
        leaders = [partition.leader for partition in metadata.partitions.values()]
        if metadata.error is None and len(leaders) == partitions and min(leaders) >= 0:
            return
        time.sleep(0.05)
    raise TimeoutError(f"topic {topic} has no leader for every partition after 30s")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if _STARTED in config.stash:
        bootstrap, seconds = config.stash[_STARTED]
        terminalreporter.write_line(f"the session's Kafka at {bootstrap} started in {seconds:.1f}s")
    if _SECURED_STARTED in config.stash:
        bootstrap, seconds = config.stash[_SECURED_STARTED]
        terminalreporter.write_line(f"the session's secured Kafka (SASL_SSL at {bootstrap}) started in {seconds:.1f}s")
