"""The Kafka consumer the bridge runs with: confluent-kafka's `AIOConsumer` behind `bridge.kafka.consumer.Consumer`.

`AIOConsumer` runs every call in a worker thread, so the event loop never blocks on librdkafka; it lets one call
through at a time, which is why only the owner loop (and the rebalance callbacks it triggers inside `fetch`) may
call it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog
from confluent_kafka import OFFSET_INVALID, KafkaError, KafkaException, TopicPartition
from confluent_kafka.aio import AIOConsumer

from bridge.config.model import KafkaConfig
from bridge.kafka.consumer import PartitionKey, RebalanceListener, Record
from bridge.kafka.logs import REPEATS, client_conf

log = structlog.get_logger("bridge.source")

COMMIT_FAILED = "commit failed"


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


def _partitions(keys: Sequence[PartitionKey]) -> list[TopicPartition]:
    return [TopicPartition(topic, partition) for topic, partition in keys]


def _keys(partitions: Sequence[TopicPartition]) -> list[PartitionKey]:
    return [(p.topic, p.partition) for p in partitions]


class Source:
    """Fetches record batches from every route's topics in one consumer group, and commits the positions given."""

    def __init__(self, config: KafkaConfig, on_error: Callable[[KafkaError], Awaitable[None]]) -> None:
        self._conf = consumer_config(config, on_error)
        self._consumer: AIOConsumer | None = None

    async def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        consumer = AIOConsumer(self._conf, max_workers=2)
        self._consumer = consumer

        def relay(
            handler: Callable[[Sequence[PartitionKey]], Awaitable[None]],
        ) -> Callable[[Any, Sequence[TopicPartition]], Awaitable[None]]:
            async def callback(_: Any, partitions: Sequence[TopicPartition]) -> None:
                await handler(_keys(partitions))

            return callback

        await consumer.subscribe(
            list(topics),
            on_assign=relay(listener.assigned),
            on_revoke=relay(listener.revoked),
            on_lost=relay(listener.lost),
        )

    @property
    def _live(self) -> AIOConsumer:
        if self._consumer is None:
            raise RuntimeError("the source is not started")
        return self._consumer

    async def fetch(self, max_records: int, timeout_s: float) -> Sequence[Record]:
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

    async def commit(self, positions: Mapping[PartitionKey, int]) -> bool:
        """Commit synchronously; False (and a warning) when Kafka refused, for example mid-rebalance.

        The owner loop commits again until Kafka takes it: one warning per kind of refusal, then a count of them
        while it lasts, and a line when a commit goes through again.
        """
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in positions.items()]
        try:
            results = await self._live.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            kind = error.name() if isinstance(error, KafkaError) else type(exc).__name__
            REPEATS.seen(COMMIT_FAILED, kind, error=str(error) if error is not None else kind)
            return False
        failed = [p for p in results or [] if p.error is not None]
        for p in failed:
            REPEATS.seen(COMMIT_FAILED, p.error.name(), topic=p.topic, partition=p.partition, error=str(p.error))
        if not failed:
            REPEATS.ended(COMMIT_FAILED)
        return not failed

    async def pause(self, partitions: Sequence[PartitionKey]) -> None:
        if partitions:
            await self._live.pause(_partitions(partitions))

    async def resume(self, partitions: Sequence[PartitionKey]) -> None:
        if partitions:
            await self._live.resume(_partitions(partitions))

    async def positions(self, partitions: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        if not partitions:
            return {}
        try:
            found = await self._live.position(_partitions(partitions))
        except KafkaException:
            return {}
        return {(p.topic, p.partition): p.offset for p in found if p.offset != OFFSET_INVALID and p.offset >= 0}

    async def high_watermarks(self, partitions: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        """The end offset of each partition as last seen by fetches (no broker round trip)."""
        ends = {}
        for p in _partitions(partitions):
            try:
                _, high = await self._live.get_watermark_offsets(p, cached=True)
            except KafkaException:
                continue
            if high >= 0:
                ends[(p.topic, p.partition)] = high
        return ends

    async def reachable(self) -> bool:
        try:
            await self._live.list_topics(timeout=2.0)
        except KafkaException:
            return False
        return True

    async def close(self) -> None:
        # close() leaves the group, which revokes the partitions: their callback still needs the consumer.
        if self._consumer is not None:
            await self._consumer.close()
            self._consumer = None
