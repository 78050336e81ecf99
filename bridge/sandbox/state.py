"""What the sandbox has seen and kept: accepted rows by method, a log of requests, counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bridge.postapi.methods import METHODS, MethodName


def _by_method() -> dict[MethodName, list[dict[str, str]]]:
    return {name: [] for name in METHODS}


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One import request as the sandbox answered it."""

    arrived: float
    """time.monotonic() when the request reached the handler."""
    answered: float
    """time.monotonic() when the answer was made (or the connection dropped)."""
    path: str
    rows: int
    """Events the request carried (0 when its body could not be read as events)."""
    status: int | None
    """None when the connection was dropped unanswered."""
    retry_after: int | None
    detail: str


@dataclass(slots=True)
class SandboxState:
    kept: dict[MethodName, list[dict[str, str]]] = field(default_factory=_by_method)
    """Accepted rows of each method in arrival order: column -> value as received, empty cells omitted."""
    requests: list[RequestRecord] = field(default_factory=list)
    by_status: Counter[int] = field(default_factory=Counter)
    dropped: int = 0
    rows_accepted: int = 0
    accepted_by_method: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    peak_in_flight: int = 0

    @property
    def events(self) -> list[dict[str, str]]:
        """The accepted rows of the events method."""
        return self.kept["events"]

    def accept(self, method: MethodName, count: int, rows: list[dict[str, str]] | None) -> None:
        """Count ``count`` accepted rows of ``method``, keeping ``rows`` unless None (counters only)."""
        if rows is not None:
            self.kept[method].extend(rows)
        self.rows_accepted += count
        self.accepted_by_method[method] += count

    def record(self, entry: RequestRecord) -> None:
        self.requests.append(entry)
        if entry.status is None:
            self.dropped += 1
        else:
            self.by_status[entry.status] += 1

    def stats(self) -> dict[str, object]:
        return {
            "requests": len(self.requests),
            "by_status": {str(status): count for status, count in sorted(self.by_status.items())},
            "dropped": self.dropped,
            "rows_accepted": self.rows_accepted,
            "rows_by_method": {name: self.accepted_by_method[name] for name in METHODS},
            "events_kept": len(self.events),
            "kept_by_method": {name: len(rows) for name, rows in self.kept.items()},
            "in_flight": self.in_flight,
            "peak_concurrency": self.peak_in_flight,
        }

    def clear(self) -> None:
        """Forget everything seen; requests still in flight stay counted as such."""
        for rows in self.kept.values():
            rows.clear()
        self.accepted_by_method.clear()
        self.requests.clear()
        self.by_status.clear()
        self.dropped = self.rows_accepted = 0
        self.peak_in_flight = self.in_flight
