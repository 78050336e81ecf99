"""CSV lines to micro-batches, one per method, application and header, cut at max rows, max bytes or linger."""

from __future__ import annotations

from collections.abc import Callable, Collection

from bridge.postapi.methods import MethodName
from bridge.runtime.ledger import Held

BatchKey = tuple[MethodName, int, bytes]
"""(method, application_id, CSV header line): lines share a request only when they share all three."""


class Batch:
    """CSV lines of one method, application and header bound for one request, with the records they came from."""

    __slots__ = ("application_id", "header", "judged", "lines", "method", "opened", "refs", "size")

    def __init__(self, method: MethodName, application_id: int, header: bytes, opened: float, judged: float) -> None:
        self.method = method
        self.application_id = application_id
        self.header = header
        self.opened = opened
        self.judged = judged
        """When its rows were last checked against the rules that time can break (an event's age)."""
        self.lines: list[bytes] = []
        self.refs: list[Held] = []
        self.size = len(header)
        """The body's size in bytes."""

    def body(self) -> bytes:
        return self.header + b"".join(self.lines)

    def split(self) -> tuple[Batch, Batch]:
        """Two halves, for isolating refused rows."""
        middle = len(self.lines) // 2
        halves = (
            Batch(self.method, self.application_id, self.header, self.opened, self.judged),
            Batch(self.method, self.application_id, self.header, self.opened, self.judged),
        )
        for half, part in zip(halves, (slice(None, middle), slice(middle, None)), strict=True):
            half.lines = self.lines[part]
            half.refs = self.refs[part]
            half.size += sum(map(len, half.lines))
        return halves

    def remove(self, positions: Collection[int]) -> list[Held]:
        """Take the rows at `positions` out of the batch; their records, in order."""
        if not positions:
            return []
        gone = [self.refs[p] for p in sorted(positions)]
        self.lines = [line for p, line in enumerate(self.lines) if p not in positions]
        self.refs = [ref for p, ref in enumerate(self.refs) if p not in positions]
        self.size = len(self.header) + sum(map(len, self.lines))
        return gone


class Batcher:
    """Open batches by method, application and header; `add` returns a full batch, `expired` those past linger."""

    def __init__(
        self, max_rows: int, max_bytes: int, linger_s: float, clock: Callable[[], float], wall: Callable[[], float]
    ) -> None:
        """`clock` is monotonic (linger), `wall` Unix time (when a batch's rows were judged)."""
        self._max_rows = max_rows
        self._max_bytes = max_bytes
        self._linger_s = linger_s
        self._clock = clock
        self._wall = wall
        self._open: dict[BatchKey, Batch] = {}

    def add(self, key: BatchKey, line: bytes, held: Held) -> Batch | None:
        """Put a line in its batch; return a batch that is now complete, if any.

        A body never passes max_bytes unless one line alone does: that line then goes in a request of its own.
        """
        size = len(line)
        cut = None
        batch = self._open.get(key)
        if batch is not None and batch.size + size > self._max_bytes:
            cut = self._open.pop(key)
            batch = None
        if batch is None:
            batch = self._open[key] = Batch(*key, self._clock(), self._wall())
        batch.lines.append(line)
        batch.refs.append(held)
        batch.size += size
        if len(batch.lines) >= self._max_rows:
            # Never both cuts at once: an open batch holds fewer than max_rows, so a byte cut
            # leaves a one-line batch here, which is full only when max_rows is 1 and nothing was open.
            return self._open.pop(key)
        return cut

    def expired(self) -> list[Batch]:
        """Batches whose first line waited `linger` or longer."""
        limit = self._clock() - self._linger_s
        ready = [key for key, batch in self._open.items() if batch.opened <= limit]
        return [self._open.pop(key) for key in ready]

    def drain(self) -> list[Batch]:
        """Every open batch, for shutdown and rebalances."""
        batches = list(self._open.values())
        self._open.clear()
        return batches

    @property
    def rows(self) -> int:
        """Rows in the open batches."""
        return sum(len(batch.lines) for batch in self._open.values())
