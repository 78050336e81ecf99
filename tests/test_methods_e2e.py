"""Every method end to end: separate topics routed by configuration, a producer with its own copy of each contract,
the real broker and registry, the sandbox judging each method's rules.

Every row arrives exactly once with every field exact (amounts to the eighth decimal), each method's poison is
dead-lettered with the broken rule named, committed offsets reach the end, and SIGTERM exits 0.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro

from bridge.kafka.dead_letter_producer import HEADER_DETAIL, HEADER_REASON, HEADER_TOPIC
from bridge.postapi.methods import MethodName
from bridge.sandbox.registry import SchemaRegistry
from bridge.sandbox.server import Sandbox
from devtools.testkit.bridge_child import BridgeProcess, bridge_config
from devtools.testkit.kafka import TopicFactory, committed, consume_all, end_offsets, produce
from devtools.testkit.methods import STRING, made, producer_schema, same_row
from devtools.testkit.records import APP, wire
from devtools.testkit.waiting import sample, wait_for

# The producer's own copy of the contracts: field names and types as the issue states them, its own field order,
# only the fields it fills, and a field of its own the bridge does not know.
"""The contracts' record names, but for e-commerce, whose producer names its record its own way (`shop.Order`):
the topic, not the name, says which method a record is."""


LABELS: dict[str, Callable[[dict[str, str]], str]] = {
    "events": lambda row: row["event_name"],
    "revenue": lambda row: row["transaction_id"],
    "adrevenue": lambda row: row["profile_id"],
    "ecommerce": lambda row: row["order_id"],
    "profiles": lambda row: row["profile_id"],
}
POISON: dict[str, tuple[dict[str, Any], str, str]] = {
    "events": ({"event_timestamp": 1_000_000_000_000}, "expired", "event_timestamp 1000000000 is"),
    "revenue": ({"revenue_event_type": "gift"}, "invalid", "revenue_event_type 'gift' is not one of"),
    "adrevenue": ({"currency": "VES"}, "invalid", "currency 'VES' is not an ISO 4217 currency code"),
    "ecommerce": ({"cart_item_quantity": -2}, "invalid", "cart_item_quantity '-2' is not a non-negative integer"),
    "profiles": ({"attributes": '{"deep": {"x": 1}}'}, "invalid", "attributes 'deep' is dict"),
}
"""Per method: what breaks one rule, the dead-letter reason, and the words its detail starts with."""


def at_end(bootstrap: str, group: str, topic: str, ends: dict[int, int]) -> Callable[[], bool]:
    return lambda: committed(bootstrap, group, topic) == ends


async def test_every_method_routed_by_topic_arrives_exactly_once_and_its_poison_is_dead_lettered(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, registry: SchemaRegistry, tmp_path: Path
) -> None:
    now_ms = int(time.time() * 1000)
    count: dict[MethodName, int] = {"events": 400, "revenue": 300, "adrevenue": 200, "ecommerce": 200, "profiles": 300}
    topics = {method: new_topic(4) for method in count}
    dlq = new_topic(1)
    expected: dict[MethodName, list[dict[str, str]]] = {}
    for method, topic in topics.items():
        schema = producer_schema(method)
        schema_id = registry.register(f"{topic}-value", json.dumps(schema))
        parsed = fastavro.parse_schema(schema)
        good = [made(method, seq, now_ms) for seq in range(count[method])]
        changes, _, _ = POISON[method]
        values = [wire(schema_id, m.record, parsed) for m in good]
        values.insert(count[method] // 2, wire(schema_id, made(method, 10**6, now_ms).record | changes, parsed))
        produce(kafka_bootstrap, topic, values)
        expected[method] = [m.row for m in good]
    group = f"g-{topics['events']}"
    config = bridge_config(
        kafka_bootstrap,
        topics["events"],
        sandbox.url,
        group=group,
        registry_url=registry.url,
        kafka={"dead_letter_topic": dlq},
        batch={"max_rows": 10_000, "linger_ms": 200},
    )
    config["routes"] = [{"topics": [topics[m]], "method": m} for m in count if m != "events"]
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        await wait_for(lambda: all(len(sandbox.state.kept[m]) >= count[m] for m in count), 120, "rows accepted")
        for topic in topics.values():
            ends = end_offsets(kafka_bootstrap, topic)
            await wait_for(at_end(kafka_bootstrap, group, topic, ends), 30, f"{topic} committed")
        dead = consume_all(kafka_bootstrap, dlq, len(count))
        bridge.signal(signal.SIGTERM)
        assert await bridge.wait(30) == 0
    finally:
        bridge.kill()

    for method, rows in expected.items():
        got = sandbox.state.kept[method]
        assert len(got) == len(rows), f"{method}: {len(got)} rows accepted, {len(rows)} produced"
        by_label = {LABELS[method](row): row for row in got}
        assert len(by_label) == len(rows), f"{method}: a row arrived twice"
        for row in rows:
            received = by_label[LABELS[method](row)]
            assert same_row(received, row), f"{method}: {received} arrived for {row}"
    method_of = {topic: method for method, topic in topics.items()}
    assert len(dead) == len(count)
    for record in dead:
        headers = dict(record.headers())
        method = method_of[headers[HEADER_TOPIC].decode()]
        _, reason, words = POISON[method]
        assert headers[HEADER_REASON].decode() == reason, method
        assert headers[HEADER_DETAIL].decode().startswith(words), (method, headers[HEADER_DETAIL])
    progress = [line for line in bridge.logs() if line.get("event") == "bridge stopped"]
    assert progress and progress[-1]["uploaded_by_method"] == count
    assert progress[-1]["dead_lettered_by_method"] == dict.fromkeys(count, 1)


async def test_a_row_another_method_s_api_refuses_is_isolated_at_default_sizes(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, registry: SchemaRegistry, tmp_path: Path
) -> None:
    """A 400 on a revenue batch of 10,000 rows: bisected to the one row, dead-lettered as rejected, the rest
    delivered, the metrics labelled with the method, every offset committed; SIGTERM then exits 0."""
    topic, dlq = new_topic(4), new_topic(1)
    now_ms = int(time.time() * 1000)
    total, refused = 12_000, 7_777
    schema = producer_schema("revenue")
    schema["fields"].append({"name": "product_id", "type": STRING, "default": None})
    parsed = fastavro.parse_schema(schema)
    schema_id = registry.register(f"{topic}-value", json.dumps(schema))
    # product_id is the label the sandbox refuses revenue rows by.
    records = [made("revenue", seq, now_ms).record | {"product_id": f"p{seq}"} for seq in range(total)]
    records[refused]["product_id"] = "refuse-me"
    sandbox.set_faults(refuse_event_names={"refuse-me"}, latency_ms=200)
    values = [wire(schema_id, record, parsed) for record in records]
    produce(kafka_bootstrap, topic, values)
    group = f"g-{topic}"
    config = bridge_config(
        kafka_bootstrap, topic, sandbox.url, group=group, registry_url=registry.url, kafka={"dead_letter_topic": dlq}
    )
    config["kafka"]["topics"] = []
    config["routes"] = [{"topics": [topic], "method": "revenue"}]
    config["batch"] = {}  # the defaults: 10,000 rows a batch
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        await wait_for(lambda: len(sandbox.state.kept["revenue"]) >= total - 1, 120, "the other rows delivered")
        dead = consume_all(kafka_bootstrap, dlq, 1)
        await wait_for(at_end(kafka_bootstrap, group, topic, end_offsets(kafka_bootstrap, topic)), 30, "committed")
        prefix = "appmetrica_bridge_"
        metrics = ""
        for _ in range(50):
            _, metrics = await bridge.get("/metrics")
            uploaded = sample(metrics, prefix + "rows_uploaded_total", method="revenue", application=str(APP))
            rejected = sample(metrics, prefix + "rows_dead_lettered_total", method="revenue", reason="rejected")
            if (uploaded, rejected) == (total - 1, 1):
                break
            await asyncio.sleep(0.2)
        bridge.signal(signal.SIGTERM)
        assert await bridge.wait(30) == 0
    finally:
        bridge.kill()
    products = [row["product_id"] for row in sandbox.state.kept["revenue"]]
    assert sorted(products) == sorted(f"p{seq}" for seq in range(total) if seq != refused)
    (letter,) = dead
    assert dict(letter.headers())[HEADER_REASON] == b"rejected"
    assert letter.value() == values[refused]
    assert (uploaded, rejected) == (total - 1, 1), [line for line in metrics.splitlines() if "rows_" in line]
    assert sample(metrics, prefix + "rows_uploaded_total", method="events") == 0


async def test_sigterm_during_an_outage_of_the_api_commits_nothing_and_a_restart_delivers_every_method(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, registry: SchemaRegistry, tmp_path: Path
) -> None:
    now_ms = int(time.time() * 1000)
    count: dict[MethodName, int] = {"events": 300, "revenue": 300, "profiles": 300}
    topics = {method: new_topic(4) for method in count}
    for method, topic in topics.items():
        schema = producer_schema(method)
        schema_id = registry.register(f"{topic}-value", json.dumps(schema))
        parsed = fastavro.parse_schema(schema)
        produce(
            kafka_bootstrap, topic, [wire(schema_id, made(method, seq, now_ms).record, parsed) for seq in range(300)]
        )
    group = f"g-{topics['events']}"
    config = bridge_config(kafka_bootstrap, topics["events"], sandbox.url, group=group, registry_url=registry.url)
    config["routes"] = [{"topics": [topics[m]], "method": m} for m in count if m != "events"]
    config["shutdown"] = {"drain_timeout_s": 3}
    sandbox.set_faults(fault_5xx=1.0)
    first = BridgeProcess(config, tmp_path, name="first").start()
    try:
        await wait_for(lambda: len({r.path for r in sandbox.state.requests}) == 3, 60, "every method tried")
        first.signal(signal.SIGTERM)
        began = time.monotonic()
        assert await first.wait(20) == 0
        assert time.monotonic() - began < 3 + 5, "shutdown.drain_timeout_s bounds the shutdown"
    finally:
        first.kill()
    assert sandbox.state.rows_accepted == 0
    for topic in topics.values():
        assert all(offset < 0 for offset in committed(kafka_bootstrap, group, topic).values()), topic

    sandbox.set_faults(fault_5xx=0.0)
    second = BridgeProcess(config, tmp_path, name="second").start()
    try:
        await wait_for(lambda: all(len(sandbox.state.kept[m]) >= count[m] for m in count), 60, "every row delivered")
        for topic in topics.values():
            await wait_for(at_end(kafka_bootstrap, group, topic, end_offsets(kafka_bootstrap, topic)), 30, topic)
        second.signal(signal.SIGTERM)
        assert await second.wait(30) == 0
    finally:
        second.kill()
    for method in count:
        rows = sandbox.state.kept[method]
        assert len({LABELS[method](row) for row in rows}) == len(rows) == count[method], method
