"""The bridge's main loop: fetch, transform (decode, make rows, encode CSV), batch, upload, commit only what is safe.

One owner loop talks to the consumer (fetch, pause, resume, commit): it holds records, launches their delivery
(`bridge.delivery`, in tasks that only mark offsets done), commits and rebalances. Rebalance callbacks run inside
the owner loop's fetch. A task that fails, or a transform that does not come back within
`transform.chunk_timeout_s`, makes the bridge not ready and then fails it loudly: nothing after the records it
held is committed.

Transforms run in worker processes (`transform.workers`), since one interpreter cannot decode, make rows and
encode CSV as fast as Kafka hands records over. The owner loop sends chunks of record values without waiting for
them, and applies the answers on the loop in the order it sent them, so every partition's records reach the
batches, the dead letters and the halting rule in offset order, as they would in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any, cast

import structlog
from confluent_kafka import KafkaError, TopicPartition

from bridge.batching import Batch, Batcher, Held
from bridge.config import BridgeConfig
from bridge.deadletter import DeadLetters
from bridge.decode import Decoder, RegistryUnavailableError
from bridge.delivery import Delivery
from bridge.headers import read_headers
from bridge.lanes import Lane, lanes
from bridge.methods import MethodName
from bridge.metrics import Metrics
from bridge.offsets import PartitionOffsets
from bridge.source import Partitions, Source
from bridge.transform import FAILED, Rules, Transformed, start_worker, transform
from bridge.upload import Uploader

log = structlog.get_logger("bridge.pipeline")

FETCH_TIMEOUT_S = 0.1
"""Short, so commits, pauses and linger cuts never wait long behind a fetch."""
FETCH_MAX = 5000
CHUNK_RECORDS = 1000
"""Records per transform: enough to make a worker's round trip cheap, few enough to keep every worker busy."""
QUEUED_PER_WORKER = 3
"""Chunks sent to the workers and not yet back, per worker, before the owner loop stops fetching: enough that no
worker waits for work, few enough that records wait in Kafka rather than in this process's memory."""
RESUME_FRACTION = 0.8
"""Paused partitions resume once held records and bytes fall below this share of their limits."""
REGISTRY_RETRY_S = 2.0
LAG_INTERVAL_S = 5.0
CLOSE_TIMEOUT_S = 4.0
"""Leaving the group after the drain: its revoke waits for nothing, the drain already did."""
WORKERS_EXIT_S = 1.0
"""Transform workers still running this long after the drain are killed: a busy one's chunk is not wanted any
more, and a hung one would never end, while the interpreter's exit waits for every worker of the pool."""

PartitionKey = tuple[str, int]
_new_held = tuple.__new__


class TransformStalledError(Exception):
    """A chunk sent to the transform workers did not come back in time: a worker hangs."""


class Pipeline:
    """Moves records from `source` to `uploader`, holding at most the configured records and bytes."""

    def __init__(
        self,
        config: BridgeConfig,
        source_factory: type[Source],
        decoder: Decoder,
        rules: Rules,
        uploader: Uploader,
        dead_letters: DeadLetters | None,
        metrics: Metrics,
        own_schemas: Decoder | None = None,
    ) -> None:
        """`own_schemas` fetches the writer schemas of Avro routes with a mapping (see `bridge.lanes`)."""
        self._config = config
        self._source = source_factory(config.kafka, config.topics, self, self._on_kafka_error)
        self._method_of: dict[str, MethodName] = {
            topic: route.method for route in config.effective_routes for topic in route.topics
        }
        """Each topic's method: its route's."""
        self._decoder = decoder
        self._lanes = lanes(config, decoder, own_schemas)
        self._decoders = list({id(d): d for lane in self._lanes.values() if (d := lane.decoder) is not None}.values())
        distinct = {id(lane): lane for lane in self._lanes.values()}
        self._one_lane = next(iter(distinct.values())) if len(distinct) == 1 else None
        self._rules = rules
        self._uploader = uploader
        self._metrics = metrics
        self._delivery = Delivery(uploader, dead_letters, config.upload, metrics, self._release)
        self._batcher = Batcher(config.batch.max_rows, config.batch.max_bytes, config.batch.linger_ms / 1000)
        self._partitions: dict[PartitionKey, PartitionOffsets] = {}
        self._paused: set[PartitionKey] = set()
        self._pressure = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._pool: ProcessPoolExecutor | None = None
        self._transforming: deque[tuple[Sequence[Held], asyncio.Future[Transformed], float]] = deque()
        """Chunks sent to the workers, in the order sent, with when they were sent."""
        self._transform_failed: BaseException | None = None
        self._task_failed: BaseException | None = None
        self._waiting: list[Held] = []
        self._registry_retry_at = 0.0
        self._held_records = 0
        self._held_bytes = 0
        self._stopping = asyncio.Event()
        self._task_finished = asyncio.Event()
        self._transform_finished = asyncio.Event()
        self._draining = False
        self._drain_deadline: float | None = None
        self._kafka_up = True
        self.heartbeat = time.monotonic()
        self.totals = self._delivery.totals

    # -- what health and the service read -------------------------------------------------------------------

    def not_ready(self) -> list[str]:
        """Why the bridge cannot move events now: no partitions, Kafka unreachable, a refused key, draining."""
        reasons = []
        if self._draining:
            reasons.append("draining for shutdown")
        if self._task_failed is not None:
            reasons.append(f"a delivery failed: {self._task_failed!r}")
        silent = self._transform_silent_s()
        if silent > self._config.transform.chunk_timeout_s / 2:
            reasons.append(f"a transform worker has not answered for {silent:.0f} s")
        if not self._kafka_up:
            reasons.append("Kafka is unreachable")
        if not self._partitions:
            reasons.append("no partitions assigned")
        if (registry := self._decoder.problem()) is not None:
            reasons.append(registry)
        refused = sorted(self._uploader.refused_applications)
        if refused:
            reasons.append(f"the Post API refuses the key of application(s) {', '.join(map(str, refused))}")
        return reasons

    @property
    def held(self) -> tuple[int, int]:
        return self._held_records, self._held_bytes

    def stop(self) -> None:
        """Ask the loop to stop fetching and drain; safe to call from a signal handler."""
        self._stopping.set()

    # -- the owner loop -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until `stop()`, then drain open batches and in-flight uploads within the shutdown deadline."""
        await self._start_workers()
        await self._source.start()
        next_lag = 0.0
        try:
            while not self._stopping.is_set():
                self._check_failures()
                self.heartbeat = time.monotonic()
                await self._apply_back_pressure()
                room = self._config.buffer.max_records - self._held_records
                if self._transforms_full():
                    # The workers have enough queued: records fetched now would only wait in memory.
                    await self._next_transform(FETCH_TIMEOUT_S)
                    records = []
                else:
                    records = await self._source.fetch(max(1, min(FETCH_MAX, room)), FETCH_TIMEOUT_S)
                if records:
                    self._kafka_up = True
                    self._waiting.extend(self._hold(records))
                if self._waiting and time.monotonic() >= self._registry_retry_at:
                    await self._take_waiting()
                for batch in self._batcher.expired():
                    self._launch(batch)
                await self._commit()
                if time.monotonic() >= next_lag:
                    next_lag = time.monotonic() + LAG_INTERVAL_S
                    await self._observe_kafka()
        except Exception:
            log.exception("the pipeline failed; draining what it holds")
            raise
        finally:
            await self._drain()
        if self._task_failed is not None:
            # It failed while draining: the stop was asked for, but the records it held are not delivered.
            raise self._task_failed

    def _check_failures(self) -> None:
        """Raise what failed a task or the transforms, so the bridge fails loudly instead of stalling."""
        if self._task_failed is not None:
            raise self._task_failed
        if self._transform_failed is None and self._transform_silent_s() > self._config.transform.chunk_timeout_s:
            self._transform_failed = TransformStalledError(
                f"a chunk sent to the transform workers did not come back in "
                f"{self._config.transform.chunk_timeout_s:g} s (transform.chunk_timeout_s)"
            )
        if self._transform_failed is not None:
            raise self._transform_failed

    def _transform_silent_s(self) -> float:
        """How long the oldest chunk in the workers has been there."""
        return time.monotonic() - self._transforming[0][2] if self._transforming else 0.0

    async def _start_workers(self) -> None:
        workers = self._config.transform.workers
        if not workers:
            return
        # Spawned, not forked: a fork copies librdkafka's and the event loop's threads in whatever state they are.
        self._pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=start_worker
        )
        loop = asyncio.get_running_loop()
        # A pool starts a worker per call while none is idle: start them all now, not under the first records.
        await asyncio.gather(*(loop.run_in_executor(self._pool, os.getpid) for _ in range(workers)))

    async def _drain(self) -> None:
        """Let the transforms finish, flush the open batches, wait for the uploads, commit; all within the deadline."""
        self._draining = True
        deadline = self._drain_deadline = time.monotonic() + self._config.shutdown.drain_timeout_s
        if self._transform_failed is None:
            await self._settle_transforms(deadline)
        for batch in self._batcher.drain():
            self._launch(batch)
        if self._tasks:
            log.info("draining", batches=len(self._tasks), deadline_s=self._config.shutdown.drain_timeout_s)
            _, pending = await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - time.monotonic()))
            for task in pending:
                task.cancel()
            if pending:
                log.warning("drain deadline passed; unfinished records stay uncommitted", tasks=len(pending))
                await asyncio.gather(*pending, return_exceptions=True)
        await self._commit()
        if self._pool is not None:
            workers = multiprocessing.active_children()
            self._pool.shutdown(wait=False, cancel_futures=True)
            await asyncio.to_thread(_end_workers, workers, WORKERS_EXIT_S)
        try:
            await asyncio.wait_for(self._source.close(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("the consumer did not close in time; its group will notice after the session timeout")

    def _hold(self, records: Sequence[Any]) -> list[Held]:
        """Track fetched records in their partitions; skip those already held (a stretch fetched again) and those of
        partitions this member is not assigned (fetched across a revoke): they must never commit here."""
        partitions = self._partitions
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
        self._held_records += len(held)
        self._held_bytes += size
        for topic, count in Counter(h.state.topic for h in held).items():
            self._metrics.records_consumed.labels(topic).inc(count)
        self.totals.consumed += len(held)
        self._observe_held()
        return held

    def _release(self, held: Iterable[Held]) -> None:
        count = size = 0
        for item in held:
            count += 1
            size += len(item.value) if item.value else 0
        self._held_records -= count
        self._held_bytes -= size
        self._observe_held()

    def _observe_held(self) -> None:
        self._metrics.held_records.set(self._held_records)
        self._metrics.held_bytes.set(self._held_bytes)

    async def _take_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        by_lane = self._by_lane(waiting)
        try:
            for decoder in self._decoders:
                await decoder.prepare(
                    item.value for lane, items in by_lane if lane.decoder is decoder for item in items
                )
        except RegistryUnavailableError as exc:
            # Not poison: the records wait (and the partitions pause) until the registry answers.
            self._waiting = waiting + self._waiting
            self._registry_retry_at = time.monotonic() + REGISTRY_RETRY_S
            log.warning("schema registry unavailable; records wait", error=str(exc), records=len(self._waiting))
            return
        chunks = [
            (lane, items[start : start + CHUNK_RECORDS])
            for lane, items in by_lane
            for start in range(0, len(items), CHUNK_RECORDS)
        ]
        for index, (lane, chunk) in enumerate(chunks):
            try:
                self._submit(chunk, lane)
            except BrokenProcessPool:
                # A worker died while the pool was idle: nothing more is sent, and nothing waits for these.
                self._let_go([item for _, rest in chunks[index:] for item in rest])
                raise

    def _by_lane(self, held: list[Held]) -> list[tuple[Lane, list[Held]]]:
        """The records of each lane, each in the order held: a partition is one topic's, so one lane's."""
        if self._one_lane is not None:
            return [(self._one_lane, held)]
        by_lane: dict[int, tuple[Lane, list[Held]]] = {}
        lanes = self._lanes
        for item in held:
            lane = lanes[item.state.topic]
            by_lane.setdefault(id(lane), (lane, []))[1].append(item)
        return list(by_lane.values())

    # -- transforms -----------------------------------------------------------------------------------------

    def _submit(self, chunk: Sequence[Held], lane: Lane) -> None:
        values = [item.value for item in chunk]
        # Keys and headers cross to the workers only for a mapping that reads them.
        keys = [item.record.key() for item in chunk] if lane.reads_keys else None
        headers = [read_headers(item.record) for item in chunk] if lane.reads_headers else None
        work = (values, time.time(), self._rules, lane.schemas(), lane.method, lane.reading, keys, headers)
        if self._pool is None:
            self._apply(chunk, transform(*work))
            return
        future = asyncio.get_running_loop().run_in_executor(self._pool, transform, *work)
        self._transforming.append((chunk, future, time.monotonic()))
        future.add_done_callback(self._transformed)

    def _transforms_full(self) -> bool:
        return self._pool is not None and len(self._transforming) >= self._config.transform.workers * QUEUED_PER_WORKER

    async def _next_transform(self, timeout_s: float) -> None:
        self._transform_finished.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._transform_finished.wait(), timeout_s)

    def _transformed(self, _: asyncio.Future[Transformed]) -> None:
        """Apply the finished chunks at the head of the queue: a chunk waits for those sent before it."""
        self._transform_finished.set()
        transforming = self._transforming
        while transforming and transforming[0][1].done():
            chunk, future, _sent = transforming.popleft()
            # Only the pool's shutdown, after the drain, cancels a chunk; exception() marks a failure as seen.
            error = None if future.cancelled() else future.exception()
            if self._transform_failed is None and not future.cancelled():
                if error is None:
                    self._apply(chunk, future.result())
                    continue
                # A dead worker (BrokenProcessPool) or a bug: the owner loop raises it and fails loudly.
                self._transform_failed = error
            # Never applied, as no chunk after a failed one is: these records stay uncommitted, and nothing
            # (a revoke, the close) waits for them.
            self._let_go(chunk)

    async def _settle_transforms(self, deadline: float) -> None:
        """Wait until `deadline` for the chunks in the workers; each is applied as it finishes."""
        futures = [sent[1] for sent in self._transforming]
        if futures and (remaining := deadline - time.monotonic()) > 0:
            await asyncio.wait(futures, timeout=remaining)

    def _apply(self, chunk: Sequence[Held], result: Transformed) -> None:
        groups, failures = result.groups, result.failures
        add = self._batcher.add
        dropped = []
        for index, (item, group, line) in enumerate(zip(chunk, result.placed, result.lines, strict=True)):
            state = item.state
            if state.retired or state.halted:
                dropped.append(item)
            elif group == FAILED:
                self._spawn(self._delivery.poison(item, self._method_of[item.state.topic], *failures[index]))
            elif (batch := add(groups[group], line, item)) is not None:
                self._launch(batch)
        if dropped:
            self._release(dropped)

    # -- deliveries -----------------------------------------------------------------------------------------

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._task_finished.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            # Its records are never done: the owner loop raises this and the bridge exits 3.
            log.error("a delivery task failed; the bridge stops", error=repr(error))
            if self._task_failed is None:
                self._task_failed = error

    def _launch(self, batch: Batch) -> None:
        self._spawn(self._delivery.deliver(batch))

    # -- offsets and back-pressure --------------------------------------------------------------------------

    async def _commit(self) -> None:
        positions = []
        for state in self._partitions.values():
            position = state.commit_position()
            if position is not None:
                positions.append(TopicPartition(state.topic, state.partition, position))
        if positions and await self._source.commit(positions):
            for p in positions:
                self._metrics.committed_offset.labels(p.topic, str(p.partition)).set(p.offset)

    async def _apply_back_pressure(self) -> None:
        limits = self._config.buffer
        full = self._held_records >= limits.max_records or self._held_bytes >= limits.max_bytes
        low = (
            self._held_records < limits.max_records * RESUME_FRACTION
            and self._held_bytes < limits.max_bytes * RESUME_FRACTION
        )
        registry_down = bool(self._waiting) and time.monotonic() < self._registry_retry_at
        if full or registry_down:
            self._pressure = True
        elif low:
            self._pressure = False
        want_paused = {key for key, state in self._partitions.items() if state.halted}
        if self._pressure:
            want_paused.update(self._partitions)
        to_pause = [TopicPartition(*key) for key in want_paused - self._paused if key in self._partitions]
        to_resume = [TopicPartition(*key) for key in self._paused - want_paused if key in self._partitions]
        if to_pause:
            await self._source.pause(to_pause)
            log.info("paused", partitions=len(to_pause), held_records=self._held_records, held_bytes=self._held_bytes)
        if to_resume:
            await self._source.resume(to_resume)
            log.info("resumed", partitions=len(to_resume), held_records=self._held_records)
        self._paused = want_paused & self._partitions.keys()
        self._metrics.paused_partitions.set(len(self._paused))

    async def _observe_kafka(self) -> None:
        self._kafka_up = await self._source.reachable()
        assigned = [TopicPartition(s.topic, s.partition) for s in self._partitions.values()]
        ends = await self._source.high_watermarks(assigned)
        for (topic, partition), end in ends.items():
            state = self._partitions.get((topic, partition))
            if state is not None and state.committed is not None:
                self._metrics.consumer_lag.labels(topic, str(partition)).set(max(0, end - state.committed))

    async def _on_kafka_error(self, error: KafkaError) -> None:
        # AIOConsumer runs error_cb on the event loop and awaits it: it must be a coroutine function.
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._kafka_up = False
        log.warning("kafka error", error=error.str(), fatal=error.fatal())

    # -- rebalances (called inside the owner loop's fetch) --------------------------------------------------

    async def assigned(self, partitions: Partitions) -> None:
        for p in partitions:
            self._partitions[(p.topic, p.partition)] = PartitionOffsets(p.topic, p.partition)
        self._metrics.rebalances.labels("assigned").inc(len(partitions))
        log.info("partitions assigned", partitions=_names(partitions))

    async def revoked(self, partitions: Partitions) -> None:
        """Let the revoked partitions' batches finish (up to the deadline), commit what is done, let go."""
        keys = {(p.topic, p.partition) for p in partitions}
        states = [self._partitions[k] for k in keys if k in self._partitions]
        self._drop_waiting(keys)
        deadline = time.monotonic() + self._config.kafka.revoke_timeout_s
        if self._drain_deadline is not None:
            # The close's revoke: the drain already waited for this work, and gave up on what is left.
            deadline = min(deadline, self._drain_deadline)
        # Their records in the workers come back as rows (or poison) first, to be batched with the rest.
        await self._settle_transforms(deadline)
        for batch in self._batcher.drain():
            self._launch(batch)
        # A halted partition's records after its poison record are never done: nothing to wait for.
        awaited = [s for s in states if not s.halted]
        while any(not s.idle for s in awaited) and (remaining := deadline - time.monotonic()) > 0:
            self._task_finished.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._task_finished.wait(), remaining)
        positions = []
        for state in states:
            position = state.commit_position() or state.committed
            if position is not None:
                positions.append(TopicPartition(state.topic, state.partition, position))
        if positions:
            await self._source.commit(positions)
        unfinished = sum(not s.idle for s in awaited)
        self._retire(keys)
        self._metrics.rebalances.labels("revoked").inc(len(partitions))
        log.info("partitions revoked", partitions=_names(partitions), committed=len(positions), unfinished=unfinished)

    async def lost(self, partitions: Partitions) -> None:
        """Another member may own these already: commit nothing, forget them."""
        keys = {(p.topic, p.partition) for p in partitions}
        self._drop_waiting(keys)
        self._retire(keys)
        self._metrics.rebalances.labels("lost").inc(len(partitions))
        log.warning("partitions lost", partitions=_names(partitions))

    def _drop_waiting(self, keys: set[PartitionKey]) -> None:
        """Let go of fetched records of these partitions not yet taken."""
        kept, dropped = [], []
        for item in self._waiting:
            state = item.state
            if (state.topic, state.partition) in keys:
                dropped.append(item)
            else:
                kept.append(item)
        self._waiting = kept
        self._let_go(dropped)

    def _let_go(self, items: Sequence[Held]) -> None:
        """Stop holding records that will not be taken: each partition's newest, so its tracker ends before them."""
        for item in items:
            item.state.truncate(item.offset)
        self._release(items)

    def _retire(self, keys: set[PartitionKey]) -> None:
        for key in keys:
            state = self._partitions.pop(key, None)
            if state is not None:
                state.retired = True
            self._paused.discard(key)


def _end_workers(workers: Sequence[BaseProcess], timeout_s: float) -> None:
    """Wait up to `timeout_s` for `workers` to end, then kill the ones still running."""
    running = {worker.sentinel: worker for worker in workers}
    deadline = time.monotonic() + timeout_s
    while running and (remaining := deadline - time.monotonic()) > 0:
        for sentinel in wait(list(running), remaining):
            running.pop(cast(int, sentinel))
    for worker in running.values():
        worker.kill()


def _names(partitions: Partitions) -> list[str]:
    return [f"{p.topic}[{p.partition}]" for p in partitions]
