"""Start-up and shutdown whatever Kafka does: alive and waiting while it is away, refused only by a refusal, and
signals to the whole process group drained like a signal to the bridge alone."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bridge.kafka.access import GRACE_S, WAITING_FOR_COORDINATOR, WAITING_FOR_KAFKA
from bridge.kafka.logs import EVERY_S
from bridge.sandbox.server import Sandbox
from bridge.service import CLOSE_BUDGET_S
from devtools.kafka_local import LocalKafka, free_ports
from devtools.testkit.bridge_child import BridgeProcess, bridge_config, free_port
from devtools.testkit.kafka import TopicFactory, committed, end_offsets, produce, read_to_end, wait_for_leaders
from devtools.testkit.records import event, raw_avro, seqs
from devtools.testkit.waiting import wait_for


class KafkaDoor:
    """A loopback port that refuses connections until opened, then forwards them to the real broker.

    The broker advertises its own address, so once a client has its metadata it talks to the broker directly:
    opening the door is Kafka coming back for a client that bootstraps here.
    """

    def __init__(self, target: str) -> None:
        self.port = free_port()
        self._host, port = target.rsplit(":", 1)
        self._target_port = int(port)
        self._server: asyncio.Server | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _forward(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        broker_reader, broker_writer = await asyncio.open_connection(self._host, self._target_port)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        await asyncio.gather(pipe(client_reader, broker_writer), pipe(broker_reader, client_writer))


@pytest.fixture
async def kafka_door(kafka_bootstrap: str) -> AsyncIterator[KafkaDoor]:
    door = KafkaDoor(kafka_bootstrap)
    yield door
    await door.close()


async def readiness(bridge: BridgeProcess) -> tuple[int, list[str]]:
    status, body = await bridge.get("/readyz")
    reasons: list[str] = json.loads(body)["reasons"]
    return status, reasons


async def test_kafka_down_at_start_up_with_a_dead_letter_topic_is_waited_out_then_consumed(
    kafka_bootstrap: str, kafka_door: KafkaDoor, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The production setting: alive at once, not ready saying what it waits for, one line, then every event."""
    topic, dlq = new_topic(2), new_topic(1)
    total = 300
    values: list[bytes | None] = [raw_avro(event(seq)) for seq in range(total)]
    values[7] = b"poison"
    produce(kafka_bootstrap, topic, values, partitions=2)
    config = bridge_config(
        kafka_door.bootstrap, topic, sandbox.url, group=f"g-{topic}", kafka={"dead_letter_topic": dlq}
    )
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        await bridge.serving(timeout_s=15)
        assert (await bridge.get("/healthz"))[0] == 200, "alive while Kafka is away"
        expected = f"waiting for Kafka at {kafka_door.bootstrap}"

        async def waiting() -> bool:
            return await readiness(bridge) == (503, [expected])

        await wait_until(waiting, 20, "readiness to say what start-up waits for")
        assert (await bridge.get("/healthz"))[0] == 200
        await kafka_door.open()
        await wait_for(lambda: len(set(seqs(sandbox.state.events))) == total - 1, 60, "every event delivered")
        await wait_until(lambda: _ready(bridge), 30, "ready once Kafka is back")
        bridge.signal(signal.SIGTERM)
        assert await bridge.wait(30) == 0, bridge.tail()
    finally:
        bridge.kill()
    assert len(read_to_end(kafka_bootstrap, dlq)) == 1, "the poison record dead-lettered, once"
    events = [line["event"] for line in bridge.logs()]
    assert events.count(WAITING_FOR_KAFKA) == 1, events
    assert "condition over" in events, "the end of the wait is said too"


async def _ready(bridge: BridgeProcess) -> bool:
    return (await readiness(bridge))[0] == 200


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.2)


async def test_kafka_unreachable_for_twenty_seconds_is_a_handful_of_json_lines_and_sigterm_ends_it_at_once(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """With a dead-letter topic and without one (its producer is one more client that cannot connect), side by side:
    the twenty seconds are the scenario, so both bridges live through the same ones."""
    bridges: dict[bool, tuple[str, BridgeProcess]] = {}
    for dead_letter_topic in (True, False):
        closed = f"127.0.0.1:{free_port()}"
        kafka = {"dead_letter_topic": "appmetrica.dlq"} if dead_letter_topic else {}
        config = bridge_config(closed, "appmetrica.events", sandbox.url, group="g-down", kafka=kafka)
        name = "with-dlq" if dead_letter_topic else "without-dlq"
        bridges[dead_letter_topic] = closed, BridgeProcess(config, tmp_path, name=name).start()
    try:
        await asyncio.gather(*(bridge.serving(timeout_s=15) for _, bridge in bridges.values()))
        started = time.monotonic()
        for _, bridge in bridges.values():
            await wait_for(says(bridge, WAITING_FOR_KAFKA), 20, "the line that says it waits")
        # The outage's length is the scenario: what it writes in that time is counted after it.
        await asyncio.sleep(max(0.0, 20 - (time.monotonic() - started)))
        for closed, bridge in bridges.values():
            assert await readiness(bridge) == (503, [f"waiting for Kafka at {closed}"])
        took = await asyncio.gather(*(_sigterm(bridge) for _, bridge in bridges.values()))
    finally:
        for _, bridge in bridges.values():
            bridge.kill()
    assert max(took) < 5, f"SIGTERM while waiting for Kafka ends the bridge at once, not after {took}"
    for dead_letter_topic, (closed, bridge) in bridges.items():
        lines = bridge.log_path.read_text().splitlines()
        parsed = [json.loads(line) for line in lines]  # every line JSON, librdkafka's included
        assert len(parsed) <= 6, (dead_letter_topic, lines)
        events = [line["event"] for line in parsed]
        assert events.count(WAITING_FOR_KAFKA) == 1, (dead_letter_topic, events)
        waiting = parsed[events.index(WAITING_FOR_KAFKA)]
        assert waiting["bootstrap"] == closed and "waiting for Kafka" in waiting["awaiting"]
        assert events[-1] == "stopped during start-up", (dead_letter_topic, events)


def says(bridge: BridgeProcess, text: str) -> Callable[[], bool]:
    return lambda: text in bridge.log_path.read_text()


async def _sigterm(bridge: BridgeProcess) -> float:
    """SIGTERM, then the seconds until it exited 0."""
    bridge.signal(signal.SIGTERM)
    stopped = time.monotonic()
    assert await bridge.wait(10) == 0, bridge.tail()
    return time.monotonic() - stopped


async def test_a_missing_source_topic_ends_start_up_naming_it(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic = new_topic(1)
    missing = f"{topic}-absent"
    config = bridge_config(kafka_bootstrap, topic, sandbox.url, group=f"g-{topic}")
    config["kafka"]["topics"] = [topic, missing]
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        assert await bridge.wait(30) == 1, bridge.tail()
    finally:
        bridge.kill()
    errors = [line for line in bridge.logs() if line.get("level") == "error"]
    assert [line["event"] for line in errors] == ["cannot start"], errors
    assert f"source topic {missing!r} does not exist" in errors[0]["error"]
    assert f"{topic!r}" not in errors[0]["error"].replace(f"{missing!r}", "")


async def test_a_member_without_partitions_names_its_topics_when_not_ready(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic = new_topic(1)
    group = f"g-{topic}"
    first = BridgeProcess(bridge_config(kafka_bootstrap, topic, sandbox.url, group=group), tmp_path, "first").start()
    second = BridgeProcess(bridge_config(kafka_bootstrap, topic, sandbox.url, group=group), tmp_path, "second")
    try:
        await first.serving()
        await wait_until(lambda: _ready(first), 60, "the first member to own the partition")
        second.start()
        await second.serving()

        async def idle() -> bool:
            status, reasons = await readiness(second)
            return status == 503 and any(reason.startswith("no partitions assigned") for reason in reasons)

        await wait_until(idle, 60, "the second member to say it has no partitions")
        reasons = (await readiness(second))[1]
        assert any(topic in reason for reason in reasons if reason.startswith("no partitions assigned")), reasons
    finally:
        first.kill()
        second.kill()


BUSY_TOTAL = 60_000


@pytest.fixture(scope="module")
def busy_topic(kafka_bootstrap: str, kafka_admin: AdminClient) -> Iterator[str]:
    """BUSY_TOTAL events on 4 partitions, written once for the runs below: each reads them in a group of its own."""
    topic = f"test-sigterm-busy-{uuid.uuid4().hex[:8]}"
    kafka_admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(timeout=30)
    wait_for_leaders(kafka_admin, topic, 4)
    produce(kafka_bootstrap, topic, [raw_avro(event(seq)) for seq in range(BUSY_TOTAL)])
    yield topic
    kafka_admin.delete_topics([topic])[topic].result(timeout=30)


@pytest.mark.parametrize("run", range(3))
async def test_sigterm_to_the_whole_process_group_while_busy_drains_and_exits_zero(
    run: int, kafka_bootstrap: str, busy_topic: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The transform workers get the signal too; the bridge still drains, commits what was accepted, exits 0.

    Three runs: where the signal finds the workers differs from run to run."""
    topic, total = busy_topic, BUSY_TOTAL
    group = f"g-{topic}-{run}"
    # Transform-bound (a fast Post API, big batches): the workers are mid-chunk when the signal comes.
    config = bridge_config(
        kafka_bootstrap,
        topic,
        sandbox.url,
        group=group,
        batch={"max_rows": 1000, "linger_ms": 50},
        upload={"max_in_flight": 4, "requests_per_second": 200},
        transform={"workers": 2},
        shutdown={"drain_timeout_s": 8},
    )
    bridge = BridgeProcess(config, tmp_path).start(own_process_group=True)
    try:
        await wait_for(lambda: len(sandbox.state.events) >= 5000, 60, "the bridge to be busy", interval_s=0.05)
        os.killpg(bridge.process.pid, signal.SIGTERM)
        assert await bridge.wait(25) == 0, bridge.tail()
    finally:
        bridge.kill()
    stopped = next(line for line in bridge.logs() if line.get("event") == "bridge stopped")
    # A worker killed mid-chunk would leave its chunk behind (uncommitted, so read again later, but not drained).
    assert stopped["uploaded"] == stopped["consumed"], "the drain delivered everything the bridge had fetched"
    accepted = set(seqs(sandbox.state.events))
    assert len(accepted) < total, "the signal came mid-way"
    positions = committed(kafka_bootstrap, group, topic)
    ends = end_offsets(kafka_bootstrap, topic)
    for partition, position in positions.items():
        # Round-robin: seq = offset * 4 + partition. Below the committed offset, every record was accepted.
        below = {seq for seq in range(partition, total, 4) if seq // 4 < max(position, 0)}
        assert below <= accepted, f"partition {partition}: a committed record was never accepted"
        assert position <= ends[partition]


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker of this module's own for the tests that take Kafka away (the session's serves the others), started
    once: each of them starts it again only if it is down."""
    port, controller_port = free_ports(2)
    broker = LocalKafka(port=port, controller_port=controller_port, data_dir=tmp_path_factory.mktemp("kafka"))
    try:
        yield broker
    finally:
        broker.stop()


async def _running(broker: LocalKafka) -> LocalKafka:
    if broker.pid() is None:
        await asyncio.to_thread(broker.start)
    return broker


def _new_topic(broker: LocalKafka, topic: str, partitions: int = 2) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(timeout=30)
    wait_for_leaders(admin, topic, partitions)


async def test_a_broker_still_loading_its_groups_is_waited_for_without_crashing_or_going_silent(
    own_broker: LocalKafka, sandbox: Sandbox, tmp_path: Path
) -> None:
    """A broker restarted with many groups' offsets answers COORDINATOR_LOAD_IN_PROGRESS (and NOT_COORDINATOR) a
    while; the bridge started right after it must neither crash in librdkafka nor wait without a word."""
    broker = await _running(own_broker)
    topic = "appmetrica.events.loading"
    _new_topic(broker, topic)
    total = 200
    produce(broker.bootstrap, topic, [raw_avro(event(seq)) for seq in range(total)], partitions=2)
    group = "g-loading"
    await asyncio.to_thread(_commit_for_groups, broker.bootstrap, topic, [group, *(f"g{i}" for i in range(300))])
    await asyncio.to_thread(broker.stop)
    # Started before the broker, the bridge asks it the moment it listens: while it still loads the groups.
    bridge = BridgeProcess(bridge_config(broker.bootstrap, topic, sandbox.url, group=group), tmp_path).start()
    try:
        await bridge.serving()
        # Only once it waits: a broker that starts within the grace would leave the bridge nothing to say.
        await wait_for(says(bridge, WAITING_FOR_KAFKA), 30, "the line that says it waits")
        await asyncio.to_thread(broker.start)
        await wait_for(lambda: len(set(seqs(sandbox.state.events))) == total, 120, "every event delivered")
        assert bridge.process.poll() is None, f"the bridge ended with {bridge.process.returncode}"
        bridge.signal(signal.SIGTERM)
        assert await bridge.wait(30) == 0, bridge.tail()
    finally:
        bridge.kill()
    lines = [json.loads(line) for line in bridge.log_path.read_text().splitlines()]  # librdkafka's too: JSON
    said = [line["event"] for line in lines]
    waited = {WAITING_FOR_KAFKA, WAITING_FOR_COORDINATOR} & set(said)
    # It said it waits for Kafka before the broker started; whether it also says the coordinator is not answering
    # depends on how far the broker got when it first answered.
    assert waited, said
    print(f"\nSTARTUP loading broker: the bridge said {sorted(waited)}, delivered all {total}, exit 0")
    # Whatever it waited for, a line said so: no stretch of its start-up longer than the grace went unexplained.
    stamps = [line["timestamp"] for line in lines if line.get("event") != "progress"]
    gaps = [
        (later - earlier).total_seconds()
        for earlier, later in itertools.pairwise(datetime.fromisoformat(stamp) for stamp in stamps)
    ]
    assert max(gaps) < EVERY_S + GRACE_S, (said, gaps)


def _commit_for_groups(bootstrap: str, topic: str, groups: list[str]) -> None:
    """Offsets for every group, as a busy cluster has them: all of them are loaded again when the broker restarts.

    One admin request per group, all in flight at once: a consumer per group would commit one group after another.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = [TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)]
    asked = [
        future
        for group in groups
        for future in admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, partitions)], request_timeout=30
        ).values()
    ]
    for future in asked:
        future.result(timeout=60)


async def test_sigterm_while_kafka_is_down_mid_run_ends_within_the_drain_and_the_close_budget(
    own_broker: LocalKafka, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The final commit and the consumer's close cannot reach Kafka; the bridge still ends in time, with 0."""
    broker = await _running(own_broker)
    try:
        topic = "appmetrica.events.mid-run"
        _new_topic(broker, topic)
        produce(broker.bootstrap, topic, [raw_avro(event(seq)) for seq in range(2000)], partitions=2)
        sandbox.set_faults(latency_ms=300)
        drain_s = 2
        config = bridge_config(
            broker.bootstrap,
            topic,
            sandbox.url,
            group="g-down-mid-run",
            batch={"max_rows": 100, "linger_ms": 50},
            upload={"max_in_flight": 1},
            shutdown={"drain_timeout_s": drain_s},
        )
        bridge = BridgeProcess(config, tmp_path).start()
        try:
            await wait_for(lambda: len(sandbox.state.events) >= 200, 60, "the bridge to be busy")
            await asyncio.to_thread(broker.stop)
            bridge.signal(signal.SIGTERM)
            stopped = time.monotonic()
            assert await bridge.wait(drain_s + CLOSE_BUDGET_S + 5) == 0, bridge.tail()
            took = time.monotonic() - stopped
        finally:
            bridge.kill()
    finally:
        await asyncio.to_thread(broker.stop)
    assert took <= drain_s + CLOSE_BUDGET_S + 1, f"took {took:.1f} s"
    lines = [json.loads(line) for line in bridge.log_path.read_text().splitlines()]
    assert len(lines) < 200, "a few lines, not one per retry"
    print(f"\nSTARTUP sigterm with Kafka down mid-run: exit 0 after {took:.1f} s, {len(lines)} log lines")
