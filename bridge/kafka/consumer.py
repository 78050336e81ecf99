"""The consumer seam: exactly what the owner loop needs from Kafka, and nothing else.

Implemented by `bridge.kafka.source` (confluent-kafka, the real thing) and `bridge.kafka.memory` (an in-memory
broker for tests); `tests/test_consumer_contract.py` holds both to the same behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

PartitionKey = tuple[str, int]
"""(topic, partition)."""

Headers = list[tuple[str, bytes | None]]


class Record(Protocol):
    """A fetched record, as confluent-kafka's `Message` presents it."""

    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> Headers | None: ...


class RebalanceListener(Protocol):
    """Called inside `Consumer.fetch`, on the owner loop, as the group changes."""

    async def assigned(self, partitions: Sequence[PartitionKey]) -> None: ...
    async def revoked(self, partitions: Sequence[PartitionKey]) -> None: ...
    async def lost(self, partitions: Sequence[PartitionKey]) -> None: ...


class Consumer(Protocol):
    async def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None: ...

    async def fetch(self, max_records: int, timeout_s: float) -> Sequence[Record]:
        """Up to `max_records` records, waiting at most `timeout_s`; rebalance callbacks run in here."""
        ...

    async def pause(self, partitions: Sequence[PartitionKey]) -> None: ...
    async def resume(self, partitions: Sequence[PartitionKey]) -> None: ...

    async def commit(self, positions: Mapping[PartitionKey, int]) -> bool:
        """Commit synchronously; False when Kafka refused (mid-rebalance, the member fenced)."""
        ...

    async def positions(self, partitions: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        """The next offset each partition would fetch: past control records (transaction markers)."""
        ...

    async def high_watermarks(self, partitions: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        """The end offset of each partition, as last seen (no round trip where the client caches it)."""
        ...

    async def reachable(self) -> bool:
        """Whether the cluster answers a metadata request now."""
        ...

    async def close(self) -> None:
        """Leave the group; the revoke callback of what is still assigned runs in here."""
        ...
