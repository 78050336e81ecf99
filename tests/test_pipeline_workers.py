"""The owner loop's side of the transform workers, without Kafka: a worker that dies while chunks are in flight,
and fetching that waits while the workers are behind."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, cast

import psutil
import pytest
from confluent_kafka import TopicPartition

from bridge.config import AvroConfig, BatchConfig, BridgeConfig, KafkaConfig, TransformConfig
from bridge.decode import RawDecoder
from bridge.metrics import Metrics
from bridge.pipeline import QUEUED_PER_WORKER, Pipeline
from bridge.source import Source
from bridge.transform import Rules
from bridge.upload import Uploader
from devtools.testkit.records import ROOT, event, raw_avro

SCHEMA_FILE = ROOT / "schemas" / "appmetrica_event.avsc"


class Message:
    """What the pipeline reads of a Kafka message."""

    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self._partition, self._offset, self._value = partition, offset, value

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value


class NoSource:
    def __init__(self, *_: Any) -> None:
        pass


def pipeline(workers: int, source: type[Any] = NoSource) -> Pipeline:
    config = BridgeConfig(
        kafka=KafkaConfig(bootstrap_servers="127.0.0.1:1", topics=["t"]),
        avro=AvroConfig(format="raw", schema_file=Path(SCHEMA_FILE)),
        transform=TransformConfig(workers=workers),
        batch=BatchConfig(max_rows=100_000, linger_ms=600_000),
    )
    decoder = RawDecoder(SCHEMA_FILE)
    rules = Rules(default_application=4242, keyed=None, max_future_s=3600)
    # Nothing here reaches Kafka or the Post API: batches stay open (100,000 rows, a ten-minute linger).
    return Pipeline(config, cast(type[Source], source), decoder, rules, cast(Uploader, None), None, Metrics())


async def test_a_worker_dying_mid_chunk_fails_the_loop_and_lets_go_of_what_it_never_transformed() -> None:
    bridge = pipeline(workers=1)
    await bridge._start_workers()
    now_ms = int(time.time() * 1000)
    value = raw_avro(event(1, now_ms))
    messages = [Message(p, o, value) for o in range(5000) for p in range(2)]
    await bridge.assigned([TopicPartition("t", 0), TopicPartition("t", 1)])
    bridge._waiting.extend(bridge._hold(messages))
    await bridge._take_waiting()
    assert bridge._transforming, "chunks are in the workers"
    for worker in psutil.Process().children():
        if "--multiprocessing-fork" in worker.cmdline():
            worker.kill()
    await bridge._settle_transforms(time.monotonic() + 30)
    try:
        assert isinstance(bridge._transform_failed, BrokenProcessPool)
        applied = bridge._batcher.rows
        assert applied < len(messages), "some chunks never came back"
        assert bridge.held == (applied, applied * len(value)), "what never came back is no longer held"
        # Only records that made rows are still tracked: nothing (a revoke, the close) waits for the others.
        assert all(state.idle for state in bridge._partitions.values()) == (applied == 0)
    finally:
        assert bridge._pool is not None
        bridge._pool.shutdown(wait=True, cancel_futures=True)


async def test_in_process_and_worker_transforms_batch_the_same_lines() -> None:
    now_ms = int(time.time() * 1000)
    messages = [Message(seq % 2, seq // 2, raw_avro(event(seq, now_ms))) for seq in range(3000)]
    bodies = []
    for workers in (0, 2):
        bridge = pipeline(workers)
        await bridge._start_workers()
        await bridge.assigned([TopicPartition("t", 0), TopicPartition("t", 1)])
        bridge._waiting.extend(bridge._hold(messages))
        await bridge._take_waiting()
        await bridge._settle_transforms(time.monotonic() + 30)
        bodies.append(sorted(batch.body() for batch in bridge._batcher.drain()))
        if bridge._pool is not None:
            bridge._pool.shutdown(wait=True)
    assert bodies[0] == bodies[1]
    assert len(bodies[0]) == 1, "one application, one set of columns: one batch"


class Backlog:
    """A partition with 30,000 records ready at once, fetched as fast as the owner loop asks; it notes how many
    chunks were in the workers each time the loop fetched."""

    records = 30_000

    def __init__(self, _: Any, __: Any, owner: Pipeline, ___: Any) -> None:
        self._owner = owner
        value = raw_avro(event(1, int(time.time() * 1000)))
        self._messages = [Message(0, offset, value) for offset in range(self.records)]
        self.fetched = 0
        self.queued_at_fetch: list[int] = []

    async def start(self) -> None:
        await self._owner.assigned([TopicPartition("t", 0)])

    async def fetch(self, max_records: int, timeout_s: float) -> list[Message]:
        self.queued_at_fetch.append(len(self._owner._transforming))
        batch = self._messages[self.fetched : self.fetched + max_records]
        self.fetched += len(batch)
        # As a consumer does: give the event loop a turn, and wait out the timeout when there is nothing.
        await asyncio.sleep(0 if batch else timeout_s)
        return batch

    async def commit(self, _: Any) -> bool:
        return True

    async def reachable(self) -> bool:
        return True

    async def high_watermarks(self, _: Any) -> dict[tuple[str, int], int]:
        return {}

    async def close(self) -> None:
        return None


async def test_the_owner_loop_stops_fetching_while_the_workers_have_enough_queued() -> None:
    bridge = pipeline(workers=1, source=Backlog)
    source = cast(Backlog, bridge._source)
    running = asyncio.create_task(bridge.run())
    try:
        for _ in range(600):
            if bridge._batcher.rows == Backlog.records:
                break
            await asyncio.sleep(0.05)
        assert bridge._batcher.rows == Backlog.records, "every record was transformed"
        # Fetching is five times quicker than one worker: without the wait, all 30 chunks would queue at once,
        # held in this process's memory rather than in Kafka.
        assert max(source.queued_at_fetch) < QUEUED_PER_WORKER
        assert len(source.queued_at_fetch) > Backlog.records // 5000, "it fetched again as the worker caught up"
    finally:
        bridge.stop()
        # The drain launches the open batch at an uploader that is not there: its task fails, and so does the run.
        with pytest.raises(AttributeError):
            await asyncio.wait_for(running, 60)
        assert isinstance(bridge._task_failed, AttributeError), "the failed task is what fails the run"


async def test_records_of_a_partition_never_assigned_are_not_held() -> None:
    bridge = pipeline(workers=0)
    await bridge.assigned([TopicPartition("t", 0)])
    value = raw_avro(event(1, int(time.time() * 1000)))
    held = bridge._hold([Message(p, o, value) for o in range(100) for p in range(2)])
    assert {item.state.partition for item in held} == {0}
    assert bridge.held == (100, 100 * len(value))
    assert list(bridge._partitions) == [("t", 0)], "nothing tracks partition 1, so nothing can commit it"
