"""The ledger: the only code that changes offset state, and so the one owner of the commit rule.

A committed offset N means every record below N was accepted by the Post API (a 200) or acknowledged on the
dead-letter topic. Batches finish out of order and offsets are not consecutive (transaction markers,
compaction), so each partition keeps the offsets it was actually given, in order, and commits the contiguous done
prefix; once nothing is held, it commits the consumer's position, which steps over control records.

Hand-written because no library keeps this rule for us. The owner loop holds fetched records here and asks for
positions to commit; deliveries report outcomes here (`accepted`, `dead_lettered`, `halted`, `withdrawn`) and
change nothing themselves.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import structlog

from bridge.kafka.consumer import PartitionKey, Record
from bridge.ops.metrics import Metrics

log = structlog.get_logger("bridge.ledger")


class PartitionOffsets:
    """The offsets of one partition's records held by the bridge, in the order Kafka gave them.

    A record's reference is this object plus its offset, so an answer that arrives after the partition was revoked
    lands on a retired object and commits nothing.
    """

    __slots__ = (
        "_committed",
        "_done",
        "_let_go",
        "_pending",
        "_sent",
        "_start",
        "_through",
        "halted",
        "partition",
        "retired",
        "topic",
    )

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.retired = False
        """Revoked or lost: nothing of it commits here any more."""
        self.halted = False
        """A record could be neither delivered nor dead-lettered: nothing after it may commit."""
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._sent: set[int] = set()
        """Offsets whose rows went to the Post API and are not committable yet."""
        self._committed: int | None = None
        self._through: int | None = None
        """The last offset of the contiguous done prefix: everything up to it may be committed."""
        self._let_go = False
        self._start: int | None = None
        """Records were let go of untaken: the consumer's position is past records never done, so it never commits."""

    @property
    def key(self) -> PartitionKey:
        return (self.topic, self.partition)

    def add(self, offset: int) -> bool:
        """Hold a record just fetched; False (and nothing held) for an offset not after the last one held.

        librdkafka can fetch a stretch again after a broker restart; those records are already held here (or done
        and committed), so they are not taken twice.
        """
        if self._pending and offset <= self._pending[-1]:
            return False
        if self._committed is not None and offset < self._committed:
            return False
        self._pending.append(offset)
        if self._start is None:
            self._start = offset
        return True

    def done(self, offset: int) -> None:
        if not self.retired:
            self._done.add(offset)

    def settle(self) -> None:
        """Take the contiguous done prefix off the records held: committable from now on, unsettled no more."""
        pending, done, sent = self._pending, self._done, self._sent
        while pending and pending[0] in done:
            last = pending.popleft()
            done.discard(last)
            sent.discard(last)
            self._through = last

    def truncate(self, offset: int) -> int:
        """Stop holding `offset` and every later one: records fetched but let go of before they were taken. Returns
        how many of them had been sent."""
        pending, sent = self._pending, 0
        self._let_go = True
        while pending and pending[-1] >= offset:
            last = pending.pop()
            self._done.discard(last)
            if last in self._sent:
                self._sent.discard(last)
                sent += 1
        return sent

    def send(self, offset: int) -> None:
        if not self.halted:
            self._sent.add(offset)

    def is_head(self, offset: int) -> bool:
        """Whether `offset` is the oldest record held: the one the partition's commit waits for first."""
        return bool(self._pending) and self._pending[0] == offset

    @property
    def unsettled(self) -> int:
        """Rows sent and not committable yet; none once halted, since nothing of the partition commits any more."""
        return 0 if self.halted else len(self._sent)

    def advance(self, position: int | None) -> int | None:
        """The offset to commit now, if it moved: the last done offset of the contiguous prefix + 1, or, once
        nothing is held, the consumer's `position` (past transaction markers at the partition's end)."""
        self.settle()
        moved = None if self._through is None else self._through + 1
        if (
            not self._pending
            and not (self.halted or self._let_go)
            and position is not None
            and position > (moved or self._committed or 0)
        ):
            moved = position
        if moved is None or moved == self._committed:
            return None
        return moved

    def confirm(self, offset: int) -> None:
        """The group committed `offset`: `advance` hands it out again until then, so a refused commit is retried."""
        if self._committed is None or offset > self._committed:
            self._committed = offset

    @property
    def committed(self) -> int | None:
        """The last position the group confirmed committing."""
        return self._committed

    @property
    def lag_base(self) -> int | None:
        """Where the lag counts from: the last commit, or before any, the first record held."""
        return self._committed if self._committed is not None else self._start

    @property
    def idle(self) -> bool:
        """True when every held record is done (nothing in flight for this partition)."""
        return len(self._done) == len(self._pending)

    @property
    def held(self) -> int:
        return len(self._pending)


class Held(NamedTuple):
    """A record the bridge holds: its partition's offsets, its offset, the Kafka message and its value."""

    state: PartitionOffsets
    offset: int
    record: Any
    """Kept whole for the dead-letter topic (key, value and headers)."""
    value: bytes | None


_new_held = tuple.__new__


class Ledger:
    """Every assigned partition's offsets, and the records and bytes held across them."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.partitions: dict[PartitionKey, PartitionOffsets] = {}
        self.records = 0
        self.bytes = 0
        self.consumed = 0
        self._overshoot = False
        self.unsettled = 0
        """Rows sent to the Post API whose offsets cannot be committed yet: what a group change would send again."""
        self.progress = asyncio.Event()
        """Set (and replaced) whenever held records finish or positions advance: wait on the one read before a check."""

    # -- the owner loop's side ----------------------------------------------------------------------------------

    def assign(self, keys: Iterable[PartitionKey]) -> None:
        for topic, partition in keys:
            self.partitions[(topic, partition)] = PartitionOffsets(topic, partition)

    def retire(self, keys: Iterable[PartitionKey]) -> None:
        """Revoked or lost: forget these partitions; an answer for their records commits nothing any more."""
        for key in keys:
            state = self.partitions.pop(key, None)
            if state is not None:
                state.retired = True
                self.unsettled -= state.unsettled
        self._notify()

    def hold(self, records: Sequence[Record]) -> list[Held]:
        """Track fetched records; skip those already held (a stretch fetched again) and those of partitions not
        assigned here (fetched across a revoke): they must never commit here."""
        partitions = self.partitions
        held = []
        size = 0
        for record in records:
            state = partitions.get((record.topic(), record.partition()))
            if state is None:
                continue
            offset = record.offset()
            if state.add(offset):
                value = record.value()
                # tuple.__new__ skips the NamedTuple's Python-level __new__: this runs for every record.
                held.append(_new_held(Held, (state, offset, record, value)))
                size += len(value) if value else 0
        if len(held) < len(records):
            log.info("records fetched again, or of partitions not assigned, skipped", records=len(records) - len(held))
        self.records += len(held)
        self.bytes += size
        self.consumed += len(held)
        for topic, count in Counter(h.state.topic for h in held).items():
            self._metrics.records_consumed.labels(topic).inc(count)
        self._observe()
        return held

    def let_go(self, items: Sequence[Held]) -> None:
        """Stop holding records that will not be taken: each partition's newest, so its offsets end before them."""
        for item in items:
            if not item.state.retired:
                self.unsettled -= item.state.truncate(item.offset)
        self._release(items)

    def confirm(self, committed: Mapping[PartitionKey, int]) -> None:
        """The group committed these positions (those `advance` handed out and the consumer's commit took)."""
        for key, offset in committed.items():
            state = self.partitions.get(key)
            if state is not None:
                state.confirm(offset)

    def advance(self, positions: Mapping[PartitionKey, int]) -> dict[PartitionKey, int]:
        """The positions to commit now, partition by partition; `positions` are the consumer's. Each is handed out
        again until `confirm` says the group took it."""
        moved = {}
        unsettled = 0
        for key, state in self.partitions.items():
            position = state.advance(positions.get(key))
            if position is not None:
                moved[key] = position
            unsettled += state.unsettled
        if unsettled != self.unsettled:
            self.unsettled = unsettled
            self._notify()
        return moved

    # -- the send window ----------------------------------------------------------------------------------------

    async def admit(self, items: Sequence[Held], window: int) -> bool:
        """Wait until these rows may go to the Post API, then count them as sent; True when they go as the one batch
        allowed past the window, which the caller ends with `end_overshoot` once its delivery is over.

        Rows sent and not yet committable are what a group change (a rebalance, a crash, a restart) sends again:
        they may number at most `window`. Past it, one batch at a time may still go if it holds the oldest record of
        a partition, whose delivery is what lets the others commit: so the window never waits on itself, and a group
        change sends at most `window` plus one batch again.
        """
        # Each partition's first row in the batch: the only one of it that can be its partition's oldest record.
        firsts: dict[int, tuple[PartitionOffsets, int]] = {}
        for item in items:
            firsts.setdefault(id(item.state), (item.state, item.offset))
        while True:
            # Rows of partitions revoked meanwhile never count: a batch they emptied goes at once, to end.
            if self.unsettled + sum(not item.state.retired for item in items) <= window:
                overshoot = False
                break
            if not self._overshoot and any(state.is_head(offset) for state, offset in firsts.values()):
                overshoot = self._overshoot = True
                break
            await self.progress.wait()
        sent = 0
        for item in items:
            if not item.state.retired:
                item.state.send(item.offset)
                sent += 1
        self.unsettled += sent
        return overshoot

    def end_overshoot(self) -> None:
        self._overshoot = False
        self._notify()

    # -- what deliveries report ---------------------------------------------------------------------------------

    def accepted(self, items: Sequence[Held]) -> None:
        """Answered 200."""
        self._done(items)

    def dead_lettered(self, items: Sequence[Held]) -> None:
        """Acknowledged on the dead-letter topic."""
        self._done(items)

    def halted(self, items: Sequence[Held]) -> list[PartitionOffsets]:
        """Neither deliverable nor dead-lettered (no dead-letter topic): their partitions stop committing. Returns the
        partitions halted just now."""
        newly = []
        for item in items:
            if not item.state.halted:
                self.unsettled -= item.state.unsettled
                item.state.halted = True
                newly.append(item.state)
        self._release(items)
        return newly

    def withdrawn(self, items: Sequence[Held]) -> None:
        """Left their batch because their partition was revoked: the new owner sends them."""
        self._release(items)

    def _done(self, items: Sequence[Held]) -> None:
        for item in items:
            item.state.done(item.offset)
        self._release(items)

    def _release(self, items: Iterable[Held]) -> None:
        count = size = 0
        for item in items:
            count += 1
            size += len(item.value) if item.value else 0
        self.records -= count
        self.bytes -= size
        self._observe()
        self._notify()

    def _notify(self) -> None:
        self.progress.set()
        self.progress = asyncio.Event()

    def _observe(self) -> None:
        self._metrics.held_records.set(self.records)
        self._metrics.held_bytes.set(self.bytes)
