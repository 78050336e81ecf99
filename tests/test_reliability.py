"""Nothing lost: each failure of the records, the Post API or the schema registry that a production pipeline sees,
inflicted on the real broker and the sandbox. The bridge's own processes and Kafka failing: test_reliability_crashes.py.

Each test prints a `RELIABILITY` line with what it measured; docs/reliability.md quotes them.
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from bridge.decoding.avro import contract_schema
from bridge.kafka.dead_letter_producer import (
    HEADER_DETAIL,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_TOPIC,
)
from bridge.sandbox.registry import SchemaRegistry
from bridge.sandbox.server import Sandbox
from devtools.testkit.bridge_child import BridgeProcess, bridge_config
from devtools.testkit.kafka import TopicFactory, committed, end_offsets, headers_of, produce, read_to_end
from devtools.testkit.records import KEY, SUBJECT, event, raw_avro, seqs, wire
from devtools.testkit.waiting import delivered_and_committed, wait_for


def gauge(metrics_text: str, name: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not exported")


def refusals(sandbox: Sandbox) -> int:
    return sum(1 for r in sandbox.state.requests if r.status == 403)


def stopped_lines(bridge: BridgeProcess) -> list[dict[str, Any]]:
    return [line for line in bridge.logs() if "partition stopped" in str(line.get("event"))]


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "in-workers"])
async def test_poison_records_go_to_the_dead_letter_topic_with_their_reason(
    kafka_bootstrap: str,
    new_topic: TopicFactory,
    sandbox: Sandbox,
    registry: SchemaRegistry,
    tmp_path: Path,
    workers: int,
) -> None:
    topic, dlq = new_topic(4), new_topic(1)
    schema_id = registry.register(SUBJECT, json.dumps(contract_schema()))
    old_ms = int((time.time() - 20 * 86400) * 1000)
    poison: dict[str, bytes | None] = {
        "decode:not-avro": b"this is not avro at all",
        "decode:magic-1": b"\x01" + struct.pack(">I", schema_id) + raw_avro(event(1)),
        "decode:truncated": wire(schema_id, event(2))[:12],
        "schema:unknown-id": wire(schema_id + 1000, event(3)),
        "invalid:both-identities": wire(schema_id, event(4, appmetrica_device_id="12345")),
        "expired:20-days": wire(schema_id, event(5, event_timestamp=old_ms)),
        "decode:tombstone": None,
    }
    valid = 2000
    values: list[bytes | None] = [wire(schema_id, event(seq)) for seq in range(valid)]
    positions = random.Random(5).sample(range(valid), len(poison))
    for position, value in zip(sorted(positions, reverse=True), poison.values(), strict=True):
        values.insert(position, value)
    produce(kafka_bootstrap, topic, values, headers=[("trace-id", b"t-1")])
    group = f"g-{topic}"
    config = bridge_config(
        kafka_bootstrap,
        topic,
        sandbox.url,
        group=group,
        registry_url=registry.url,
        kafka={"dead_letter_topic": dlq},
        batch={"max_rows": 300, "linger_ms": 100},
        transform={"workers": workers},
    )
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        await delivered_and_committed(kafka_bootstrap, sandbox, topic, group, valid)
        status, _ = await bridge.get("/healthz")
        assert status == 200 and bridge.process.poll() is None, "the bridge still runs"
        # Committed to the end: every dead letter was acked, so the topic's end offsets hold them all.
        dead = read_to_end(kafka_bootstrap, dlq)
    finally:
        bridge.kill()

    assert sorted(set(seqs(sandbox.state.events))) == list(range(valid))
    assert len(sandbox.state.events) == valid, "no duplicates"
    reasons = Counter(headers_of(r)[HEADER_REASON].decode() for r in dead)
    assert reasons == Counter(name.split(":")[0] for name in poison)
    by_value = {r.value(): r for r in dead}
    for name, value in poison.items():
        record = by_value[value]
        headers = headers_of(record)
        assert headers[HEADER_REASON].decode() == name.split(":")[0], name
        assert headers[HEADER_TOPIC].decode() == topic
        offset, partition = int(headers[HEADER_OFFSET]), int(headers[HEADER_PARTITION])
        assert values.index(value) % 4 == partition and values.index(value) // 4 == offset, name
        assert headers["trace-id"] == b"t-1", "original headers are kept"
        assert record.key() == str(values.index(value)).encode(), "original key is kept"
        assert headers[HEADER_DETAIL], "a readable detail"
    print(
        f"\nRELIABILITY poison ({workers} workers): {len(poison)} poison records dead-lettered by reason "
        f"{dict(reasons)}, {valid} valid delivered, 0 lost, 0 duplicates"
    )


async def test_a_row_the_api_refuses_is_isolated_and_the_rest_delivered(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic, dlq = new_topic(4), new_topic(1)
    total, refused_seq = 1200, 777
    values = [raw_avro(event(seq)) for seq in range(total)]
    values[refused_seq] = raw_avro(event(refused_seq, event_name="refuse-me"))
    produce(kafka_bootstrap, topic, values)
    sandbox.set_faults(refuse_event_names=frozenset({"refuse-me"}))
    group = f"g-{topic}"
    config = bridge_config(
        kafka_bootstrap,
        topic,
        sandbox.url,
        group=group,
        kafka={"dead_letter_topic": dlq},
        batch={"max_rows": 400, "linger_ms": 300},
    )
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        await delivered_and_committed(kafka_bootstrap, sandbox, topic, group, total - 1)
        dead = read_to_end(kafka_bootstrap, dlq)
    finally:
        bridge.kill()
    assert sorted(seqs(sandbox.state.events)) == [s for s in range(total) if s != refused_seq]
    assert len(dead) == 1 and dead[0].value() == values[refused_seq]
    headers = headers_of(dead[0])
    assert headers[HEADER_REASON] == b"rejected"
    assert b"400" in headers[HEADER_DETAIL]
    refusals = sum(1 for r in sandbox.state.requests if r.status == 400)
    print(f"\nRELIABILITY 400: 1 refused row isolated with {refusals} refused requests, {total - 1} delivered, 0 lost")


async def test_a_refused_key_stops_uploads_until_it_works_then_everything_arrives(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic = new_topic(4)
    total = 1500
    produce(kafka_bootstrap, topic, [raw_avro(event(seq)) for seq in range(total)])
    sandbox.set_keys(post_api_key="the-right-key-is-elsewhere")
    group = f"g-{topic}"
    config = bridge_config(kafka_bootstrap, topic, sandbox.url, group=group, upload={"forbidden_retry_s": 1})
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        # A probe after the first refusal: the key is refused for as long as it lasts, not once.
        await wait_for(lambda: refusals(sandbox) >= 2, 30, "a 403 and the probe after it", interval_s=0.05)
        status, body = await bridge.get("/readyz")
        assert status == 503 and "refuses the key" in body
        _, metrics = await bridge.get("/metrics")
        assert gauge(metrics, "appmetrica_bridge_application_key_refused") == 1
        assert not sandbox.state.events
        assert all(offset < 0 for offset in committed(kafka_bootstrap, group, topic).values()), "nothing committed"
        refused_at = time.monotonic()
        sandbox.set_keys(post_api_key=KEY)
        await delivered_and_committed(kafka_bootstrap, sandbox, topic, group, total)
        recovered = time.monotonic() - refused_at
        status, _ = await bridge.get("/readyz")
        assert status == 200
    finally:
        bridge.kill()
    assert sorted(seqs(sandbox.state.events)) == list(range(total))
    assert KEY not in bridge.log_path.read_text()
    print(f"\nRELIABILITY 403: not ready while refused, 0 committed, all {total} delivered {recovered:.1f} s after fix")


async def test_an_outage_longer_than_max_poll_interval_keeps_memory_bounded(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic = new_topic(4)
    total, limit = 8000, 1000
    produce(kafka_bootstrap, topic, [raw_avro(event(seq)) for seq in range(total)])
    group = f"g-{topic}"
    # The least librdkafka takes beside the broker's least session timeout (it must be at least the session's).
    poll_interval_ms = 6000
    config = bridge_config(
        kafka_bootstrap,
        topic,
        sandbox.url,
        group=group,
        kafka={
            "properties": {
                "max.poll.interval.ms": poll_interval_ms,
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1000,
            }
        },
        buffer={"max_records": limit},
        batch={"max_rows": 200, "linger_ms": 100},
    )
    port = int(sandbox.url.rsplit(":", 1)[1])
    await sandbox.stop()
    bridge = BridgeProcess(config, tmp_path).start()
    held: list[float] = []

    async def paused() -> float:
        _, metrics = await bridge.get("/metrics")
        held.append(gauge(metrics, "appmetrica_bridge_held_records"))
        return gauge(metrics, "appmetrica_bridge_paused_partitions")

    try:
        await bridge.serving()
        deadline = time.monotonic() + 60
        while await paused() < 4:
            assert time.monotonic() < deadline, "the bridge never filled up to its limit"
            await asyncio.sleep(0.2)
        # Counted from the moment the loop has nothing to fetch: a consumer that stopped polling then would be out
        # of its group after max.poll.interval.ms, and say so once it polls again.
        outage_s = poll_interval_ms / 1000 * 1.5
        deadline = time.monotonic() + outage_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            assert await paused() == 4, "paused through the outage"
        await sandbox.start(port=port)
        returned = time.monotonic()
        await delivered_and_committed(kafka_bootstrap, sandbox, topic, group, total)
        recovered = time.monotonic() - returned
    finally:
        bridge.kill()
    assert max(held) <= limit, f"held {max(held)} records with a limit of {limit}"
    assert max(held) > 0, "the bridge filled up to its limit and paused"
    rebalances = [line for line in bridge.logs() if line.get("event") in ("partitions revoked", "partitions lost")]
    assert not rebalances, "the consumer stayed in its group through the outage"
    assert sorted(set(seqs(sandbox.state.events))) == list(range(total))
    duplicates = len(sandbox.state.events) - total
    print(
        f"\nRELIABILITY outage: {outage_s:.0f} s paused (max.poll.interval {poll_interval_ms} ms), peak held "
        f"{max(held):.0f}/{limit}, 0 rebalances, all {total} delivered {recovered:.1f} s after, {duplicates} dup"
    )


async def test_registry_down_is_transient_not_poison(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, registry: SchemaRegistry, tmp_path: Path
) -> None:
    topic, dlq = new_topic(4), new_topic(1)
    schema_id = registry.register(SUBJECT, json.dumps(contract_schema()))
    port = int(registry.url.rsplit(":", 1)[1])
    await registry.stop()
    total = 1000
    produce(kafka_bootstrap, topic, [wire(schema_id, event(seq)) for seq in range(total)])
    group = f"g-{topic}"
    config = bridge_config(
        kafka_bootstrap,
        topic,
        sandbox.url,
        group=group,
        registry_url=f"http://127.0.0.1:{port}",
        kafka={"dead_letter_topic": dlq},
    )
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        await wait_for(
            lambda: any(line.get("event") == "schema registry unavailable; records wait" for line in bridge.logs()),
            60,
            "the bridge to notice the registry is down",
        )
        await registry.start(port=port)
        await delivered_and_committed(kafka_bootstrap, sandbox, topic, group, total)
        dead = read_to_end(kafka_bootstrap, dlq)
    finally:
        bridge.kill()
    assert not dead, "nothing dead-lettered while the registry was down"
    assert sorted(seqs(sandbox.state.events)) == list(range(total))


async def test_without_a_dead_letter_topic_poison_stops_its_partition(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic = new_topic(4)
    values: list[bytes | None] = [raw_avro(event(seq)) for seq in range(400)]
    values[41] = b"poison"  # partition 1, offset 10
    produce(kafka_bootstrap, topic, values)
    group = f"g-{topic}"
    bridge = BridgeProcess(bridge_config(kafka_bootstrap, topic, sandbox.url, group=group), tmp_path).start()
    try:
        others = [s for s in range(400) if s % 4 != 1]
        await wait_for(lambda: set(others) <= set(seqs(sandbox.state.events)), 60, "other partitions delivered")
        ends = end_offsets(kafka_bootstrap, topic)
        await wait_for(
            lambda: (
                {p: o for p, o in committed(kafka_bootstrap, group, topic).items() if p != 1}
                == {p: o for p, o in ends.items() if p != 1}
            ),
            30,
            "other partitions committed",
        )
        await wait_for(lambda: bool(stopped_lines(bridge)), 30, "partition 1 to stop")
        assert committed(kafka_bootstrap, group, topic)[1] in (10, -1001), "partition 1 stops before the poison"
        assert bridge.process.poll() is None
    finally:
        bridge.kill()
    stopped = stopped_lines(bridge)
    assert stopped and stopped[0]["level"] == "error" and stopped[0]["offset"] == 10


async def test_a_missing_dead_letter_topic_is_reported_at_start(
    kafka_bootstrap: str, new_topic: TopicFactory, kafka_admin: AdminClient, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic = new_topic(1)
    config = bridge_config(
        kafka_bootstrap, topic, sandbox.url, group=f"g-{topic}", kafka={"dead_letter_topic": "no-such-dlq-topic"}
    )
    bridge = BridgeProcess(config, tmp_path).start()
    assert await bridge.wait(60) == 1
    assert "dead-letter topic 'no-such-dlq-topic' does not exist" in bridge.log_path.read_text()
