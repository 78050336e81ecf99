"""The real broker from a test's side: producing, reading to the end offsets, and the committed-offsets probe."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    Message,
    Producer,
    TopicPartition,
)

# These admin types are documented in confluent_kafka.admin, which re-exports them without listing them as public.
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

NO_OFFSET = -1001
"""What the probe reports for a partition the group never committed (librdkafka's OFFSET_INVALID)."""


class TopicFactory(Protocol):
    def __call__(self, partitions: int = 4) -> str: ...


def produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes | None],
    partitions: int = 4,
    headers: list[tuple[str, str | bytes | None]] | None = None,
) -> None:
    """Write values round-robin over the partitions, keyed by index, and wait for every ack."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    failures: list[str] = []

    def delivered(error: Any, _: Any) -> None:
        if error is not None:
            failures.append(str(error))

    for index, value in enumerate(values):
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=str(index).encode(),
                    partition=index % partitions,
                    headers=headers,
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(60)
    assert remaining == 0 and not failures, f"produce failed: {failures[:3]} ({remaining} unsent)"


class OffsetsProbe:
    """End and committed offsets through one long-lived admin client per broker.

    A consumer built per question (as tests did every 0.2 s) costs a connection and a coordinator lookup each
    time, on the event loop that also serves the in-process sandbox; an admin request costs one round trip.
    """

    def __init__(self, bootstrap: str) -> None:
        self.admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})

    def end_offsets(self, topic: str, partitions: int = 4) -> dict[int, int]:
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        asked = {TopicPartition(topic, p): latest for p in range(partitions)}
        answers = self.admin.list_offsets(asked, request_timeout=10)
        return {tp.partition: future.result(timeout=10).offset for tp, future in answers.items()}

    def committed(self, group: str, topic: str, partitions: int = 4) -> dict[int, int]:
        """The group's committed offset per partition; NO_OFFSET where it committed none."""
        asked = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
        (future,) = self.admin.list_consumer_group_offsets([asked], request_timeout=10).values()
        found = future.result(timeout=10).topic_partitions
        return {tp.partition: tp.offset for tp in found}

    def at_end(self, group: str, topic: str, partitions: int = 4) -> bool:
        """Committed == end on every partition; a partition that never had a record has nothing to commit."""
        ends = self.end_offsets(topic, partitions)
        done = self.committed(group, topic, partitions)
        return all(done[p] == end or (end == 0 and done[p] < 0) for p, end in ends.items())


@functools.cache
def probe(bootstrap: str) -> OffsetsProbe:
    """The one probe of a broker, made on first use and kept for the process's life."""
    return OffsetsProbe(bootstrap)


def end_offsets(bootstrap: str, topic: str, partitions: int = 4) -> dict[int, int]:
    return probe(bootstrap).end_offsets(topic, partitions)


def committed(bootstrap: str, group: str, topic: str, partitions: int = 4) -> dict[int, int]:
    return probe(bootstrap).committed(group, topic, partitions)


def read_to_end(bootstrap: str, topic: str, timeout_s: float = 30) -> list[Message]:
    """Every record of `topic` up to the end offsets it has now, in partition order.

    What a test asserts is absent, it asserts over this: the end offsets say when everything has been read,
    so no sleep has to guess how long an unwanted record would take to show up.
    """
    metadata = probe(bootstrap).admin.list_topics(topic, timeout=10).topics[topic]
    partitions = sorted(metadata.partitions)
    ends = end_offsets(bootstrap, topic, len(partitions))
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}", "enable.auto.commit": False}
    )
    records: list[Message] = []
    assigned = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions if ends[p] > 0]
    try:
        consumer.assign(assigned)
        deadline = time.monotonic() + timeout_s
        # The consumer's position, not the last record's offset: it also passes transaction markers.
        while any(tp.offset < ends[tp.partition] for tp in consumer.position(assigned)):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: not read to its end offsets {ends} within {timeout_s:g} s")
            for message in consumer.consume(500, 0.2):
                partition, offset = message.partition(), message.offset()
                if (
                    message.error() is None
                    and partition is not None
                    and offset is not None
                    and offset < ends[partition]
                ):
                    records.append(message)
    finally:
        consumer.close()
    return sorted(records, key=lambda m: (m.partition(), m.offset()))


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30) -> list[Any]:
    """Every record of a topic from the start, waiting until `expected` arrived or the timeout."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            records += [m for m in consumer.consume(500, 0.5) if m.error() is None]
    finally:
        consumer.close()
    return records


def wait_for_leaders(admin: AdminClient, topic: str, partitions: int) -> None:
    # create_topics() answers once the controller accepted the topic; a client that starts right after
    # could still see no leader and, with auto-creation off, report the topic as unknown.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metadata = admin.list_topics(topic, timeout=10).topics[topic]
        leaders = [partition.leader for partition in metadata.partitions.values()]
        if metadata.error is None and len(leaders) == partitions and min(leaders) >= 0:
            return
        time.sleep(0.05)
    raise TimeoutError(f"topic {topic} has no leader for every partition after 30s")


def headers_of(record: Message) -> dict[str, Any]:
    return dict(record.headers() or [])
