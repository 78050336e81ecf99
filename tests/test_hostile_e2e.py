"""Hostile input end to end on the real broker (issue 10): records that break every stage mixed into valid
traffic, a Post API that echoes the request with a key URL encoding changes, a registry that refuses the bridge.

Each test prints a `RELIABILITY` line with what it measured; docs/reliability.md quotes them.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bridge.decoding.avro import contract_schema, parse
from bridge.kafka.dead_letter_producer import (
    HEADER_DETAIL,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_VALUE_DROPPED,
)
from bridge.ops.logs import REDACTED
from bridge.sandbox.registry import SchemaRegistry
from bridge.sandbox.server import Sandbox
from devtools.testkit.bridge_child import BridgeProcess, bridge_config
from devtools.testkit.kafka import TopicFactory, committed, consume_all, end_offsets, produce, read_to_end
from devtools.testkit.leaks import leaked
from devtools.testkit.records import SUBJECT, event, raw_avro, seqs, wire
from devtools.testkit.waiting import wait_for

HOSTILE_KEY = "a+b/c=d%-ключ"
DRAIN_S = 5
"""The test configuration's shutdown.drain_timeout_s."""
DEFAULT_BATCH = {"max_rows": 10_000, "linger_ms": 1000}


def header(record: Any, name: str) -> bytes:
    return bytes(dict(record.headers())[name])


def reason_of(record: Any) -> str:
    return header(record, HEADER_REASON).decode()


async def stop(bridge: BridgeProcess) -> tuple[int, float]:
    """SIGTERM, and the exit code and how long it took."""
    started = time.monotonic()
    bridge.signal(signal.SIGTERM)
    code = await bridge.wait(DRAIN_S + 10)
    return code, time.monotonic() - started


def hostile_values(registry: SchemaRegistry) -> tuple[int, dict[str, tuple[str, bytes | None]]]:
    """The contract's schema id, and each hostile record by name with what should become of it ("delivered" or a
    dead-letter reason) and its value."""
    schema_id = registry.register(SUBJECT, json.dumps(contract_schema()))
    removed = contract_schema()
    removed["fields"] = [f for f in removed["fields"] if f["name"] != "event_name"]
    unreadable_id = registry.register("removed-value", json.dumps(removed))
    union = contract_schema()
    for field in union["fields"]:
        if field["name"] == "mcc":
            field["type"] = ["null", "int", "string"]
    union_id = registry.register("union-value", json.dumps(union))
    seq = iter(range(100_000, 101_000))

    def record(**fields: Any) -> bytes:
        return wire(schema_id, event(next(seq), **fields))

    corrupt = bytearray(record(event_name="abc-utf8"))
    at = corrupt.find(b"abc-utf8")
    corrupt[at : at + 3] = b"\xff\xfe\xfd"
    without_name = {k: v for k, v in event(next(seq)).items() if k != "event_name"}
    return schema_id, {
        "deep-object": ("invalid", record(event_json='{"a":' * 5000 + "1" + "}" * 5000)),
        "deep-array": ("invalid", record(event_json='{"a":' + "[" * 50_000 + "]" * 50_000 + "}")),
        "huge-json": ("delivered", record(event_json=json.dumps({"seq": 100_999, "pad": "x" * 600_000}))),
        "nul-and-controls": ("delivered", record(event_name="a\x00b\x01\x0b\x1c\x85\u2028c", device_model="\r\x00")),
        "raw-control-in-json": ("invalid", record(event_json='{"a":"\x01"}')),
        "min-application": ("invalid", record(application_id=-(2**63))),
        "min-millis": ("invalid", record(event_timestamp=-(2**63))),
        "max-millis": ("invalid", record(event_timestamp=2**63 - 1)),
        "negative-millis": ("invalid", record(event_timestamp=-1)),
        "min-mcc": ("invalid", record(mcc=-(2**31))),
        "invalid-utf8": ("decode", bytes(corrupt)),
        "garbage-magic-0": ("schema", struct.pack(">bI", 0, 987_654) + b"\xff" * 40),
        "garbage": ("decode", b"\x00\x00"),
        "tombstone": ("decode", None),
        "near-the-size-limit": ("decode", b"\x07" * 999_800),
        "required-field-removed": ("schema", wire(unreadable_id, without_name, parse(removed))),
        "union-branch": ("schema", wire(union_id, event(next(seq), mcc="250"), parse(union))),
    }


async def test_hostile_records_are_judged_alone_and_valid_traffic_flows(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, registry: SchemaRegistry, tmp_path: Path
) -> None:
    topic, dlq = new_topic(4), new_topic(1)
    schema_id, hostile = hostile_values(registry)
    valid = 4000
    values: list[bytes | None] = [wire(schema_id, event(seq)) for seq in range(valid)]
    for index, (_, value) in enumerate(hostile.values()):
        values.insert(250 * index + 7, value)
    where = {name: (values.index(value) % 4, values.index(value) // 4) for name, (_, value) in hostile.items()}
    produce(kafka_bootstrap, topic, values)
    sandbox.set_keys(post_api_key=HOSTILE_KEY)
    group = f"g-{topic}"
    config = bridge_config(
        kafka_bootstrap,
        topic,
        sandbox.url,
        group=group,
        registry_url=registry.url,
        kafka={"dead_letter_topic": dlq},
        batch=DEFAULT_BATCH,
    )
    bridge = BridgeProcess(config, tmp_path, key=HOSTILE_KEY).start()
    expected_dead = sum(1 for outcome, _ in hostile.values() if outcome != "delivered")
    delivered_hostile = [name for name, (outcome, _) in hostile.items() if outcome == "delivered"]
    try:
        await wait_for(lambda: len(sandbox.state.events) >= valid + len(delivered_hostile), 120, "every event")
        ends = end_offsets(kafka_bootstrap, topic)
        await wait_for(lambda: committed(kafka_bootstrap, group, topic) == ends, 30, "committed offsets at the end")
        dead = consume_all(kafka_bootstrap, dlq, expected_dead)
        assert bridge.process.poll() is None, f"the bridge still runs; log tail:\n{bridge.tail()}"
        code, took = await stop(bridge)
    finally:
        bridge.kill()
    delivered = seqs(sandbox.state.events)
    assert sorted(s for s in delivered if s < valid) == list(range(valid)), "every valid event exactly once"
    assert len(delivered) == valid + len(delivered_hostile), "no duplicates"
    by_source = {(int(header(r, HEADER_PARTITION)), int(header(r, HEADER_OFFSET))): r for r in dead}
    assert len(dead) == expected_dead
    for name, (outcome, value) in hostile.items():
        if outcome == "delivered":
            assert where[name] not in by_source, name
            continue
        copy = by_source[where[name]]
        assert reason_of(copy) == outcome, name
        assert header(copy, HEADER_DETAIL), f"{name}: a readable detail"
        if name == "near-the-size-limit":
            assert copy.value() is None and b"too large" in header(copy, HEADER_VALUE_DROPPED)
        else:
            assert copy.value() == value, f"{name}: the original value"
    assert code == 0 and took < DRAIN_S + 5
    log = bridge.log_path.read_text()
    assert not leaked(HOSTILE_KEY, log)
    reasons = Counter(reason_of(record) for record in dead)
    print(
        f"\nRELIABILITY hostile records: {len(hostile)} hostile among {valid} valid; dead-lettered {dict(reasons)}, "
        f"{len(delivered_hostile)} hostile but valid delivered, {valid} valid delivered once, "
        f"committed to the end, exit {code} {took:.1f} s after SIGTERM"
    )


@pytest.fixture
async def echoing_post_api() -> AsyncIterator[tuple[str, list[int]]]:
    """A Post API that takes every body except one holding "refuse-me", which it refuses echoing the request."""
    accepted: list[int] = []

    async def events(request: web.Request) -> web.Response:
        body = await request.read()
        if b"refuse-me" in body:
            query = json.dumps(dict(request.query), ensure_ascii=True)
            return web.Response(status=400, text=f"cannot parse {request.url} (raw {request.raw_path}); query {query}")
        accepted.extend(seqs(csv.DictReader(io.StringIO(body.decode(), newline=""))))
        return web.Response(status=200, text="")

    app = web.Application()
    app.router.add_post("/logs/v1/import/events.csv", events)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", accepted
    await runner.cleanup()


async def test_an_echoed_request_never_puts_the_key_in_a_dead_letter_or_the_log(
    kafka_bootstrap: str, new_topic: TopicFactory, echoing_post_api: tuple[str, list[int]], tmp_path: Path
) -> None:
    url, accepted = echoing_post_api
    topic, dlq = new_topic(4), new_topic(1)
    total, refused = 2000, 1234
    values = [raw_avro(event(seq)) for seq in range(total)]
    values[refused] = raw_avro(event(refused, event_name="refuse-me"))
    produce(kafka_bootstrap, topic, values)
    group = f"g-{topic}"
    config = bridge_config(
        kafka_bootstrap, topic, url, group=group, kafka={"dead_letter_topic": dlq}, batch=DEFAULT_BATCH
    )
    bridge = BridgeProcess(config, tmp_path, key=HOSTILE_KEY).start()
    try:
        await wait_for(lambda: len(accepted) >= total - 1, 60, "every other row accepted")
        await wait_for(lambda: '"dead-lettered"' in bridge.log_path.read_text(), 30, "the refused row dead-lettered")
        # Read only now: consume_all blocks the event loop the echoing Post API answers on.
        dead = consume_all(kafka_bootstrap, dlq, 1)
        _, metrics = await bridge.get("/metrics")
        code, took = await stop(bridge)
    finally:
        bridge.kill()
    assert len(dead) == 1 and reason_of(dead[0]) == "rejected"
    detail = header(dead[0], HEADER_DETAIL).decode()
    assert "cannot parse" in detail and REDACTED in detail
    assert not leaked(HOSTILE_KEY, detail), detail
    log = bridge.log_path.read_text()
    assert "cannot parse" in log, "the refusal is logged, redacted"
    assert not leaked(HOSTILE_KEY, log) and not leaked(HOSTILE_KEY, metrics)
    assert sorted(accepted) == [seq for seq in range(total) if seq != refused] and code == 0
    print(
        f"\nRELIABILITY echoed key: 1 refused row dead-lettered with the echo redacted, {total - 1} delivered; "
        f"key {HOSTILE_KEY!r} in no spelling in the header, log or metrics; exit {code} {took:.1f} s after SIGTERM"
    )


async def test_a_registry_refusing_the_bridge_is_named_not_ready_and_nothing_is_dead_lettered(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, registry: SchemaRegistry, tmp_path: Path
) -> None:
    topic, dlq = new_topic(4), new_topic(1)
    schema_id = registry.register(SUBJECT, json.dumps(contract_schema()))
    total = 3000
    produce(kafka_bootstrap, topic, [wire(schema_id, event(seq)) for seq in range(total)])
    registry.refuse_with = 401
    group = f"g-{topic}"
    config = bridge_config(
        kafka_bootstrap,
        topic,
        sandbox.url,
        group=group,
        registry_url=registry.url,
        kafka={"dead_letter_topic": dlq},
        batch=DEFAULT_BATCH,
    )
    first = BridgeProcess(config, tmp_path, name="refused").start()
    try:
        await first.serving()
        await wait_for(lambda: "credentials (HTTP 401)" in first.log_path.read_text(), 60, "the refusal logged")
        status, body = await first.get("/readyz")
        assert status == 503 and "the schema registry refuses the bridge's credentials (HTTP 401)" in body
        code, took = await stop(first)
    finally:
        first.kill()
    assert code == 0 and took < DRAIN_S + 5, "SIGTERM while refused exits within the drain"
    assert not sandbox.state.events
    assert all(offset < 0 for offset in committed(kafka_bootstrap, group, topic).values()), "nothing committed"

    registry.refuse_with = None
    second = BridgeProcess(config, tmp_path, name="accepted").start()
    try:
        await wait_for(lambda: len(sandbox.state.events) >= total, 90, "every event")
        ends = end_offsets(kafka_bootstrap, topic)
        await wait_for(lambda: committed(kafka_bootstrap, group, topic) == ends, 30, "committed offsets at the end")
        status, _ = await second.get("/readyz")
        dead = read_to_end(kafka_bootstrap, dlq)
    finally:
        second.kill()
    assert status == 200 and not dead, "nothing dead-lettered for a refusal"
    assert sorted(seqs(sandbox.state.events)) == list(range(total))
    print(
        f"\nRELIABILITY registry 401: named in the log and /readyz, 0 committed and 0 dead-lettered while refused, "
        f"exit {code} {took:.1f} s after SIGTERM during it; all {total} delivered once accepted"
    )
