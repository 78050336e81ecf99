"""The Kafka side: one asyncio consumer, owned by one loop, that fetches, pauses, resumes and commits.

`confluent_kafka.aio.AIOConsumer` runs every call in a worker thread, so the event loop never blocks on
librdkafka; it lets one call through at a time, which is why only the pipeline's owner loop (and the
rebalance callbacks it triggers) may call it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import structlog
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.aio import AIOConsumer

from bridge.config import KafkaConfig
from bridge.kafka_logs import client_conf

log = structlog.get_logger("bridge.source")

Partitions = Sequence[TopicPartition]


class RebalanceListener(Protocol):
    async def assigned(self, partitions: Partitions) -> None: ...
    async def revoked(self, partitions: Partitions) -> None: ...
    async def lost(self, partitions: Partitions) -> None: ...


def consumer_config(config: KafkaConfig, on_error: Callable[[KafkaError], Awaitable[None]]) -> dict[str, Any]:
    """librdkafka settings: the operator's properties, with the ones the commit rule depends on forced."""
    conf: dict[str, Any] = {
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        # Prefetched records, which the bridge's own buffer limits do not see: 16 MiB is a second and more of
        # the fastest rate measured, where librdkafka's default (64 MiB) only adds memory.
        "queued.max.messages.kbytes": 16384,
        **config.properties,
        "bootstrap.servers": config.bootstrap_servers,
        "group.id": config.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "error_cb": on_error,
        **client_conf(),
    }
    return conf


class Source:
    """Fetches record batches from every route's topics, in one consumer group, and commits the positions given."""

    def __init__(
        self,
        config: KafkaConfig,
        topics: Sequence[str],
        listener: RebalanceListener,
        on_error: Callable[[KafkaError], Awaitable[None]],
    ) -> None:
        self._config = config
        self._topics = list(topics)
        self._listener = listener
        self._on_error = on_error
        self._consumer: AIOConsumer | None = None

    async def start(self) -> None:
        consumer = AIOConsumer(consumer_config(self._config, self._on_error), max_workers=2)
        self._consumer = consumer

        def relay(handler: Callable[[Partitions], Awaitable[None]]) -> Callable[[Any, Partitions], Awaitable[None]]:
            async def callback(_: Any, partitions: Partitions) -> None:
                await handler(partitions)

            return callback

        await consumer.subscribe(
            self._topics,
            on_assign=relay(self._listener.assigned),
            on_revoke=relay(self._listener.revoked),
            on_lost=relay(self._listener.lost),
        )

    @property
    def _live(self) -> AIOConsumer:
        if self._consumer is None:
            raise RuntimeError("the source is not started")
        return self._consumer

    async def fetch(self, max_records: int, timeout_s: float) -> list[Any]:
        """Up to `max_records` records; broker-side errors are logged and left out."""
        messages = await self._live.consume(max_records, timeout_s)
        records = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.error("fetch error", error=error.str(), topic=message.topic(), partition=message.partition())
        return records

    async def commit(self, positions: Sequence[TopicPartition]) -> bool:
        """Commit synchronously; False (and a warning) when Kafka refused, for example mid-rebalance."""
        try:
            results = await self._live.commit(offsets=list(positions), asynchronous=False)
        except KafkaException as exc:
            log.warning("commit failed", error=str(exc.args[0]) if exc.args else type(exc).__name__)
            return False
        failed = [p for p in results or [] if p.error is not None]
        for p in failed:
            log.warning("commit failed", topic=p.topic, partition=p.partition, error=str(p.error))
        return not failed

    async def pause(self, partitions: Partitions) -> None:
        if partitions:
            await self._live.pause(list(partitions))

    async def resume(self, partitions: Partitions) -> None:
        if partitions:
            await self._live.resume(list(partitions))

    async def high_watermarks(self, partitions: Partitions) -> dict[tuple[str, int], int]:
        """The end offset of each partition as last seen by fetches (no broker round trip)."""
        ends = {}
        for p in partitions:
            try:
                _, high = await self._live.get_watermark_offsets(p, cached=True)
            except KafkaException:
                continue
            if high >= 0:
                ends[(p.topic, p.partition)] = high
        return ends

    async def reachable(self, timeout_s: float = 2.0) -> bool:
        """Whether a metadata request to the cluster answers."""
        try:
            await self._live.list_topics(timeout=timeout_s)
        except KafkaException:
            return False
        return True

    async def close(self) -> None:
        # close() leaves the group, which revokes the partitions: their callback still needs the consumer.
        if self._consumer is not None:
            await self._consumer.close()
            self._consumer = None
