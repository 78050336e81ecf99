"""The delivery tasks under way: started by the owner loop, watched for failure, awaited by the drain."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger("bridge.deliveries")


class Deliveries:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self.failed: BaseException | None = None
        """What failed a task: its records are never done, so the bridge fails loudly (exit 3)."""

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("a delivery task failed; the bridge stops", error=repr(error))
            if self.failed is None:
                self.failed = error

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self, timeout_s: float) -> None:
        """Until a task ends, at most `timeout_s`."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, timeout_s), return_when=asyncio.FIRST_COMPLETED)

    async def cancel(self) -> int:
        """Cancel every task still under way; how many there were."""
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)
