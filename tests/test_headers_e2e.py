"""The bridge on a route that maps a header, fed records whose header names are not UTF-8 (as Go and kcat
producers write them) and JSON numbers past 64 bits: no exit, poison dead-lettered with its headers, neighbours
delivered exactly, offsets committed to the end, SIGTERM ends it with 0."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from bridge.kafka.dead_letter_producer import HEADER_HEADERS_DROPPED, HEADER_REASON
from bridge.kafka.headers import read_headers
from bridge.sandbox.server import Sandbox
from devtools.testkit.bridge_child import BridgeProcess, bridge_config
from devtools.testkit.kafka import TopicFactory, committed, consume_all, end_offsets
from devtools.testkit.raw_headers import produce_raw
from devtools.testkit.records import APP
from devtools.testkit.waiting import wait_for

MAPPING = {
    "profile_id": "pid",
    "event_name": "name",
    "event_timestamp": "ts",
    "application_id": {"value": APP},
    "os_version": {"header": "os"},
    "event_json": {"pack": ["n"]},
}
VALID = 300
HUGE = "99999999999999999999"


async def test_header_names_that_are_not_utf8_neither_stop_the_bridge_nor_alter_a_record(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic, dlq = new_topic(1), new_topic(1)
    now_ms = int(time.time() * 1000)
    records: list[tuple[bytes | None, bytes | None, list[tuple[bytes, bytes]]]] = []
    poison: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for seq in range(VALID):
        headers = [(b"\xff\xfe", b"raw"), (b"os", b"17"), (b"trace", b"\x00\x01")] if seq % 3 == 0 else []
        value = f'{{"pid": "p{seq}", "name": "e", "ts": {now_ms}, "n": {HUGE if seq % 2 else seq}}}'
        records.append((f"k{seq}".encode(), value.encode(), headers))
        if seq % 50 == 7:
            bad = [(b"trace", b"t"), (b"\xc3(", b"raw"), (b"os", b"1")]
            key = f"poison{seq}".encode()
            poison[key] = bad
            records.append((key, f'{{"pid": "x", "name": "", "ts": {now_ms}}}'.encode(), bad))
    records.append((b"huge-id", f'{{"pid": {HUGE}, "name": "e", "ts": {now_ms}, "n": 1.50}}'.encode(), []))
    produce_raw(kafka_bootstrap, topic, records)

    group = f"g-{topic}"
    config = bridge_config(
        kafka_bootstrap, topic, sandbox.url, group=group, kafka={"topics": [], "dead_letter_topic": dlq}
    )
    config["routes"] = [{"topics": [topic], "method": "events", "format": "json", "mapping": MAPPING}]
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        await wait_for(lambda: len(sandbox.state.events) >= VALID + 1, 90, "every valid record accepted")
        end = end_offsets(kafka_bootstrap, topic, 1)
        await wait_for(lambda: committed(kafka_bootstrap, group, topic, 1) == end, 30, "committed == end")
        dead = consume_all(kafka_bootstrap, dlq, len(poison))
        assert bridge.process.poll() is None, f"the bridge still runs; log tail:\n{bridge.tail()}"
        bridge.signal(signal.SIGTERM)
        assert await bridge.wait(30) == 0
    finally:
        bridge.kill()

    rows = {row["profile_id"]: row for row in sandbox.state.events}
    assert len(sandbox.state.events) == VALID + 1, "each valid record once"
    for seq in range(VALID):
        row = rows[f"p{seq}"]
        assert row.get("os_version") == ("17" if seq % 3 == 0 else None)
        assert row["event_json"] == f'{{"n":{HUGE if seq % 2 else seq}}}'
    assert rows[HUGE]["event_json"] == '{"n":1.50}', "numbers exactly as written"

    assert sorted(m.key() for m in dead) == sorted(poison)
    for message in dead:
        letter = read_headers(message).items
        kept = [(name, value) for name, value in letter if not name.startswith(b"appmetrica.")]
        assert kept == [(b"trace", b"t"), (b"os", b"1")], "the original headers the client can write, in order"
        found = dict(letter)
        assert found[HEADER_REASON.encode()] == b"invalid"
        (dropped,) = json.loads(found[HEADER_HEADERS_DROPPED.encode()] or b"")
        assert (dropped["position"], dropped["name"]) == (1, b"\xc3(".hex())
