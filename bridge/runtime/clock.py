"""The clock every deadline, expiry and linger reads: injected, so tests control time.

Monotonic time is the event loop's own (`loop.time()`), so a test loop that fast-forwards time (looptime) moves
every `asyncio.sleep`, `wait_for` and deadline together; wall time is only for an event's age.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds, the running event loop's time."""
        ...

    def wall(self) -> float:
        """Unix seconds."""
        ...


class LoopClock:
    """The event loop's time and the system's wall clock; `wall_at_zero` pins wall time to loop time in tests."""

    def __init__(self, wall_at_zero: float | None = None) -> None:
        self._wall_at_zero = wall_at_zero

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        if self._wall_at_zero is None:
            return time.time()
        return self._wall_at_zero + asyncio.get_running_loop().time()
