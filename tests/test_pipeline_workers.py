"""The owner loop's side of the transform workers, without Kafka: a worker that dies while chunks are in flight."""

from __future__ import annotations

import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, cast

import psutil

from bridge.avro import contract_schema, parse
from bridge.config import AvroConfig, BridgeConfig, KafkaConfig, TransformConfig
from bridge.decode import RawDecoder
from bridge.metrics import Metrics
from bridge.pipeline import Pipeline
from bridge.source import Source
from bridge.transform import Rules
from bridge.upload import Uploader
from tests.harness import ROOT, event, raw_avro

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


def pipeline(workers: int) -> Pipeline:
    config = BridgeConfig(
        kafka=KafkaConfig(bootstrap_servers="127.0.0.1:1", topics=["t"]),
        avro=AvroConfig(format="raw", schema_file=Path(SCHEMA_FILE)),
        transform=TransformConfig(workers=workers),
    )
    decoder = RawDecoder(SCHEMA_FILE, parse(contract_schema()))
    rules = Rules(default_application=4242, keyed=None, max_future_s=3600)
    # Nothing here reaches Kafka or the Post API: batches stay open (10,000 rows, a linger nobody checks).
    return Pipeline(config, cast(type[Source], NoSource), decoder, rules, cast(Uploader, None), None, Metrics())


async def test_a_worker_dying_mid_chunk_fails_the_loop_and_lets_go_of_what_it_never_transformed() -> None:
    bridge = pipeline(workers=1)
    await bridge._start_workers()
    now_ms = int(time.time() * 1000)
    value = raw_avro(event(1, now_ms))
    messages = [Message(p, o, value) for o in range(5000) for p in range(2)]
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
        bridge._waiting.extend(bridge._hold(messages))
        await bridge._take_waiting()
        await bridge._settle_transforms(time.monotonic() + 30)
        bodies.append(sorted(batch.body() for batch in bridge._batcher.drain()))
        if bridge._pool is not None:
            bridge._pool.shutdown(wait=True)
    assert bodies[0] == bodies[1]
    assert len(bodies[0]) == 1, "one application, one set of columns: one batch"
