"""Rows to per-application micro-batches, cut at max rows, max bytes or linger after the first row."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

from bridge.offsets import PartitionOffsets
from bridge.rows import Row, Values

ROW_OVERHEAD = 48
"""Bytes a CSV row may take beyond its Avro value: separators, quotes, integers as text."""


class Held(NamedTuple):
    """A record the bridge holds: its partition's tracker, its offset, the Kafka message and its value."""

    state: PartitionOffsets
    offset: int
    record: Any
    """Kept whole for the dead-letter topic (key, value and headers)."""
    value: bytes | None


class Batch:
    """Rows of one application bound for one request, with the records they came from."""

    __slots__ = ("application_id", "opened", "refs", "rows", "size")

    def __init__(self, application_id: int, opened: float) -> None:
        self.application_id = application_id
        self.opened = opened
        self.rows: list[Values] = []
        self.refs: list[Held] = []
        self.size = 0

    def split(self) -> tuple[Batch, Batch]:
        """Two halves, for isolating refused rows or for a body over the byte limit."""
        middle = len(self.rows) // 2
        halves = (Batch(self.application_id, self.opened), Batch(self.application_id, self.opened))
        for half, part in zip(halves, (slice(None, middle), slice(middle, None)), strict=True):
            half.rows = self.rows[part]
            half.refs = self.refs[part]
        return halves


class Batcher:
    """Open batches by application; `add` returns a batch when it is full, `expired` those past linger."""

    def __init__(
        self, max_rows: int, max_bytes: int, linger_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_rows = max_rows
        self._max_bytes = max_bytes
        self._linger_s = linger_s
        self._clock = clock
        self._open: dict[int, Batch] = {}

    def add(self, row: Row, held: Held) -> Batch | None:
        """Put a row in its application's batch; return a batch that is now complete, if any."""
        # A cheap estimate from the Avro value; the encoded body is checked against the limit again.
        value = held.value
        size = (len(value) if value else 0) + ROW_OVERHEAD
        app = row.application_id
        cut = None
        batch = self._open.get(app)
        if batch is not None and batch.size + size > self._max_bytes:
            cut = self._open.pop(app)
            batch = None
        if batch is None:
            batch = self._open[app] = Batch(app, self._clock())
        batch.rows.append(row.values)
        batch.refs.append(held)
        batch.size += size
        if len(batch.rows) >= self._max_rows:
            # Never both cuts at once: an open batch holds fewer than max_rows, so a byte cut
            # leaves a one-row batch here, which is full only when max_rows is 1 and nothing was open.
            return self._open.pop(app)
        return cut

    def expired(self) -> list[Batch]:
        """Batches whose first row waited `linger` or longer."""
        limit = self._clock() - self._linger_s
        ready = [app for app, batch in self._open.items() if batch.opened <= limit]
        return [self._open.pop(app) for app in ready]

    def drain(self) -> list[Batch]:
        """Every open batch, for shutdown and rebalances."""
        batches = list(self._open.values())
        self._open.clear()
        return batches

    def next_deadline(self) -> float | None:
        """When the oldest open batch's linger ends, on the batcher's clock."""
        if not self._open:
            return None
        return min(batch.opened for batch in self._open.values()) + self._linger_s

    @property
    def rows(self) -> int:
        return sum(len(batch.rows) for batch in self._open.values())
