"""The commit-order tracker: which offset of each partition may be committed.

Hand-written because no library keeps our rule: a committed offset N means every record below N was
accepted by the Post API or acknowledged on the dead-letter topic. Batches finish out of order and offsets
are not consecutive (transaction markers, compaction), so each partition keeps the offsets it was actually
given, in order, and commits the contiguous done prefix.
"""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    """The offsets of one partition's records held by the bridge, in the order Kafka gave them.

    A record's reference is this object plus its offset, so an answer that arrives after the partition
    was revoked lands on a retired object and commits nothing.
    """

    __slots__ = ("_committed", "_done", "_pending", "halted", "partition", "retired", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.retired = False
        self.halted = False
        """Set when a record can be neither delivered nor dead-lettered: nothing after it may commit."""
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._committed: int | None = None

    def add(self, offset: int) -> bool:
        """Hold a record just fetched; False (and nothing held) for an offset not after the last one held.

        librdkafka can fetch a stretch again after a broker restart; those records are already held here
        (or done and committed), so they are not taken twice.
        """
        if self._pending and offset <= self._pending[-1]:
            return False
        if self._committed is not None and offset < self._committed:
            return False
        self._pending.append(offset)
        return True

    def done(self, offset: int) -> None:
        """Mark a held record safe (answered 200 or dead-lettered). Ignored once the partition is retired."""
        if not self.retired:
            self._done.add(offset)

    def truncate(self, offset: int) -> None:
        """Stop holding `offset` and every later one: records fetched but let go of before they were taken."""
        pending = self._pending
        while pending and pending[-1] >= offset:
            self._done.discard(pending.pop())

    def commit_position(self) -> int | None:
        """The offset to commit now (last done offset of the contiguous prefix + 1), if it moved since the last call."""
        pending, done = self._pending, self._done
        last = None
        while pending and pending[0] in done:
            last = pending.popleft()
            done.discard(last)
        if last is None:
            return None
        self._committed = last + 1
        return self._committed

    @property
    def committed(self) -> int | None:
        """The last position `commit_position` handed out."""
        return self._committed

    @property
    def idle(self) -> bool:
        """True when every held record is done (nothing in flight for this partition)."""
        return len(self._done) == len(self._pending)
