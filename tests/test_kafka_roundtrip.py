"""Avro events survive a trip through the real local broker, and a broker restart."""

from __future__ import annotations

import io
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from devtools.kafka_local import LocalKafka
from devtools.testkit.kafka import TopicFactory

SCHEMA_JSON = json.loads((Path(__file__).parents[1] / "schemas" / "appmetrica_event.avsc").read_text())
SCHEMA = fastavro.parse_schema(SCHEMA_JSON)
FIELDS = [field["name"] for field in SCHEMA_JSON["fields"]]


def _event(number: int) -> dict[str, Any]:
    event: dict[str, Any] = dict.fromkeys(FIELDS)
    event.update(
        application_id=None if number % 7 == 0 else 1111 + number % 3,
        profile_id=f"profile-{number}",
        appmetrica_device_id=str(10**18 + number) if number % 2 else None,
        event_name=("purchase", "открытие_экрана", "level up ✓")[number % 3],
        # Whole milliseconds, UTC: what a timestamp-millis field reads back as.
        event_timestamp=datetime(2024, 2, 29, 23, 59, tzinfo=UTC) + timedelta(milliseconds=1001 * number),
        event_json=json.dumps({"n": number, "ключ": "значение"}, ensure_ascii=False),
        os_name=("android", "ios")[number % 2],
        mcc=250,
        mnc=number % 100,
    )
    return event


def _encode(event: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, SCHEMA, event)
    return buffer.getvalue()


def _key(message: Message) -> str:
    key = message.key()
    assert key is not None
    return key.decode()


def _position(message: Message) -> tuple[int, int]:
    partition, offset = message.partition(), message.offset()
    assert partition is not None
    assert offset is not None
    return partition, offset


def _decoded_by_key(messages: list[Message]) -> dict[str, dict[str, Any]]:
    decoded: dict[str, dict[str, Any]] = {}
    for message in messages:
        value = message.value()
        assert value is not None
        event = fastavro.schemaless_reader(io.BytesIO(value), SCHEMA, SCHEMA)
        assert isinstance(event, dict)
        decoded[_key(message)] = event
    return decoded


def _produce(bootstrap: str, topic: str, events: dict[str, dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Produce the events keyed by their dict keys; return each key's (partition, offset)."""
    placed: dict[str, tuple[int, int]] = {}
    failures: list[str] = []

    def on_delivery(error: Any, message: Message) -> None:
        if error is not None:
            failures.append(str(error))
        else:
            placed[_key(message)] = _position(message)

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for key, event in events.items():
        producer.produce(topic, key=key.encode(), value=_encode(event), on_delivery=on_delivery)
    assert producer.flush(30) == 0, "records still undelivered after 30s"
    assert failures == []
    return placed


def _consume(bootstrap: str, topic: str, group: str, count: int) -> list[Message]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: list[Message] = []
    deadline = time.monotonic() + 60
    try:
        while len(received) < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=0.5):
                assert message.error() is None, message.error()
                received.append(message)
        if received:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert len(received) == count, f"got {len(received)} of {count} records within 60s"
    return received


def test_avro_records_roundtrip_through_four_partitions(kafka_bootstrap: str, new_topic: TopicFactory) -> None:
    topic = new_topic(partitions=4)
    sent = {f"device-{number}": _event(number) for number in range(400)}

    placed = _produce(kafka_bootstrap, topic, sent)
    received = _consume(kafka_bootstrap, topic, f"roundtrip-{uuid.uuid4().hex}", len(sent))

    assert _decoded_by_key(received) == sent
    assert {_key(message): _position(message) for message in received} == placed
    assert {partition for partition, _ in placed.values()} == {0, 1, 2, 3}
    for partition in range(4):
        offsets = [offset for p, offset in map(_position, received) if p == partition]
        assert offsets == sorted(offsets), f"partition {partition} came back out of order"


def test_restart_keeps_topic_records_and_committed_offsets(
    owned_kafka_broker: LocalKafka, kafka_bootstrap: str, kafka_admin: AdminClient, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=2)
    sent = {f"device-{number}": _event(number) for number in range(50)}
    _produce(kafka_bootstrap, topic, sent)
    group = f"restart-{uuid.uuid4().hex}"
    _consume(kafka_bootstrap, topic, group, len(sent))

    pid_before = owned_kafka_broker.pid()
    owned_kafka_broker.restart()
    assert owned_kafka_broker.pid() not in (None, pid_before), "restart() did not replace the broker process"

    assert len(kafka_admin.list_topics(topic, timeout=30).topics[topic].partitions) == 2
    probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        committed = _committed_once_loaded(probe, [TopicPartition(topic, 0), TopicPartition(topic, 1)])
        ends = [probe.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in (0, 1)]
    finally:
        probe.close()
    assert [tp.offset for tp in committed] == ends
    assert sum(ends) == len(sent)
    again = _consume(kafka_bootstrap, topic, f"reread-{uuid.uuid4().hex}", len(sent))
    assert _decoded_by_key(again) == sent


_LOADING = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE}


def _committed_once_loaded(probe: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
    # A restarted broker reloads __consumer_offsets before it coordinates groups again, and says NOT_COORDINATOR
    # meanwhile; the more groups earlier tests left, the longer that takes.
    deadline = time.monotonic() + 60
    while True:
        try:
            committed: list[TopicPartition] = probe.committed(partitions, timeout=30)
            return committed
        except KafkaException as exc:
            if exc.args[0].code() not in _LOADING or time.monotonic() > deadline:
                raise
        time.sleep(0.5)
