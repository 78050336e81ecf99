"""The transform pool with real worker processes, without Kafka: a worker that dies while chunks are in flight,
the same lines from workers as in process, and fetching that waits while the workers are behind."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import psutil
import pytest

from bridge.config.model import AvroConfig, BatchConfig, BridgeConfig, KafkaConfig, TransformConfig
from bridge.decoding.lanes import Lane, lanes
from bridge.decoding.registry import RawDecoder
from bridge.decoding.transform import Rules
from bridge.kafka.memory import MemoryBroker, MemoryConsumer
from bridge.ops.metrics import Metrics
from bridge.runtime.clock import LoopClock
from bridge.runtime.ledger import Ledger
from bridge.runtime.transforms import QUEUED_PER_WORKER, TransformPool, chunks
from devtools.testkit.records import ROOT, event, raw_avro
from devtools.testkit.runtime import ScriptedPostApi, member, run_virtual

SCHEMA_FILE = ROOT / "schemas" / "appmetrica_event.avsc"
RULES = Rules(default_application=4242, keyed=None, max_future_s=3600)
CONFIG = BridgeConfig(
    kafka=KafkaConfig(bootstrap_servers="memory:0", topics=["t"]),
    avro=AvroConfig(format="raw", schema_file=Path(SCHEMA_FILE)),
)


def lanes_of_t() -> dict[str, Lane]:
    return dict(lanes(CONFIG, RawDecoder(SCHEMA_FILE), None))


def broker_with(values: list[bytes], partitions: int) -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic("t", partitions)
    for seq, value in enumerate(values):
        broker.produce("t", value, partition=seq % partitions)
    return broker


async def fetched(values: list[bytes], partitions: int) -> tuple[Ledger, list[object]]:
    """A ledger holding every record of a fresh topic, fetched by an in-memory consumer."""
    broker = broker_with(values, partitions)
    consumer = MemoryConsumer(broker, "g")
    ledger = Ledger(Metrics())

    class Listener:
        async def assigned(self, keys: list[tuple[str, int]]) -> None:
            ledger.assign(keys)

        async def revoked(self, keys: list[tuple[str, int]]) -> None: ...

        async def lost(self, keys: list[tuple[str, int]]) -> None: ...

    await consumer.subscribe(["t"], Listener())  # type: ignore[arg-type]
    records = await consumer.fetch(len(values), 0.1)
    return ledger, ledger.hold(records)  # type: ignore[return-value]


async def test_a_worker_dying_mid_chunk_fails_the_pool_and_lets_go_of_what_it_never_transformed() -> None:
    value = raw_avro(event(1, int(time.time() * 1000)))
    ledger, held = await fetched([value] * 10_000, partitions=2)
    pool = TransformPool(1, 60, RULES, LoopClock())
    await pool.start()
    try:
        for lane, chunk in chunks(held, lanes_of_t()):  # type: ignore[arg-type]
            pool.submit(chunk, lane)
        for worker in psutil.Process().children():
            if "spawn_main" in " ".join(worker.cmdline()):
                worker.kill()
        await pool.settle(asyncio.get_running_loop().time() + 30)
        applied = 0
        try:
            for chunk, _ in pool.results():
                applied += len(chunk)
        except BrokenProcessPool:
            pass
        else:
            pytest.fail("the dead worker's chunks were handed back as results")
        assert isinstance(pool.failed, BrokenProcessPool)
        assert applied < len(held), "some chunks never came back"
        ledger.let_go(pool.abandon())
        assert (ledger.records, ledger.bytes) == (applied, applied * len(value)), "what never came back is let go"
        assert ledger.advance({key: 10_000 for key in ledger.partitions}) == {}, "nothing let go of ever commits"
    finally:
        await pool.close()


async def test_in_process_and_worker_transforms_make_the_same_lines() -> None:
    now_ms = int(time.time() * 1000)
    values = [raw_avro(event(seq, now_ms)) for seq in range(3000)]
    outcomes = []
    for workers in (0, 2):
        _, held = await fetched(values, partitions=2)
        pool = TransformPool(workers, 60, RULES, LoopClock())
        await pool.start()
        for lane, chunk in chunks(held, lanes_of_t()):  # type: ignore[arg-type]
            pool.submit(chunk, lane)
        await pool.settle(asyncio.get_running_loop().time() + 30)
        outcomes.append([(result.groups, list(result.lines)) for _, result in pool.results()])
        await pool.close()
    assert outcomes[0] == outcomes[1]


async def test_the_owner_loop_stops_fetching_while_the_workers_have_enough_queued() -> None:
    records = 30_000
    broker = broker_with([raw_avro(event(1, int(time.time() * 1000)))] * records, partitions=1)
    settings = CONFIG.model_copy(
        update={
            "transform": TransformConfig(workers=1),
            # Nothing reaches the Post API: the batch stays open (100,000 rows, a ten-minute linger).
            "batch": BatchConfig(max_rows=100_000, linger_ms=600_000),
            "kafka": KafkaConfig(bootstrap_servers="memory:0", topics=["t"], group_id="g"),
        }
    )
    bridge = member(broker, ScriptedPostApi(), settings)
    pool = bridge.runtime.loop.parts.pool
    queued_at_fetch: list[int] = []
    fetch = bridge.consumer.fetch

    async def noting(max_records: int, timeout_s: float) -> list[object]:
        queued_at_fetch.append(pool.queued)
        return await fetch(min(max_records, 5000), timeout_s)  # type: ignore[return-value]

    bridge.consumer.fetch = noting  # type: ignore[method-assign,assignment]
    bridge.start()
    batcher = bridge.runtime.loop.parts.batcher
    try:
        for _ in range(600):
            if batcher.rows == records:
                break
            await asyncio.sleep(0.05)
        assert batcher.rows == records, "every record was transformed"
        # Fetching is five times quicker than one worker: without the wait, all 30 chunks would queue at once,
        # held in this process's memory rather than in Kafka.
        assert max(queued_at_fetch) < QUEUED_PER_WORKER
        assert len(queued_at_fetch) > records // 5000, "it fetched again as the worker caught up"
    finally:
        await bridge.stop()


def test_waiting_for_results_sleeps_until_the_oldest_chunk_is_back() -> None:
    """A later chunk back first is not a result yet (results come in the order sent): the owner loop must sleep,
    not turn at full speed until the first one is back (it did, at 13 times the CPU, until the benchmark showed it)."""

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        pool = TransformPool(2, 60, RULES, LoopClock())
        first: asyncio.Future[object] = loop.create_future()
        second: asyncio.Future[object] = loop.create_future()
        second.set_result(None)
        # As if sent to two workers, the second answered first.
        pool._sent.extend([((), first, 0.0), ((), second, 0.0)])  # type: ignore[list-item]
        loop.call_later(5, first.set_result, None)
        started = loop.time()
        turns = 0
        while not first.done() and turns < 100:
            await pool.wait(1.0)
            turns += 1
        assert turns <= 6, f"{turns} turns in 5 s"
        return loop.time() - started

    assert run_virtual(scenario()) >= 5
