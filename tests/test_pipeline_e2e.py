"""The bridge end to end on the real broker and the sandbox: everything arrives exactly once, offsets follow."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.decoding.avro import contract_schema, parse
from bridge.sandbox.config import Keys
from bridge.sandbox.registry import SchemaRegistry
from bridge.sandbox.server import Sandbox, SandboxOptions
from devtools.testkit.bridge_child import BridgeProcess, bridge_config
from devtools.testkit.kafka import TopicFactory, committed, end_offsets, produce
from devtools.testkit.records import APP, KEY, SUBJECT, event, expected_row, raw_avro, seqs, wire
from devtools.testkit.waiting import wait_for


def newer_schema() -> dict[str, Any]:
    """The contract one version ahead: an added optional field the bridge does not know."""
    schema = contract_schema()
    schema["fields"] = [*schema["fields"], {"name": "ab_group", "type": ["null", "string"], "default": None}]
    return schema


async def test_twenty_thousand_events_arrive_exactly_once_with_every_field(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, registry: SchemaRegistry, tmp_path: Path
) -> None:
    topic = new_topic(4)
    current_id = registry.register(SUBJECT, json.dumps(contract_schema()))
    newer = newer_schema()
    newer_id = registry.register(SUBJECT, json.dumps(newer))
    newer_parsed = parse(newer)
    total, newer_every = 20_000, 50
    now_ms = int(time.time() * 1000)
    records = [event(seq, now_ms) for seq in range(total)]
    values = [
        wire(newer_id, {**r, "ab_group": "B"}, newer_parsed) if seq % newer_every == 0 else wire(current_id, r)
        for seq, r in enumerate(records)
    ]
    produce(kafka_bootstrap, topic, values)
    max_rows, max_in_flight, rps = 700, 3, 40
    config = bridge_config(
        kafka_bootstrap,
        topic,
        sandbox.url,
        group=f"g-{topic}",
        registry_url=registry.url,
        batch={"max_rows": max_rows, "linger_ms": 100},
        upload={"max_in_flight": max_in_flight, "requests_per_second": rps},
    )
    sandbox.set_faults(latency_ms=30)
    bridge = BridgeProcess(config, tmp_path).start()
    started = time.monotonic()
    try:
        await wait_for(lambda: len(sandbox.state.events) >= total, 120, "all events accepted")
        elapsed = time.monotonic() - started
        ends = end_offsets(kafka_bootstrap, topic)
        await wait_for(lambda: committed(kafka_bootstrap, f"g-{topic}", topic) == ends, 20, "offsets at the end")
        bridge.signal(signal.SIGTERM)
        assert await bridge.wait(30) == 0
    finally:
        bridge.kill()

    delivered = sandbox.state.events
    assert sorted(seqs(delivered)) == list(range(total)), "every event exactly once"
    by_seq = {json.loads(e["event_json"])["seq"]: e for e in delivered}
    for seq, record in enumerate(records):
        assert by_seq[seq] == expected_row(record), f"event {seq} arrived altered"

    requests = [r for r in sandbox.state.requests if r.status == 200]
    assert max(r.rows for r in requests) <= max_rows
    assert sandbox.state.peak_in_flight <= max_in_flight
    arrivals = sorted(r.arrived for r in sandbox.state.requests)
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    assert busiest <= rps + 1, f"{busiest} requests in one second with a limit of {rps}"
    print(f"\n20k e2e: {total / elapsed:.0f} events/s ({elapsed:.1f} s to all accepted, {len(requests)} requests)")


async def test_transient_failures_are_retried_until_everything_arrives(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic = new_topic(4)
    # Ten batches: with these fractions, the seeded draws give each fault within the first few requests, and
    # every 429 pauses the uploads for a second.
    total = 2000
    produce(kafka_bootstrap, topic, [wire_raw(seq) for seq in range(total)])
    retry_after = 1
    sandbox.set_faults(fault_429=0.2, retry_after=retry_after, fault_5xx=0.15, fault_drop=0.15)
    config = bridge_config(
        kafka_bootstrap,
        topic,
        sandbox.url,
        group=f"g-{topic}",
        batch={"max_rows": 200, "linger_ms": 50},
        upload={"max_in_flight": 4, "requests_per_second": 100, "timeout_s": 5},
    )
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        await wait_for(lambda: len(sandbox.state.events) >= total, 120, "all events accepted despite faults")
        ends = end_offsets(kafka_bootstrap, topic)
        await wait_for(lambda: committed(kafka_bootstrap, f"g-{topic}", topic) == ends, 20, "offsets at the end")
        bridge.signal(signal.SIGTERM)
        assert await bridge.wait(30) == 0
    finally:
        bridge.kill()

    assert sorted(set(seqs(sandbox.state.events))) == list(range(total)), "every event arrived"
    statuses = [r.status for r in sandbox.state.requests]
    assert statuses.count(429) and statuses.count(None) and any(s and s >= 500 for s in statuses), "faults happened"
    # After a 429 the bridge sends nothing until Retry-After has passed; requests already on the wire may land
    # a moment after the 429 went out, so allow a short grace at both ends.
    log = sorted(sandbox.state.requests, key=lambda r: r.arrived)
    for refused in (r for r in log if r.status == 429):
        early = [
            r for r in log if refused.arrived + 0.15 < r.arrived < refused.arrived + (refused.retry_after or 0) - 0.05
        ]
        assert not early, f"{len(early)} requests within the Retry-After of a 429"
    retried = [line for line in bridge.logs() if line.get("event") == "upload failed, retrying"]
    assert retried, "retries are visible in the log"
    assert KEY not in bridge.log_path.read_text(), "the key never reaches the log"


async def test_sigterm_while_busy_exits_zero_and_commits_what_was_acknowledged(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic = new_topic(4)
    total = 20_000
    produce(kafka_bootstrap, topic, [wire_raw(seq) for seq in range(total)])
    sandbox.set_faults(latency_ms=300)
    drain_s = 8
    config = bridge_config(
        kafka_bootstrap,
        topic,
        sandbox.url,
        group=f"g-{topic}",
        batch={"max_rows": 200, "linger_ms": 50},
        upload={"max_in_flight": 4, "requests_per_second": 50},
        shutdown={"drain_timeout_s": drain_s},
        buffer={"max_records": 2000},
    )
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        await wait_for(lambda: len(sandbox.state.events) >= 1000, 60, "the bridge to be busy")
        bridge.signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert await bridge.wait(drain_s + 10) == 0
        assert time.monotonic() - stopped < drain_s + 5
    finally:
        bridge.kill()

    accepted = set(seqs(sandbox.state.events))
    assert len(accepted) < total, "the run was interrupted mid-way"
    positions = committed(kafka_bootstrap, f"g-{topic}", topic)
    # Records went round-robin: seq = offset * 4 + partition. The committed prefix is exactly what was accepted.
    for partition, position in positions.items():
        mine = {seq for seq in accepted if seq % 4 == partition}
        assert {seq // 4 for seq in mine if seq // 4 < max(position, 0)} == set(range(max(position, 0))), (
            f"partition {partition}: a committed record was never accepted"
        )
        assert all(seq // 4 < position for seq in mine), f"partition {partition}: an accepted batch was not committed"


def wire_raw(seq: int) -> bytes:
    return raw_avro(event(seq))


async def test_each_application_uploads_with_its_own_key_and_never_shares_a_request(
    kafka_bootstrap: str, new_topic: TopicFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_app, other_key = 5151, "key-of-the-tv-app-9876543210"
    server = Sandbox(SandboxOptions(keys=Keys(apps={APP: KEY, other_app: other_key})))
    await server.start()
    topic = new_topic(4)
    total = 2000
    produce(
        kafka_bootstrap,
        topic,
        [raw_avro(event(seq, application_id=other_app if seq % 3 == 0 else APP)) for seq in range(total)],
    )
    monkeypatch.setenv("TV_APP_KEY", other_key)
    config = bridge_config(
        kafka_bootstrap,
        topic,
        server.url,
        group=f"g-{topic}",
        post_api={"applications": {other_app: {"api_key_env": "TV_APP_KEY"}}},
    )
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        # The sandbox answers 403 to a request whose key does not match every row's application.
        await wait_for(lambda: len(server.state.events) >= total, 60, "both applications delivered")
    finally:
        bridge.kill()
        await server.stop()
    assert not server.state.by_status.get(403)
    by_app = {e["application_id"] for e in server.state.events if json.loads(e["event_json"])["seq"] % 3 == 0}
    assert by_app == {str(other_app)}
    assert sorted(seqs(server.state.events)) == list(range(total))
    assert other_key not in bridge.log_path.read_text()
