"""The consumer seam's contract: the confluent-kafka source on the real broker and the in-memory broker pass the same
tests, so what the runtime's loop-time tests show of the in-memory one holds for Kafka."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pytest
from confluent_kafka import Producer

from bridge.config.model import KafkaConfig
from bridge.kafka.consumer import Consumer, PartitionKey, Record
from bridge.kafka.memory import MemoryBroker, MemoryConsumer
from bridge.kafka.source import Source
from devtools.testkit.kafka import TopicFactory

PARTITIONS = 2


class Cluster(Protocol):
    topic: str

    def produce(self, values: Sequence[bytes], partition: int) -> None: ...
    def produce_in_transaction(self, values: Sequence[bytes], partition: int) -> None: ...
    def consumer(self, group: str) -> Consumer: ...


@dataclass
class InMemory:
    broker: MemoryBroker
    topic: str = "contract"

    def produce(self, values: Sequence[bytes], partition: int) -> None:
        for value in values:
            self.broker.produce(self.topic, value, partition=partition)

    def produce_in_transaction(self, values: Sequence[bytes], partition: int) -> None:
        self.produce(values, partition)
        self.broker.produce_marker(self.topic, partition)

    def consumer(self, group: str) -> Consumer:
        return MemoryConsumer(self.broker, group)


@dataclass
class RealKafka:
    bootstrap: str
    topic: str

    def produce(self, values: Sequence[bytes], partition: int) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap})
        for value in values:
            producer.produce(self.topic, value, partition=partition)
        producer.flush(30)

    def produce_in_transaction(self, values: Sequence[bytes], partition: int) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "transactional.id": uuid.uuid4().hex})
        producer.init_transactions(30)
        producer.begin_transaction()
        for value in values:
            producer.produce(self.topic, value, partition=partition)
        producer.commit_transaction(30)

    def consumer(self, group: str) -> Consumer:
        async def on_error(_: object) -> None:
            return None

        return Source(KafkaConfig(bootstrap_servers=self.bootstrap, topics=[self.topic], group_id=group), on_error)


@dataclass
class Listener:
    assigned: list[PartitionKey] = field(default_factory=list)
    revoked: list[PartitionKey] = field(default_factory=list)

    async def on_assigned(self, keys: Sequence[PartitionKey]) -> None:
        self.assigned.extend(keys)

    async def on_revoked(self, keys: Sequence[PartitionKey]) -> None:
        self.revoked.extend(keys)

    @property
    def owned(self) -> set[PartitionKey]:
        return set(self.assigned) - set(self.revoked)


class _Relay:
    def __init__(self, listener: Listener) -> None:
        self._listener = listener

    async def assigned(self, keys: Sequence[PartitionKey]) -> None:
        await self._listener.on_assigned(keys)

    async def revoked(self, keys: Sequence[PartitionKey]) -> None:
        await self._listener.on_revoked(keys)

    async def lost(self, keys: Sequence[PartitionKey]) -> None:
        await self._listener.on_revoked(keys)


async def subscribed(cluster: Cluster, group: str) -> tuple[Consumer, Listener]:
    consumer, listener = cluster.consumer(group), Listener()
    await consumer.subscribe([cluster.topic], _Relay(listener))
    return consumer, listener


async def fetch_until(consumer: Consumer, count: int, timeout_s: float = 30) -> list[Record]:
    records: list[Record] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(records) < count and asyncio.get_running_loop().time() < deadline:
        records.extend(await consumer.fetch(1000, 0.2))
    return records


async def fetch_until_assigned(consumer: Consumer, listener: Listener, timeout_s: float = 30) -> None:
    """Fetch (nothing is produced yet) until the group assigned every partition: the assignment comes with fetching."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(listener.owned) < PARTITIONS and asyncio.get_running_loop().time() < deadline:
        await consumer.fetch(1000, 0.1)


class ContractTests:
    """Run once per implementation: each subclass provides `cluster`."""

    async def test_records_come_in_offset_order_and_a_commit_is_where_the_group_resumes(self, cluster: Cluster) -> None:
        cluster.produce([f"{n}".encode() for n in range(10)], partition=0)
        cluster.produce([f"{n}".encode() for n in range(5)], partition=1)
        group = f"contract-{uuid.uuid4().hex[:8]}"
        consumer, listener = await subscribed(cluster, group)
        records = await fetch_until(consumer, 15)
        assert sorted(listener.owned) == [(cluster.topic, 0), (cluster.topic, 1)]
        by_partition = {p: [r.offset() for r in records if r.partition() == p] for p in (0, 1)}
        assert by_partition == {0: list(range(10)), 1: list(range(5))}
        assert await consumer.high_watermarks([(cluster.topic, 0), (cluster.topic, 1)]) == {
            (cluster.topic, 0): 10,
            (cluster.topic, 1): 5,
        }
        assert await consumer.commit({(cluster.topic, 0): 7, (cluster.topic, 1): 5})
        await consumer.close()
        again, _ = await subscribed(cluster, group)
        resumed = await fetch_until(again, 3)
        assert sorted((r.partition(), r.offset()) for r in resumed) == [(0, 7), (0, 8), (0, 9)]
        await again.close()

    async def test_the_position_steps_past_a_transaction_marker(self, cluster: Cluster) -> None:
        cluster.produce_in_transaction([b"a", b"b", b"c"], partition=0)
        consumer, _ = await subscribed(cluster, f"contract-{uuid.uuid4().hex[:8]}")
        records = await fetch_until(consumer, 3)
        assert [r.offset() for r in records] == [0, 1, 2]
        key = (cluster.topic, 0)
        end = (await consumer.high_watermarks([key]))[key]
        assert end == 4, "three records and the commit marker"
        position: dict[PartitionKey, int] = {}
        for _ in range(50):
            position = await consumer.positions([key])
            if position.get(key) == end:
                break
            await consumer.fetch(10, 0.1)
        assert position == {key: end}
        await consumer.close()

    async def test_a_paused_partition_gives_nothing_until_resumed(self, cluster: Cluster) -> None:
        consumer, listener = await subscribed(cluster, f"contract-{uuid.uuid4().hex[:8]}")
        await fetch_until_assigned(consumer, listener)
        assert len(listener.owned) == PARTITIONS, "assigned before producing"
        await consumer.pause([(cluster.topic, 0)])
        cluster.produce([b"x"] * 3, partition=0)
        cluster.produce([b"y"] * 3, partition=1)
        records = await fetch_until(consumer, 3, timeout_s=10)
        # Read to partition 1's end: partition 0's records, though written first, never came.
        assert {r.partition() for r in records} == {1}
        await consumer.resume([(cluster.topic, 0)])
        records = await fetch_until(consumer, 3)
        assert [(r.partition(), r.offset()) for r in records] == [(0, 0), (0, 1), (0, 2)]
        await consumer.close()

    async def test_a_member_joining_takes_partitions_from_the_first_after_it_revoked_them(
        self, cluster: Cluster
    ) -> None:
        group = f"contract-{uuid.uuid4().hex[:8]}"
        first, first_seen = await subscribed(cluster, group)
        await fetch_until_assigned(first, first_seen)
        assert len(first_seen.owned) == PARTITIONS
        second, second_seen = await subscribed(cluster, group)
        for _ in range(100):
            await asyncio.gather(first.fetch(10, 0.1), second.fetch(10, 0.1))
            if second_seen.owned and len(first_seen.owned) + len(second_seen.owned) == PARTITIONS:
                break
        assert second_seen.owned and first_seen.revoked == sorted(second_seen.owned)
        assert first_seen.owned.isdisjoint(second_seen.owned)
        await second.close()
        assert second_seen.revoked and not second_seen.owned, "closing revokes what is still assigned"
        await first.close()


class TestInMemory(ContractTests):
    @pytest.fixture
    def cluster(self) -> Cluster:
        broker = MemoryBroker()
        broker.create_topic("contract", PARTITIONS)
        return InMemory(broker)


class TestConfluentOnRealKafka(ContractTests):
    @pytest.fixture
    def cluster(self, kafka_bootstrap: str, new_topic: TopicFactory) -> Cluster:
        return RealKafka(kafka_bootstrap, new_topic(PARTITIONS))
