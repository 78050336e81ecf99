"""The transform pool: worker processes that decode, make rows and encode CSV, with results taken in sent order.

One interpreter cannot decode, make rows and encode CSV as fast as Kafka hands records over, so chunks of record
values go to worker processes (`transform.workers`; 0 runs them in the owner's process). The owner loop takes the
results back in the order it sent the chunks, so each partition's records reach the batches, the dead letters and
the halting rule in offset order, as they would in one process. A chunk that does not come back within
`transform.chunk_timeout_s` means a worker hangs: the pool reports it, and the bridge fails loudly.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import cast

from bridge.decoding.lanes import Lane
from bridge.decoding.transform import Rules, Transformed, start_worker, transform
from bridge.kafka.headers import read_headers
from bridge.runtime.clock import Clock
from bridge.runtime.ledger import Held

CHUNK_RECORDS = 1000
"""Records per transform: enough to make a worker's round trip cheap, few enough to keep every worker busy."""
QUEUED_PER_WORKER = 3
"""Chunks sent to the workers and not yet taken back, per worker, before the owner loop stops fetching: enough that
no worker waits for work, few enough that records wait in Kafka rather than in this process's memory."""
WORKERS_EXIT_S = 1.0
"""Workers still running this long after the drain are killed: a busy one's chunk is not wanted any more, and a
hung one would never end, while the interpreter's exit waits for every worker of the pool."""


class TransformStalledError(Exception):
    """A chunk sent to the transform workers did not come back in time: a worker hangs."""


def chunks(held: Sequence[Held], lanes: Mapping[str, Lane]) -> Iterator[tuple[Lane, Sequence[Held]]]:
    """The records of each lane, each in the order held (a partition is one topic's, so one lane's), in chunks."""
    by_lane: dict[int, tuple[Lane, list[Held]]] = {}
    for item in held:
        lane = lanes[item.state.topic]
        by_lane.setdefault(id(lane), (lane, []))[1].append(item)
    for lane, items in by_lane.values():
        for start in range(0, len(items), CHUNK_RECORDS):
            yield lane, items[start : start + CHUNK_RECORDS]


class TransformPool:
    """Sends chunks to the workers and hands their results back in the order sent."""

    def __init__(self, workers: int, chunk_timeout_s: float, rules: Rules, clock: Clock) -> None:
        self._workers = workers
        self._chunk_timeout_s = chunk_timeout_s
        self._rules = rules
        self._clock = clock
        self._pool: ProcessPoolExecutor | None = None
        self._sent: deque[tuple[Sequence[Held], asyncio.Future[Transformed], float]] = deque()
        self._finished = asyncio.Event()
        self.failed: BaseException | None = None

    async def start(self) -> None:
        if not self._workers:
            return
        # Spawned, not forked: a fork copies librdkafka's and the event loop's threads in whatever state they are.
        self._pool = ProcessPoolExecutor(
            self._workers, mp_context=multiprocessing.get_context("spawn"), initializer=start_worker
        )
        loop = asyncio.get_running_loop()
        # A pool starts a worker per call while none is idle: start them all now, not under the first records.
        await asyncio.gather(*(loop.run_in_executor(self._pool, os.getpid) for _ in range(self._workers)))

    def submit(self, chunk: Sequence[Held], lane: Lane) -> None:
        values = [item.value for item in chunk]
        # Keys and headers cross to the workers only for a mapping that reads them.
        keys = [item.record.key() for item in chunk] if lane.reads_keys else None
        headers = [read_headers(item.record) for item in chunk] if lane.reads_headers else None
        work = (values, self._clock.wall(), self._rules, lane.schemas(), lane.method, lane.reading, keys, headers)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Transformed]
        if self._pool is None:
            future = loop.create_future()
            future.set_result(transform(*work))
        else:
            future = loop.run_in_executor(self._pool, transform, *work)
            future.add_done_callback(lambda _: self._finished.set())
        self._sent.append((chunk, future, self._clock.now()))

    @property
    def queued(self) -> int:
        """Chunks sent and not yet taken back."""
        return len(self._sent)

    @property
    def full(self) -> bool:
        """Enough chunks are queued that records fetched now would only wait in memory."""
        return self._pool is not None and len(self._sent) >= self._workers * QUEUED_PER_WORKER

    async def wait(self, timeout_s: float) -> None:
        """Until the oldest chunk sent has finished (the next result to take), at most `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._sent:
            self._finished.clear()
            if self._sent[0][1].done() or (remaining := deadline - loop.time()) <= 0:
                return
            try:
                await asyncio.wait_for(self._finished.wait(), remaining)
            except TimeoutError:
                return

    def results(self) -> Iterator[tuple[Sequence[Held], Transformed]]:
        """The finished chunks at the head of the queue, in the order sent: a chunk waits for those sent before it.

        Raises what failed a chunk (a dead worker, a bug) or TransformStalledError; nothing after a failed chunk is
        ever handed back, so its records and every later one stay uncommitted.
        """
        sent = self._sent
        while self.failed is None and sent and sent[0][1].done():
            chunk, future, _ = sent.popleft()
            error = future.exception() if not future.cancelled() else asyncio.CancelledError()
            if error is not None:
                self.failed = error
                sent.appendleft((chunk, future, 0.0))
                break
            yield chunk, future.result()
        if self.failed is None and self.silent_s() > self._chunk_timeout_s:
            self.failed = TransformStalledError(
                f"a chunk sent to the transform workers did not come back in {self._chunk_timeout_s:g} s "
                "(transform.chunk_timeout_s)"
            )
        if self.failed is not None:
            raise self.failed

    def silent_s(self) -> float:
        """How long the oldest chunk in the workers has been there."""
        return self._clock.now() - self._sent[0][2] if self._sent else 0.0

    @property
    def late(self) -> bool:
        """A worker is past half of `transform.chunk_timeout_s`: not ready, and a stalled partition's reason."""
        return self.silent_s() > self._chunk_timeout_s / 2

    async def settle(self, deadline: float) -> None:
        """Wait until `deadline` (monotonic) for the chunks in the workers."""
        futures = [future for _, future, _ in self._sent]
        if futures and (remaining := deadline - self._clock.now()) > 0:
            await asyncio.wait(futures, timeout=remaining)

    def abandon(self) -> list[Held]:
        """Every record still in the pool, taken back unapplied (after a failure, or past the drain's deadline)."""
        items = [item for chunk, _, _ in self._sent for item in chunk]
        self._sent.clear()
        return items

    async def close(self) -> None:
        if self._pool is None:
            return
        workers = multiprocessing.active_children()
        self._pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(_end_workers, workers, WORKERS_EXIT_S)


def _end_workers(workers: Sequence[BaseProcess], timeout_s: float) -> None:
    """Wait up to `timeout_s` for `workers` to end, then kill the ones still running."""
    running = {worker.sentinel: worker for worker in workers}
    deadline = time.monotonic() + timeout_s
    while running and (remaining := deadline - time.monotonic()) > 0:
        for sentinel in wait(list(running), remaining):
            running.pop(cast(int, sentinel))
    for worker in running.values():
        worker.kill()
