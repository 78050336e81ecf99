"""`appmetrica-bridge preview` as a new user runs it: against a live topic (Avro through the registry, JSON) and a
file, it shows the right rows and dead-letter reasons, commits nothing, and never uploads."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import fastavro
import yaml
from confluent_kafka.admin import AdminClient

from bridge.sandbox.registry import SchemaRegistry
from devtools.testkit.game import GAME_MAPPING_YAML, GAME_SCHEMA
from devtools.testkit.kafka import TopicFactory, committed, produce
from devtools.testkit.previews import NOW_US, game, preview
from devtools.testkit.records import APP, wire

GROUP = "preview-test-group"


def config_file(tmp_path: Path, bootstrap: str, registry_url: str, topic: str, fmt: str = "avro") -> Path:
    mapping = yaml.safe_load(GAME_MAPPING_YAML)
    # No device-id header in these records; keep the forms otherwise, with app fixed to the game.
    mapping["application_id"] = {"value": APP}
    del mapping["appmetrica_device_id"]
    config = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": GROUP},
        "avro": {"format": "confluent", "schema_registry_url": registry_url},
        "post_api": {"url": "http://127.0.0.1:9", "application_id": APP},
        "routes": [{"topics": [topic], "method": "events", "format": fmt, "mapping": mapping}],
    }
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def game_row(seq: int, key: str) -> dict[str, str]:
    return {
        "application_id": str(APP),
        "profile_id": str(1000 + seq),
        "event_name": f"level_{seq}",
        "event_timestamp": str((NOW_US - seq * 1_000_000) // 1_000_000),
        "event_json": json.dumps({"props": {"zone": "north"}, "level": seq}, separators=(",", ":")),
        "session_type": "foreground",
        "google_aid": key,
    }


def no_offsets_anywhere(admin: AdminClient, bootstrap: str, topic: str) -> None:
    assert set(committed(bootstrap, GROUP, topic, 2).values()) == {-1001}
    groups = admin.list_consumer_groups(request_timeout=10).result().valid
    assert not [g.group_id for g in groups if g.group_id.startswith("appmetrica-bridge-preview")]


async def test_preview_of_a_live_avro_topic_shows_rows_and_reasons_and_commits_nothing(
    tmp_path: Path, kafka_bootstrap: str, kafka_admin: AdminClient, new_topic: TopicFactory, registry: SchemaRegistry
) -> None:
    topic = new_topic(2)
    schema_id = registry.register(f"{topic}-value", json.dumps(GAME_SCHEMA))
    values = [wire(schema_id, game(seq), fastavro.parse_schema(GAME_SCHEMA)) for seq in range(30)]
    values[25] = b"\x00\x00\x00\x00\x63garbage"  # an id the registry does not know
    values[27] = wire(schema_id, {**game(27), "ts": 5}, fastavro.parse_schema(GAME_SCHEMA))  # 1970: expired
    # The last four a moment later, so the newest records are known; the harness keys each call's values 0, 1, ...
    produce(kafka_bootstrap, topic, values[:26], partitions=2)
    await asyncio.sleep(0.05)
    produce(kafka_bootstrap, topic, values[26:], partitions=2)
    path = config_file(tmp_path, kafka_bootstrap, registry.url, topic)

    code, out, err = await preview("--config", str(path), "--json", "--from-beginning", "--limit", "30")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 30
    by_source = {line["source"]: line for line in lines}
    for seq in range(30):
        line = by_source[f"{topic}[{seq % 2}]@{seq // 2}"]
        if seq == 25:
            assert line["reason"] == "schema" and "schema id 99" in line["detail"]
        elif seq == 27:
            assert line["reason"] == "expired"
        else:
            assert line["row"] == game_row(seq, str(seq if seq < 26 else seq - 26)), seq

    code, out, err = await preview("--config", str(path), "--limit", "3")
    assert code == 0, err
    table = out.splitlines()
    assert table[0].startswith(f"route {topic} -> events: 3 records, ")
    # The newest three of the topic, whichever partition they are in.
    assert {line.split()[0] for line in table[1:]} == {f"{topic}[1]@13", f"{topic}[0]@14", f"{topic}[1]@14"}

    code, out, err = await preview(
        "--config", str(path), "--json", "--partition", "1", "--offset", "10", "--limit", "2"
    )
    assert code == 0, err
    assert [json.loads(line)["source"] for line in out.splitlines()] == [f"{topic}[1]@10", f"{topic}[1]@11"]
    no_offsets_anywhere(kafka_admin, kafka_bootstrap, topic)


async def test_preview_of_a_json_topic_and_of_files(
    tmp_path: Path, kafka_bootstrap: str, kafka_admin: AdminClient, new_topic: TopicFactory
) -> None:
    topic = new_topic(2)
    records = [game(seq) for seq in range(4)]
    values = [json.dumps(r).encode() for r in records]
    values[1] = b"\x00\x00\x00\x00\x01" + values[1]  # the Confluent JSON Schema framing, no registry needed
    values[2] = json.dumps({**records[2], "ts": "yesterday"}).encode()
    produce(kafka_bootstrap, topic, values, partitions=2)
    path = config_file(tmp_path, kafka_bootstrap, "http://127.0.0.1:9", topic, fmt="json")

    code, out, err = await preview("--config", str(path), "--json")
    assert code == 0, err
    by_source = {line["source"]: line for line in map(json.loads, out.splitlines())}
    assert by_source[f"{topic}[0]@0"]["row"] == game_row(0, "0")
    assert by_source[f"{topic}[1]@0"]["row"] == game_row(1, "1")
    assert by_source[f"{topic}[0]@1"] == {
        "method": "events",
        "source": f"{topic}[0]@1",
        "reason": "invalid",
        "detail": "event_timestamp (path ts): 'yesterday' is not a timestamp in us",
    }
    no_offsets_anywhere(kafka_admin, kafka_bootstrap, topic)

    lines = tmp_path / "sample.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in records[:2]) + "\n{broken\n")
    code, out, err = await preview("--config", str(path), "--json", "--input", str(lines))
    assert code == 0, err
    got = [json.loads(line) for line in out.splitlines()]
    # A file has no message keys: google_aid is simply not set.
    assert [g.get("row") for g in got[:2]] == [{k: v for k, v in game_row(seq, "").items() if v} for seq in range(2)]
    assert got[2]["reason"] == "decode" and got[2]["source"] == "sample.jsonl:3"

    container = tmp_path / "sample.avro"
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(GAME_SCHEMA), [game(seq) for seq in range(3)])
    container.write_bytes(buffer.getvalue())
    code, out, err = await preview("--config", str(path), "--input", str(container), "--topic", topic)
    assert code == 0, err
    assert out.splitlines()[0] == f"route {topic} -> events: 3 records, 3 rows, 0 dead letters"
    assert "sample.avro#2" in out and "profile_id=1001" in out


async def test_preview_names_what_it_cannot_read(tmp_path: Path, kafka_bootstrap: str) -> None:
    path = config_file(tmp_path, kafka_bootstrap, "http://127.0.0.1:9", "no-such-topic-here", fmt="json")
    code, _, err = await preview("--config", str(path))
    assert code == 1
    assert "topic 'no-such-topic-here' does not exist" in err
    code, _, err = await preview("--config", str(path), "--partition", "1")
    assert code == 2 and "--partition and --offset go together" in err
