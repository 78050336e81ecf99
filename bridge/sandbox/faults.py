"""Deciding, per request, whether the sandbox misbehaves instead of answering."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from bridge.sandbox.config import Faults

_SERVER_ERRORS = (500, 502, 503)
_WINDOW_S = 1.0


@dataclass(frozen=True, slots=True)
class Fault:
    """An answer that replaces the real one; status None means close the connection unanswered."""

    status: int | None
    retry_after: int | None = None
    detail: str = ""


class FaultInjector:
    """Applies the request-rate ceiling, then one seeded draw among the fault fractions."""

    def __init__(self, faults: Faults, seed: int | None = None) -> None:
        self.faults = faults
        self._random = random.Random(seed)
        self._admitted: deque[float] = deque()

    def reset(self) -> None:
        self._admitted.clear()

    def decide(self, now: float) -> Fault | None:
        """The fault for a request arriving at monotonic time ``now``, or None to answer it for real."""
        faults = self.faults
        if faults.max_rps is not None:
            admitted = self._admitted
            while admitted and now - admitted[0] >= _WINDOW_S:
                admitted.popleft()
            if len(admitted) >= faults.max_rps:
                return Fault(429, 1, f"over the ceiling of {faults.max_rps} requests a second")
            admitted.append(now)
        # Draw on every request so a seed replays the same sequence whatever the fractions are.
        draw = self._random.random()
        if draw < faults.fault_drop:
            return Fault(None, detail="connection dropped")
        draw -= faults.fault_drop
        if draw < faults.fault_429:
            return Fault(429, faults.retry_after, "injected 429")
        draw -= faults.fault_429
        if draw < faults.fault_5xx:
            return Fault(self._random.choice(_SERVER_ERRORS), detail="injected server error")
        return None
