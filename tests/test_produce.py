"""`python -m devtools.produce` and `kafka_local create-topic`: a user's own file onto a topic, without code."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import fastavro
from confluent_kafka import Consumer, TopicPartition

from bridge.sandbox.registry import SchemaRegistry
from devtools.testkit.kafka import TopicFactory

ROOT = Path(__file__).resolve().parents[1]
SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "GameEvent",
    "fields": [
        {"name": "type", "type": "string"},
        {"name": "ts", "type": "long"},
        {"name": "user", "type": ["null", "string"], "default": None},
    ],
}
RECORDS = [
    {"type": "level_up", "ts": 1, "user": "ёжик"},
    {"type": "purchase", "ts": 2, "user": None},
    {"type": "quit", "ts": 3, "user": "81723"},
]


async def tool(*args: str) -> tuple[int, str, str]:
    """Run a devtools command as a user would; the event loop stays free for the in-process registry."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def read_all(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes]]:
    """Every message of the topic's one partition, read up to its end offset."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-produce", "enable.auto.commit": False})
    try:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        consumer.assign([TopicPartition(topic, 0, 0)])
        messages: list[tuple[bytes | None, bytes]] = []
        while len(messages) < high:
            message = consumer.poll(10)
            assert message is not None, f"read {len(messages)} of {high} messages"
            assert message.error() is None, message.error()
            value = message.value()
            assert value is not None
            messages.append((message.key(), value))
        return messages
    finally:
        consumer.close()


def container(path: Path) -> Path:
    with path.open("wb") as out:
        fastavro.writer(out, fastavro.parse_schema(SCHEMA), RECORDS)
    return path


async def test_json_lines_arrive_one_message_a_line_keyed_and_stamped(
    kafka_bootstrap: str, new_topic: TopicFactory, tmp_path: Path
) -> None:
    topic = new_topic(1)
    source = tmp_path / "events.jsonl"
    source.write_text('{"type": "a", "user": "u1", "ts": 1}\n\n{"type": "b", "user": 7, "ts": 2}\n', encoding="utf-8")
    code, out, err = await tool(
        "devtools.produce", "--topic", topic, "--input", str(source), "--bootstrap-servers", kafka_bootstrap,
        "--key-field", "user", "--stamp-now", "ts:s",
    )  # fmt: skip
    assert (code, err) == (0, ""), err
    assert f"produced 2 records from {source} to {topic} (json)" in out
    messages = read_all(kafka_bootstrap, topic)
    assert [key for key, _ in messages] == [b"u1", b"7"]
    values = [json.loads(value) for _, value in messages]
    assert [value["type"] for value in values] == ["a", "b"]
    assert all(abs(value["ts"] - time.time()) < 120 for value in values)


async def test_a_bad_line_is_named_and_nothing_is_sent(
    kafka_bootstrap: str, new_topic: TopicFactory, tmp_path: Path
) -> None:
    topic = new_topic(1)
    source = tmp_path / "events.jsonl"
    source.write_text('{"type": "a"}\n[1, 2]\n')
    code, _out, err = await tool(
        "devtools.produce", "--topic", topic, "--input", str(source), "--bootstrap-servers", kafka_bootstrap
    )
    assert code == 2
    assert err == f"produce: error: {source}:2: a list, not a JSON object\n"
    assert read_all(kafka_bootstrap, topic) == []


async def test_avro_without_a_registry_is_plain_binary(
    kafka_bootstrap: str, new_topic: TopicFactory, tmp_path: Path
) -> None:
    topic = new_topic(1)
    code, out, err = await tool(
        "devtools.produce", "--topic", topic, "--input", str(container(tmp_path / "events.avro")),
        "--bootstrap-servers", kafka_bootstrap,
    )  # fmt: skip
    assert code == 0, err
    assert out.endswith(f"to {topic} (avro)\n")
    parsed = fastavro.parse_schema(SCHEMA)
    decoded = [
        fastavro.schemaless_reader(io.BytesIO(value), parsed, None) for _, value in read_all(kafka_bootstrap, topic)
    ]
    assert decoded == RECORDS


async def test_avro_with_a_registry_is_the_confluent_wire_format(
    kafka_bootstrap: str, new_topic: TopicFactory, registry: SchemaRegistry, tmp_path: Path
) -> None:
    topic = new_topic(1)
    code, _out, err = await tool(
        "devtools.produce", "--topic", topic, "--input", str(container(tmp_path / "events.avro")),
        "--registry", registry.url, "--bootstrap-servers", kafka_bootstrap,
    )  # fmt: skip
    assert code == 0, err
    values = [value for _, value in read_all(kafka_bootstrap, topic)]
    schema_ids = {int.from_bytes(value[1:5], "big") for value in values}
    assert {value[0] for value in values} == {0} and len(schema_ids) == 1
    parsed = fastavro.parse_schema(SCHEMA)
    assert [fastavro.schemaless_reader(io.BytesIO(value[5:]), parsed, None) for value in values] == RECORDS
    async with aiohttp.ClientSession() as http, http.get(f"{registry.url}/subjects") as answer:
        assert f"{topic}-value" in await answer.json()


async def test_a_missing_topic_is_named_with_the_command_that_creates_it(kafka_bootstrap: str, tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text('{"type": "a"}\n')
    code, _out, err = await tool(
        "devtools.produce", "--topic", "no.such.topic", "--input", str(source), "--bootstrap-servers", kafka_bootstrap
    )
    assert code == 1
    assert "python -m devtools.kafka_local create-topic no.such.topic" in err


async def test_create_topic_makes_it_once_and_says_when_it_exists(kafka_bootstrap: str, kafka_admin: Any) -> None:
    topic = f"test-create-topic-{uuid.uuid4().hex[:8]}"
    port = kafka_bootstrap.rpartition(":")[2]
    try:
        code, out, err = await tool("devtools.kafka_local", "create-topic", topic, "--partitions", "3", "--port", port)
        assert (code, out) == (0, f"created topic {topic} at {kafka_bootstrap} (3 partitions)\n"), err
        assert len(kafka_admin.list_topics(topic, timeout=10).topics[topic].partitions) == 3
        code, out, _err = await tool("devtools.kafka_local", "create-topic", topic, "--port", port)
        assert (code, out) == (0, f"topic {topic} already exists at {kafka_bootstrap} (3 partitions); left as it is\n")
    finally:
        kafka_admin.delete_topics([topic])[topic].result(timeout=30)
    code, _out, err = await tool("devtools.kafka_local", "create-topic", topic, "--partitions", "0", "--port", port)
    assert (code, err) == (1, "kafka_local: error: --partitions must be at least 1, not 0\n")
