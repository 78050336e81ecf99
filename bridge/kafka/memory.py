"""An in-memory Kafka for tests: topics, partitions, consumer groups with cooperative rebalancing, commits.

It implements `bridge.kafka.consumer.Consumer` and passes the same contract tests as the confluent-kafka source,
so the runtime's timing rules can be tested in milliseconds, under a fast-forwarding event loop, with no broker.
Modelled on getsentry/arroyo's `LocalBroker`. Rebalancing is cooperative, as the bridge configures the real
client: a partition moves in two steps, revoked from its owner on the owner's next fetch, then assigned to its new
member on that member's next fetch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bridge.kafka.consumer import Headers, PartitionKey, RebalanceListener


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _headers: Headers | None
    control: bool = False
    """A transaction marker: it takes an offset, and no consumer is ever handed it."""

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> Headers | None:
        return self._headers


@dataclass
class _Group:
    members: list[MemoryConsumer] = field(default_factory=list)
    owner: dict[PartitionKey, MemoryConsumer] = field(default_factory=dict)
    committed: dict[PartitionKey, int] = field(default_factory=dict)


class KafkaDownError(Exception):
    """The in-memory broker was taken down by the test."""


class MemoryBroker:
    def __init__(self) -> None:
        self._logs: dict[str, list[list[MemoryRecord]]] = {}
        self._groups: dict[str, _Group] = {}
        self.up = True
        """False: fetches return nothing, commits fail and `reachable()` says no, as in an outage."""
        self.produced = asyncio.Event()

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        self._logs[topic] = [[] for _ in range(partitions)]

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers | None = None,
        partition: int = 0,
    ) -> int:
        log = self._logs[topic][partition]
        log.append(MemoryRecord(topic, partition, len(log), key, value, headers))
        self.produced.set()
        return len(log) - 1

    def produce_marker(self, topic: str, partition: int = 0) -> int:
        """A transaction's commit marker, as a transactional producer leaves after its records."""
        log = self._logs[topic][partition]
        log.append(MemoryRecord(topic, partition, len(log), None, None, None, control=True))
        return len(log) - 1

    def end_offset(self, key: PartitionKey) -> int:
        return len(self._logs[key[0]][key[1]])

    def records(self, topic: str) -> list[MemoryRecord]:
        """Every data record of `topic`, partition by partition."""
        return [r for log in self._logs[topic] for r in log if not r.control]

    def committed(self, group: str) -> dict[PartitionKey, int]:
        return dict(self._group(group).committed)

    def partitions_of(self, topics: Sequence[str]) -> list[PartitionKey]:
        return [(t, p) for t in topics for p in range(len(self._logs.get(t, [])))]

    def expel(self, consumer: MemoryConsumer) -> None:
        """The group gives up on `consumer` (its session timed out): its partitions go to the others at once, and it
        is told they are lost on its next fetch."""
        group = self._group(consumer.group_id)
        if consumer in group.members:
            group.members.remove(consumer)
        for key, owner in list(group.owner.items()):
            if owner is consumer:
                del group.owner[key]
                consumer.lost_pending.append(key)

    def _group(self, group_id: str) -> _Group:
        return self._groups.setdefault(group_id, _Group())

    def _log(self, key: PartitionKey) -> list[MemoryRecord]:
        return self._logs[key[0]][key[1]]

    def _target(self, group: _Group, consumer: MemoryConsumer) -> set[PartitionKey]:
        """Round robin over the members in joining order: the partitions `consumer` should own."""
        topics = sorted({t for m in group.members for t in m.topics})
        keys = self.partitions_of(topics)
        if consumer not in group.members:
            return set()
        index, count = group.members.index(consumer), len(group.members)
        return {key for n, key in enumerate(keys) if n % count == index and key[0] in consumer.topics}


class MemoryConsumer:
    """One member of a consumer group on a `MemoryBroker`."""

    def __init__(self, broker: MemoryBroker, group_id: str) -> None:
        self._broker = broker
        self.group_id = group_id
        self.topics: list[str] = []
        self._listener: RebalanceListener | None = None
        self._positions: dict[PartitionKey, int] = {}
        self._paused: set[PartitionKey] = set()
        self.lost_pending: list[PartitionKey] = []
        self.commits: list[tuple[float, dict[PartitionKey, int]]] = []
        """Every commit this member asked for (refused ones included), with the loop time it asked at."""

    @property
    def assignment(self) -> set[PartitionKey]:
        return set(self._positions)

    @property
    def paused(self) -> set[PartitionKey]:
        return set(self._paused)

    async def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self.topics = list(topics)
        self._listener = listener
        self._broker._group(self.group_id).members.append(self)

    async def fetch(self, max_records: int, timeout_s: float) -> list[MemoryRecord]:
        await self._rebalance()
        records = self._take(max_records)
        if not records:
            self._broker.produced.clear()
            try:
                await asyncio.wait_for(self._broker.produced.wait(), timeout_s)
            except TimeoutError:
                return []
            records = self._take(max_records)
        return records

    def _take(self, max_records: int) -> list[MemoryRecord]:
        if not self._broker.up:
            return []
        records: list[MemoryRecord] = []
        for key in sorted(self._positions):
            if key in self._paused:
                continue
            log = self._broker._log(key)
            position = self._positions[key]
            while position < len(log) and len(records) < max_records:
                if not log[position].control:
                    records.append(log[position])
                position += 1
            self._positions[key] = position
        return records

    async def _rebalance(self) -> None:
        assert self._listener is not None, "subscribe first"
        broker, group = self._broker, self._broker._group(self.group_id)
        if self.lost_pending:
            lost, self.lost_pending = self.lost_pending, []
            for key in lost:
                self._positions.pop(key, None)
                self._paused.discard(key)
            await self._listener.lost(lost)
        target = broker._target(group, self)
        revoke = sorted(k for k in self._positions if k not in target)
        if revoke:
            await self._listener.revoked(revoke)
            for key in revoke:
                self._positions.pop(key)
                self._paused.discard(key)
                group.owner.pop(key, None)
        assign = sorted(k for k in target if k not in self._positions and k not in group.owner)
        if assign:
            for key in assign:
                group.owner[key] = self
                self._positions[key] = group.committed.get(key, 0)
            await self._listener.assigned(assign)

    async def pause(self, partitions: Sequence[PartitionKey]) -> None:
        self._paused.update(p for p in partitions if p in self._positions)

    async def resume(self, partitions: Sequence[PartitionKey]) -> None:
        self._paused.difference_update(partitions)

    async def commit(self, positions: Mapping[PartitionKey, int]) -> bool:
        group = self._broker._group(self.group_id)
        self.commits.append((asyncio.get_running_loop().time(), dict(positions)))
        if not self._broker.up or any(group.owner.get(key) is not self for key in positions):
            return False
        group.committed.update(positions)
        return True

    async def positions(self, partitions: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        found = {}
        for key in partitions:
            if key in self._positions:
                position = self._positions[key]
                log = self._broker._log(key)
                # librdkafka steps over a marker once it fetched past it: so does the position here.
                while position < len(log) and log[position].control:
                    position += 1
                found[key] = position
        return found

    async def high_watermarks(self, partitions: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        return {key: self._broker.end_offset(key) for key in partitions}

    async def reachable(self) -> bool:
        return self._broker.up

    async def close(self) -> None:
        group = self._broker._group(self.group_id)
        owned = sorted(self._positions)
        if owned and self._listener is not None:
            await self._listener.revoked(owned)
        for key in owned:
            group.owner.pop(key, None)
        self._positions.clear()
        if self in group.members:
            group.members.remove(self)
