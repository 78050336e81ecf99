"""The owner loop: fetch, hand records on, apply transform results, commit, and handle rebalances.

It is the only code that talks to the consumer. A record's offsets meet it three times: when it is held (fetched),
when its transform result is batched (or dead-lettered), and when its partition's position is committed. Deliveries
run in tasks of their own and report to the ledger; the rebalance callbacks run inside `fetch`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from bridge.config.model import BridgeConfig
from bridge.decoding.lanes import Lane
from bridge.decoding.transform import FAILED, Transformed
from bridge.kafka.consumer import Consumer, PartitionKey
from bridge.ops.metrics import Metrics
from bridge.postapi.methods import MethodName
from bridge.runtime.batching import Batch, Batcher
from bridge.runtime.clock import Clock
from bridge.runtime.deliveries import Deliveries
from bridge.runtime.delivery import Delivery
from bridge.runtime.ledger import Held, Ledger
from bridge.runtime.readiness import Readiness
from bridge.runtime.schema_wait import SchemaWait
from bridge.runtime.stalls import Stalls
from bridge.runtime.transforms import TransformPool, chunks

log = structlog.get_logger("bridge.pipeline")

FETCH_TIMEOUT_S = 0.1
"""Short, so commits, pauses and linger cuts never wait long behind a fetch."""
FETCH_MAX = 5000
RESUME_FRACTION = 0.8
"""Paused partitions resume once held records and bytes fall below this share of their limits."""
WATCH_INTERVAL_S = 5.0
"""How often Kafka's reachability, the partitions' ends and idle partitions' positions are read."""
COMMIT_INTERVAL_S = 0.2
"""How often a drain or a revoke commits what finished while it waits."""
COMMIT_RETRY_S = 1.0
"""After Kafka refused a commit (a rebalance, the broker away), the turns leave it this long before asking again."""
COMMIT_TIMEOUT_S = 2.0
"""The final commit's deadline: Kafka down at shutdown must not hold the exit."""
CLOSE_TIMEOUT_S = 3.0
"""Leaving the group after the drain: its revoke waits for nothing, the drain already did."""


@dataclass
class Parts:
    """What the owner loop drives; built by `bridge.runtime.assembly`."""

    consumer: Consumer
    ledger: Ledger
    pool: TransformPool
    schema_wait: SchemaWait
    batcher: Batcher
    delivery: Delivery
    deliveries: Deliveries
    readiness: Readiness
    stalls: Stalls
    lanes: Mapping[str, Lane]
    method_of: Mapping[str, MethodName]


class OwnerLoop:
    """Moves records from the consumer to deliveries, holding at most the configured records and bytes."""

    def __init__(
        self, parts: Parts, config: BridgeConfig, metrics: Metrics, clock: Clock, on_rebalance: Callable[[], None]
    ) -> None:
        self.parts = parts
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._on_rebalance = on_rebalance
        self._stopping = asyncio.Event()
        self._paused: set[PartitionKey] = set()
        self._pressure = False
        self._drain_deadline: float | None = None
        self._next_watch = 0.0
        self._commit_after = 0.0

    def stop(self) -> None:
        """Stop fetching and drain; safe to call from a signal handler."""
        self._stopping.set()

    async def run(self) -> None:
        """Run until `stop()`, then drain open batches and in-flight uploads within the shutdown deadline."""
        p = self.parts
        await p.pool.start()
        await p.consumer.subscribe(list(p.lanes), self)
        try:
            while not self._stopping.is_set():
                await self.turn()
        except Exception:
            log.exception("the pipeline failed; draining what it holds")
            raise
        finally:
            await self._drain()
        if p.deliveries.failed is not None:
            raise p.deliveries.failed

    async def turn(self) -> None:
        p, clock = self.parts, self._clock
        if p.deliveries.failed is not None:
            raise p.deliveries.failed
        p.readiness.heartbeat = clock.now()
        await self._apply_back_pressure()
        if p.pool.full:
            await p.pool.wait(FETCH_TIMEOUT_S)
        else:
            room = self._config.buffer.max_records - p.ledger.records
            records = await p.consumer.fetch(max(1, min(FETCH_MAX, room)), FETCH_TIMEOUT_S)
            if records:
                p.readiness.kafka_answers()
                p.schema_wait.add(p.ledger.hold(records))
        self._submit(await p.schema_wait.ready())
        self._apply_results()
        for batch in p.batcher.expired():
            self._launch(batch)
        if clock.now() >= self._commit_after:
            await self._commit({})
        if clock.now() >= self._next_watch:
            self._next_watch = clock.now() + WATCH_INTERVAL_S
            await self._watch_kafka()

    def _submit(self, ready: Sequence[Held]) -> None:
        pool, sent = self.parts.pool, 0
        try:
            for lane, chunk in chunks(ready, self.parts.lanes):
                pool.submit(chunk, lane)
                sent += len(chunk)
        except Exception:
            # A worker died while the pool was idle: nothing more is sent, and nothing waits for these.
            self.parts.ledger.let_go(ready[sent:])
            raise

    async def _settle_transforms(self, deadline: float, failed_event: str) -> None:
        """Wait until `deadline` for the chunks in the workers and batch what came back; a failure is logged here and
        raised by the owner loop's next turn, or never when the loop is done."""
        if self.parts.pool.failed is None:
            await self.parts.pool.settle(deadline)
            try:
                self._apply_results()
            except Exception as exc:
                log.error(failed_event, error=repr(exc))

    def _apply_results(self) -> None:
        for chunk, result in self.parts.pool.results():
            self._apply(chunk, result)

    def _apply(self, chunk: Sequence[Held], result: Transformed) -> None:
        p = self.parts
        groups, failures, add = result.groups, result.failures, p.batcher.add
        dropped = []
        for index, (item, group, line) in enumerate(zip(chunk, result.placed, result.lines, strict=True)):
            state = item.state
            if state.retired or state.halted:
                dropped.append(item)
            elif group == FAILED:
                p.deliveries.start(p.delivery.poison(item, p.method_of[state.topic], *failures[index]))
            elif (batch := add(groups[group], line, item)) is not None:
                self._launch(batch)
        if dropped:
            p.ledger.withdrawn(dropped)

    def _launch(self, batch: Batch) -> None:
        self.parts.deliveries.start(self.parts.delivery.deliver(batch))

    async def _commit(self, positions: Mapping[PartitionKey, int]) -> bool:
        moved = self.parts.ledger.advance(positions)
        if not moved:
            return True
        if not await self.parts.consumer.commit(moved):
            self._commit_after = self._clock.now() + COMMIT_RETRY_S
            return False
        self.parts.ledger.confirm(moved)
        for (topic, partition), offset in moved.items():
            self._metrics.set_committed(topic, partition, offset)
        return True

    async def _commit_within(self, positions: Mapping[PartitionKey, int], timeout_s: float) -> bool:
        try:
            return await asyncio.wait_for(self._commit(positions), timeout_s)
        except TimeoutError:
            return False

    async def _idle_positions(self) -> dict[PartitionKey, int]:
        idle = [key for key, state in self.parts.ledger.partitions.items() if state.held == 0]
        return await self.parts.consumer.positions(idle) if idle else {}

    async def _apply_back_pressure(self) -> None:
        p, limits = self.parts, self._config.buffer
        held_records, held_bytes = p.ledger.records, p.ledger.bytes
        full = held_records >= limits.max_records or held_bytes >= limits.max_bytes
        low = held_records < limits.max_records * RESUME_FRACTION and held_bytes < limits.max_bytes * RESUME_FRACTION
        if full or p.schema_wait.blocked:
            self._pressure = True
        elif low:
            self._pressure = False
        partitions = p.ledger.partitions
        want = {key for key, state in partitions.items() if state.halted}
        if self._pressure:
            want.update(partitions)
        to_pause = sorted(want - self._paused)
        to_resume = sorted(key for key in self._paused - want if key in partitions)
        if to_pause:
            await p.consumer.pause(to_pause)
            log.info("paused", partitions=len(to_pause), held_records=held_records, held_bytes=held_bytes)
        if to_resume:
            await p.consumer.resume(to_resume)
            log.info("resumed", partitions=len(to_resume), held_records=held_records)
        self._paused = want
        self._metrics.paused_partitions.set(len(want))

    async def _watch_kafka(self) -> None:
        p = self.parts
        if await p.consumer.reachable():
            p.readiness.kafka_answers()
        else:
            p.readiness.kafka_up = False
        await self._commit(await self._idle_positions())
        ends = await p.consumer.high_watermarks(list(p.ledger.partitions))
        positions = await p.consumer.positions([k for k, s in p.ledger.partitions.items() if s.lag_base is None])
        for key, end in ends.items():
            state = p.ledger.partitions.get(key)
            if state is None:
                continue
            # Before its first record, a partition's lag counts from where the consumer starts.
            base = state.lag_base if state.lag_base is not None else positions.get(key)
            if base is not None:
                self._metrics.set_lag(key[0], key[1], end - base)
        p.stalls.observe()

    async def _drain(self) -> None:
        """Let the transforms finish, flush the open batches, wait for the uploads, commit; all within deadlines."""
        p, clock = self.parts, self._clock
        p.readiness.draining = True
        deadline = self._drain_deadline = clock.now() + self._config.shutdown.drain_timeout_s
        await self._settle_transforms(deadline, "a transform failed while draining")
        p.ledger.let_go(p.pool.abandon())
        p.ledger.let_go(p.schema_wait.clear())
        for batch in p.batcher.drain():
            self._launch(batch)
        if len(p.deliveries):
            log.info("draining", batches=len(p.deliveries), deadline_s=self._config.shutdown.drain_timeout_s)
        # Committing as batches finish keeps the send window moving (it counts rows sent and not yet committed).
        while len(p.deliveries) and (remaining := deadline - clock.now()) > 0:
            await p.deliveries.wait(min(COMMIT_INTERVAL_S, remaining))
            await self._commit_within({}, min(COMMIT_TIMEOUT_S, max(0.0, deadline - clock.now())))
        if cancelled := await p.deliveries.cancel():
            log.warning("drain deadline passed; unfinished records stay uncommitted", tasks=cancelled)
        if not await self._commit_within(await self._idle_positions(), COMMIT_TIMEOUT_S):
            log.warning("the final commit did not finish in time; the next owner starts from the last commit")
        await p.pool.close()
        try:
            await asyncio.wait_for(p.consumer.close(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("the consumer did not close in time; its group will notice after the session timeout")

    # -- rebalances (called inside the owner loop's fetch) ------------------------------------------------------

    async def assigned(self, partitions: Sequence[PartitionKey]) -> None:
        self.parts.ledger.assign(partitions)
        for topic, partition in partitions:
            self._metrics.partition_assigned(topic, partition)
        self._metrics.rebalances.labels("assigned").inc(len(partitions))
        log.info("partitions assigned", partitions=_names(partitions))
        self._on_rebalance()

    async def revoked(self, partitions: Sequence[PartitionKey]) -> None:
        """Let the revoked partitions' batches finish (up to the deadline), commit what is done, let go."""
        p, clock = self.parts, self._clock
        keys = set(partitions)
        states = [p.ledger.partitions[k] for k in partitions if k in p.ledger.partitions]
        p.ledger.let_go(p.schema_wait.drop(keys))
        deadline = clock.now() + self._config.kafka.revoke_timeout_s
        if self._drain_deadline is not None:
            # The close's revoke: the drain already waited for this work, and gave up on what is left.
            deadline = min(deadline, self._drain_deadline)
        # Their records in the workers come back as rows (or poison) first, to be batched with the rest.
        await self._settle_transforms(deadline, "a transform failed during a rebalance")
        for batch in p.batcher.drain():
            self._launch(batch)
        # A halted partition's records after its poison record are never done: nothing to wait for.
        awaited = [s for s in states if not s.halted]
        while any(not s.idle for s in awaited) and (remaining := deadline - clock.now()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(p.ledger.progress.wait(), min(COMMIT_INTERVAL_S, remaining))
            # The kept partitions' commits follow their deliveries, and so does the send window.
            await self._commit({})
        committed = await self._commit(await self._idle_positions())
        unfinished = sum(not s.idle for s in awaited)
        p.ledger.retire(keys)
        for topic, partition in partitions:
            self._metrics.partition_revoked(topic, partition)
        self._paused -= keys
        self._metrics.rebalances.labels("revoked").inc(len(partitions))
        log.info("partitions revoked", partitions=_names(partitions), committed=committed, unfinished=unfinished)
        self._on_rebalance()

    async def lost(self, partitions: Sequence[PartitionKey]) -> None:
        """Another member may own these already: commit nothing, forget them."""
        p, keys = self.parts, set(partitions)
        p.ledger.let_go(p.schema_wait.drop(keys))
        p.ledger.retire(keys)
        for topic, partition in partitions:
            self._metrics.partition_revoked(topic, partition)
        self._paused -= keys
        self._metrics.rebalances.labels("lost").inc(len(partitions))
        log.warning("partitions lost", partitions=_names(partitions))
        self._on_rebalance()


def _names(partitions: Sequence[PartitionKey]) -> list[str]:
    return [f"{topic}[{partition}]" for topic, partition in partitions]
