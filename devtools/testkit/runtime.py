"""The runtime without Kafka, a network or real time: an in-memory broker, a scripted Post API, a recording
dead-letter topic, all on an event loop whose clock fast-forwards whenever every task waits (looptime).

A scenario is a coroutine; `run_virtual` runs it to the end in milliseconds of real time however many seconds of
loop time it spans, deterministically.
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import looptime
import orjson
from pydantic import SecretStr

from bridge.config.model import (
    AvroConfig,
    BatchConfig,
    BridgeConfig,
    BufferConfig,
    KafkaConfig,
    PostApiConfig,
    PostApiKeys,
    RouteConfig,
    ShutdownConfig,
    TransformConfig,
    UploadConfig,
)
from bridge.decoding.registry import RawDecoder
from bridge.decoding.transform import Rules
from bridge.kafka.consumer import PartitionKey, Record
from bridge.kafka.dead_letter_producer import Reason
from bridge.kafka.memory import MemoryBroker, MemoryConsumer
from bridge.ops.metrics import Metrics
from bridge.postapi.uploader import Reply, Uploader
from bridge.runtime.assembly import Runtime, assemble
from bridge.runtime.clock import LoopClock

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "events"
GROUP = "bridge"
APP = 4242
KEY = "runtime-kit-key-0123456789"
WALL_AT_ZERO = float(int(time.time()))
"""Wall time at loop time 0: events are stamped near it."""

T = TypeVar("T")


def run_virtual(scenario: Coroutine[Any, Any, T]) -> T:
    """Run `scenario` on a fresh loop whose time starts at 0 and jumps ahead whenever nothing is ready to run."""
    loop = looptime.new_event_loop(start=0)
    try:
        return loop.run_until_complete(scenario)
    finally:
        loop.close()


def event(seq: int, age_s: float = 0.0, **fields: Any) -> bytes:
    """A JSON events record of the contract; `seq` becomes its profile_id, so every row names its record."""
    record = {
        "application_id": APP,
        "profile_id": f"u{seq}",
        "event_name": "level_up",
        "event_timestamp": int((WALL_AT_ZERO - age_s) * 1000),
        **fields,
    }
    return orjson.dumps(record)


@dataclass
class Answer:
    status: int = 200
    latency_s: float = 0.05
    retry_after: str | None = None


@dataclass
class Request:
    sent_at: float
    status: int
    profiles: list[str]


@dataclass
class ScriptedPostApi:
    """A Post API transport whose answer to each request a test decides; it records every request and row."""

    answer: Callable[[int, float], Answer] = lambda _n, _t: Answer()
    """(request number, loop time) -> what to answer, after how long."""
    on_send: Callable[[list[str]], None] = lambda _profiles: None
    """Called with a request's rows as it goes on the wire."""
    requests: list[Request] = field(default_factory=list)

    async def post(self, url: str, params: Mapping[str, str], body: bytes, timeout_s: float) -> Reply:
        now = asyncio.get_running_loop().time()
        rows = list(csv.DictReader(io.StringIO(body.decode())))
        profiles = [row["profile_id"] for row in rows]
        self.on_send(profiles)
        answer = self.answer(len(self.requests), now)
        request = Request(now, answer.status, profiles)
        self.requests.append(request)
        if answer.latency_s >= timeout_s:
            await asyncio.sleep(timeout_s)
            raise TimeoutError
        await asyncio.sleep(answer.latency_s)
        return Reply(answer.status, answer.retry_after, b"")

    def accepted(self) -> list[str]:
        return [p for r in self.requests if r.status == 200 for p in r.profiles]


@dataclass
class RecordedDeadLetters:
    """A dead-letter topic that acknowledges at once and keeps what it was given."""

    letters: list[tuple[str, int, int, Reason, str]] = field(default_factory=list)

    async def write(self, message: Record, reason: Reason, detail: str) -> None:
        self.letters.append((message.topic(), message.partition(), message.offset(), reason, detail))


def config(**sections: Any) -> BridgeConfig:
    """A JSON events route on `TOPIC`, no workers, and `sections` over the defaults."""
    base: dict[str, Any] = {
        "kafka": KafkaConfig(bootstrap_servers="memory:0", group_id=GROUP, revoke_timeout_s=3),
        "avro": AvroConfig(schema_registry_url="http://127.0.0.1:9"),
        "routes": [RouteConfig(topics=[TOPIC], method="events", format="json")],
        "post_api": PostApiConfig(url="http://post-api"),
        "transform": TransformConfig(workers=0),
        "batch": BatchConfig(),
        "upload": UploadConfig(),
        "buffer": BufferConfig(),
        "shutdown": ShutdownConfig(),
    }
    base.update(sections)
    return BridgeConfig(**base)


@dataclass
class Member:
    """One bridge of the group, in process."""

    runtime: Runtime
    consumer: MemoryConsumer
    metrics: Metrics
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.runtime.loop.run())

    async def stop(self) -> float:
        """SIGTERM: how long (loop time) the bridge took to end."""
        assert self.task is not None
        started = asyncio.get_running_loop().time()
        self.runtime.loop.stop()
        await self.task
        return asyncio.get_running_loop().time() - started


def member(
    broker: MemoryBroker,
    api: ScriptedPostApi,
    bridge: BridgeConfig | None = None,
    dead_letters: RecordedDeadLetters | None = None,
) -> Member:
    bridge = bridge or config()
    consumer = MemoryConsumer(broker, bridge.kafka.group_id)
    metrics = Metrics()
    clock = LoopClock(WALL_AT_ZERO)
    keys = PostApiKeys(SecretStr(KEY), {})
    # Seeded: the backoff's jitter decides which batch overtakes which.
    uploader = Uploader(api, bridge.post_api.url, keys, bridge.upload, metrics, clock, random.Random(7))
    rules = Rules(default_application=None, keyed=None, max_future_s=bridge.post_api.max_future_s)
    runtime = assemble(
        bridge,
        lambda _on_error: consumer,
        RawDecoder(ROOT / "schemas" / "appmetrica_event.avsc"),
        None,
        rules,
        uploader,
        dead_letters,
        metrics,
        clock,
    )
    return Member(runtime, consumer, metrics)


async def until(condition: Callable[[], bool], timeout_s: float = 600.0, step_s: float = 0.05) -> None:
    """Wait (loop time) until `condition` holds; fail the test when it does not within `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout_s} s of loop time")
        await asyncio.sleep(step_s)


def produce(broker: MemoryBroker, count: int, partitions: int = 1, start: int = 0, **fields: Any) -> None:
    for seq in range(start, start + count):
        broker.produce(TOPIC, event(seq, **fields), partition=seq % partitions)


def ends(broker: MemoryBroker, partitions: int) -> dict[PartitionKey, int]:
    return {(TOPIC, p): broker.end_offset((TOPIC, p)) for p in range(partitions)}
