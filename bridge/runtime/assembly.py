"""Builds the runtime from a checked configuration and its collaborators: the one place the parts meet."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError

from bridge.config.model import BridgeConfig
from bridge.decoding.lanes import lanes
from bridge.decoding.registry import Decoder
from bridge.decoding.transform import Rules
from bridge.kafka.consumer import Consumer
from bridge.ops.metrics import Metrics
from bridge.postapi.uploader import Uploader
from bridge.runtime.batching import Batcher
from bridge.runtime.clock import Clock
from bridge.runtime.deliveries import Deliveries
from bridge.runtime.delivery import DeadLetterSink, Delivery, Totals
from bridge.runtime.ledger import Ledger
from bridge.runtime.loop import OwnerLoop, Parts
from bridge.runtime.readiness import Readiness
from bridge.runtime.schema_wait import SchemaWait
from bridge.runtime.stalls import Stalls
from bridge.runtime.transforms import TransformPool


@dataclass
class Runtime:
    """The running bridge as the service sees it: the loop to run and stop, and what health and progress read."""

    loop: OwnerLoop
    readiness: Readiness
    ledger: Ledger
    totals: Totals
    clock: Clock

    @property
    def heartbeat(self) -> float:
        return self.readiness.heartbeat

    def now(self) -> float:
        return self.clock.now()

    def not_ready(self) -> list[str]:
        return self.readiness.reasons()

    def stalled(self) -> list[str]:
        return self.loop.parts.stalls.described()

    @property
    def held(self) -> tuple[int, int]:
        return self.ledger.records, self.ledger.bytes


def assemble(
    config: BridgeConfig,
    make_consumer: Callable[[Callable[[KafkaError], Awaitable[None]]], Consumer],
    decoder: Decoder,
    own_schemas: Decoder | None,
    rules: Rules,
    uploader: Uploader,
    dead_letters: DeadLetterSink | None,
    metrics: Metrics,
    clock: Clock,
    on_rebalance: Callable[[], None] = lambda: None,
) -> Runtime:
    by_topic = dict(lanes(config, decoder, own_schemas))
    ledger = Ledger(metrics)
    pool = TransformPool(config.transform.workers, config.transform.chunk_timeout_s, rules, clock)
    schema_wait = SchemaWait(by_topic, clock)
    deliveries = Deliveries()
    # One batch may always go past the window: a group change sends at most max_in_flight x max_rows again.
    window = (config.upload.max_in_flight - 1) * config.batch.max_rows
    delivery = Delivery(uploader, dead_letters, config.upload, metrics, ledger, clock, window)
    readiness = Readiness(list(by_topic), ledger, pool, deliveries, schema_wait, uploader, clock)
    batch = config.batch
    parts = Parts(
        consumer=make_consumer(readiness.kafka_error),
        ledger=ledger,
        pool=pool,
        schema_wait=schema_wait,
        batcher=Batcher(batch.max_rows, batch.max_bytes, batch.linger_ms / 1000, clock.now, clock.wall),
        delivery=delivery,
        deliveries=deliveries,
        readiness=readiness,
        stalls=Stalls(ledger, pool, schema_wait, uploader, metrics, clock),
        lanes=by_topic,
        method_of={topic: lane.method for topic, lane in by_topic.items()},
    )
    loop = OwnerLoop(parts, config, metrics, clock, on_rebalance)
    return Runtime(loop, readiness, ledger, delivery.totals, clock)
