"""Records of a schema the project has never seen, Avro through the registry and JSON, mapped with the issue's
syntax: every row that arrives equals the row computed here by hand, unconvertible records are dead-lettered
`invalid` naming parameter and path, the rest arrive exactly once, committed offsets reach the end."""

from __future__ import annotations

import io
import json
import signal
import time
from pathlib import Path
from typing import Any

import fastavro
import yaml
from confluent_kafka import Producer

from bridge.kafka.dead_letter_producer import HEADER_DETAIL, HEADER_REASON
from bridge.sandbox.registry import SchemaRegistry
from bridge.sandbox.server import Sandbox
from devtools.testkit.bridge_child import BridgeProcess, bridge_config
from devtools.testkit.kafka import TopicFactory, committed, consume_all, end_offsets, read_to_end
from devtools.testkit.records import APP
from devtools.testkit.waiting import wait_for

MAPPING = f"""
profile_id: player.uid
event_name: action
event_timestamp: {{path: at, unit: us}}
event_json: {{pack: [attrs, score]}}
app_version_name: [client.build, client.version]
application_id: {{path: title, lookup: {{quest: {APP}, arena: {APP}}}}}
session_type: {{value: foreground}}
appmetrica_device_id: {{header: sdk-device}}
google_aid: {{key: true}}
os_name: player.device.os
"""

# com.example.arcade.PlayerAction: nothing like the project's contract.
SCHEMA = {
    "type": "record",
    "name": "PlayerAction",
    "namespace": "com.example.arcade",
    "fields": [
        {
            "name": "player",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Player",
                    "fields": [
                        {"name": "uid", "type": "long"},
                        {
                            "name": "device",
                            "type": [
                                "null",
                                {"type": "record", "name": "Device", "fields": [{"name": "os", "type": "string"}]},
                            ],
                            "default": None,
                        },
                    ],
                },
            ],
            "default": None,
        },
        {"name": "action", "type": "string"},
        {"name": "at", "type": "long"},
        {"name": "attrs", "type": {"type": "map", "values": "string"}},
        {"name": "score", "type": ["null", "double"], "default": None},
        {
            "name": "client",
            "type": {
                "type": "record",
                "name": "Client",
                "fields": [
                    {"name": "build", "type": ["null", "string"], "default": None},
                    {"name": "version", "type": ["null", "string"], "default": None},
                ],
            },
        },
        {"name": "title", "type": "string"},
    ],
}
TOTAL = 2400
Headers = list[tuple[str, str | bytes | None]]
PARTITIONS = 4


def action(tag: str, seq: int, now_us: int) -> tuple[dict[str, Any], bytes, Headers]:
    """A record, its key and headers; every 5th player is anonymous and identified by the SDK device header."""
    anonymous = seq % 5 == 0
    record = {
        "player": None if anonymous else {"uid": 10_000 + seq, "device": {"os": "android"} if seq % 2 else None},
        "action": f"{tag} jump {seq % 7}",
        "at": now_us - seq * 999_983,
        "attrs": {"seq": str(seq), "note": 'quote " and, comma'},
        "score": None if seq % 3 else seq / 4,
        "client": {"build": None if seq % 4 else f"b{seq}", "version": "3.1"},
        "title": "arena" if seq % 2 else "quest",
    }
    headers: Headers = [("sdk-device", str(900_000 + seq).encode())] if anonymous else []
    return record, f"{tag}-{seq}".encode(), headers


def poisoned(seq: int, record: dict[str, Any], headers: Headers) -> str | None:
    """Make every 97th record unconvertible; the detail the bridge must give."""
    if seq % 97 != 1:
        return None
    if seq % 2:
        record["title"] = "chess"
        return "application_id (path title): 'chess' is not in the lookup"
    headers.append(("sdk-device", b"\xff\xfe"))
    return "appmetrica_device_id (header sdk-device): not UTF-8 text"


def mapped_row(record: dict[str, Any], key: bytes, headers: Headers) -> dict[str, Any]:
    """The Post API row, by hand: seconds floored from microseconds, the first set build, JSON of two fields."""
    row: dict[str, Any] = {
        "application_id": str(APP),
        "event_name": record["action"],
        "event_timestamp": str(record["at"] // 1_000_000),
        "session_type": "foreground",
        "google_aid": key.decode(),
        "app_version_name": record["client"]["build"] or record["client"]["version"],
    }
    # Both fields are always there (score may be null), so both are packed.
    row["event_json"] = {"attrs": record["attrs"], "score": record["score"]}
    if record["player"] is not None:
        row["profile_id"] = str(record["player"]["uid"])
        if record["player"]["device"] is not None:
            row["os_name"] = record["player"]["device"]["os"]
    if headers:
        device = headers[-1][1]
        assert isinstance(device, bytes)
        row["appmetrica_device_id"] = device.decode()
    return row


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes, Headers]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    for index, (value, key, headers) in enumerate(messages):
        producer.produce(topic, value=value, key=key, headers=headers, partition=index % PARTITIONS)
        producer.poll(0)
    assert producer.flush(60) == 0


def avro_value(schema_id: int, record: dict[str, Any]) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(SCHEMA), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()


async def test_unseen_records_mapped_from_avro_and_json_arrive_as_computed(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, registry: SchemaRegistry, tmp_path: Path
) -> None:
    avro_topic, json_topic, dlq = new_topic(PARTITIONS), new_topic(PARTITIONS), new_topic(1)
    schema_id = registry.register(f"{avro_topic}-value", json.dumps(SCHEMA))
    now_us = int(time.time() * 1_000_000)
    expected: dict[str, dict[str, Any]] = {}
    refused: dict[str, str] = {}
    for topic, tag in ((avro_topic, "avro"), (json_topic, "json")):
        messages = []
        for seq in range(TOTAL):
            record, key, headers = action(tag, seq, now_us)
            detail = poisoned(seq, record, headers)
            if topic == json_topic and seq % 97 == 3:
                record["at"] = "yesterday"
                detail = "event_timestamp (path at): 'yesterday' is not a timestamp in us"
            if detail is None:
                expected[key.decode()] = mapped_row(record, key, headers)
            else:
                refused[key.decode()] = detail
            value = avro_value(schema_id, record) if topic == avro_topic else json.dumps(record).encode()
            messages.append((value, key, headers))
        produce(kafka_bootstrap, topic, messages)

    mapping = yaml.safe_load(MAPPING)
    group = f"g-{avro_topic}"
    config = bridge_config(
        kafka_bootstrap,
        avro_topic,
        sandbox.url,
        group=group,
        registry_url=registry.url,
        kafka={"topics": [], "dead_letter_topic": dlq},
        batch={"max_rows": 500, "linger_ms": 100},
    )
    config["routes"] = [
        {"topics": [avro_topic], "method": "events", "format": "avro", "mapping": mapping},
        {"topics": [json_topic], "method": "events", "format": "json", "mapping": mapping},
    ]
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        await wait_for(lambda: len(sandbox.state.events) >= len(expected), 120, "every convertible record accepted")
        ends = {topic: end_offsets(kafka_bootstrap, topic) for topic in (avro_topic, json_topic)}

        def at_end() -> bool:
            return all(committed(kafka_bootstrap, group, topic) == end for topic, end in ends.items())

        await wait_for(at_end, 30, "committed == end on both topics")
        dead = consume_all(kafka_bootstrap, dlq, len(refused))
        bridge.signal(signal.SIGTERM)
        assert await bridge.wait(30) == 0
    finally:
        bridge.kill()

    arrived = sandbox.state.events
    assert len(arrived) == len(expected), "every row exactly once"
    by_key = {row["google_aid"]: {**row, "event_json": json.loads(row["event_json"])} for row in arrived}
    assert by_key == expected
    print(f"\nMAPPED e2e: {len(arrived)} rows as computed, {len(dead)} dead letters")

    assert {m.key().decode(): dict(m.headers())[HEADER_REASON] for m in dead} == dict.fromkeys(refused, b"invalid")
    for message in dead:
        assert dict(message.headers())[HEADER_DETAIL].decode() == refused[message.key().decode()]


async def test_a_mapped_route_waits_for_a_registry_that_is_down_and_stops_on_sigterm(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, registry: SchemaRegistry, tmp_path: Path
) -> None:
    topic, dlq = new_topic(PARTITIONS), new_topic(1)
    schema_id = registry.register(f"{topic}-value", json.dumps(SCHEMA))
    port = int(registry.url.rsplit(":", 1)[1])
    await registry.stop()
    now_us = int(time.time() * 1_000_000)
    produce(
        kafka_bootstrap,
        topic,
        [(avro_value(schema_id, r), k, h) for r, k, h in (action("a", s, now_us) for s in range(500))],
    )
    group = f"g-{topic}"
    config = bridge_config(
        kafka_bootstrap,
        topic,
        sandbox.url,
        group=group,
        registry_url=f"http://127.0.0.1:{port}",
        kafka={"topics": [], "dead_letter_topic": dlq},
    )
    config["routes"] = [{"topics": [topic], "method": "events", "mapping": yaml.safe_load(MAPPING)}]
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        await wait_for(
            lambda: any(line.get("event") == "schema registry unavailable; records wait" for line in bridge.logs()),
            60,
            "the bridge to notice the registry is down",
        )
        bridge.signal(signal.SIGTERM)
        stopping = time.monotonic()
        assert await bridge.wait(30) == 0
        assert time.monotonic() - stopping < config["shutdown"]["drain_timeout_s"] + 5, "shutdown is bounded"
    finally:
        bridge.kill()
    assert not sandbox.state.events
    assert not read_to_end(kafka_bootstrap, dlq), "waiting records are not poison"
    assert set(committed(kafka_bootstrap, group, topic).values()) <= {-1001}, "nothing committed"
