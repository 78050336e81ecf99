"""What the sandbox has seen and kept: accepted events, a log of requests, counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


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
    events: list[dict[str, str]] = field(default_factory=list)
    """Accepted events in arrival order: column -> value as received, empty cells omitted."""
    requests: list[RequestRecord] = field(default_factory=list)
    by_status: Counter[int] = field(default_factory=Counter)
    dropped: int = 0
    rows_accepted: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0

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
            "events_kept": len(self.events),
            "in_flight": self.in_flight,
            "peak_concurrency": self.peak_in_flight,
        }

    def clear(self) -> None:
        """Forget everything seen; requests still in flight stay counted as such."""
        self.events.clear()
        self.requests.clear()
        self.by_status.clear()
        self.dropped = self.rows_accepted = 0
        self.peak_in_flight = self.in_flight
