"""Records that can never be delivered, to the dead-letter topic with their original bytes and reason headers.

A dead-lettered record counts as done only once Kafka acknowledges the write (acks=all, idempotent producer).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, Literal

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer

from bridge.kafka_logs import REPEATS, client_conf
from bridge.logs import REDACTOR
from bridge.threads import in_daemon_thread

log = structlog.get_logger("bridge.deadletter")

Reason = Literal["decode", "schema", "invalid", "expired", "rejected"]

HEADER_REASON = "appmetrica.dlq.reason"
HEADER_DETAIL = "appmetrica.dlq.detail"
HEADER_TOPIC = "appmetrica.dlq.source.topic"
HEADER_PARTITION = "appmetrica.dlq.source.partition"
HEADER_OFFSET = "appmetrica.dlq.source.offset"
HEADER_REPLAYED = "appmetrica.dlq.replayed"
"""Set by `dead-letters replay` on what it sends back: the dead letter's own coordinates (topic:partition:offset)."""
HEADER_ORIGINAL_TOPIC = "appmetrica.dlq.original.topic"
HEADER_ORIGINAL_PARTITION = "appmetrica.dlq.original.partition"
HEADER_ORIGINAL_OFFSET = "appmetrica.dlq.original.offset"
"""Where a replayed record was first read from; kept through every later replay."""
HEADER_VALUE_DROPPED = "appmetrica.dlq.value.dropped"

WAITING = "Kafka unreachable while checking the dead-letter topic; waiting for it"
_RETRY_S = 5.0
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
DETAIL_LIMIT = 1000
"""Characters of a detail the header keeps."""


class StartupError(Exception):
    """The bridge cannot start as configured (for example, the dead-letter topic is missing)."""


class DeadLetters:
    """An idempotent producer to the dead-letter topic; `write` returns once Kafka has the record."""

    def __init__(self, topic: str, bootstrap_servers: str, properties: dict[str, Any]) -> None:
        self.topic = topic
        conf = {
            **_client_properties(properties),
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            **client_conf(),
        }
        self._producer = Producer(conf)
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="dead-letter-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        # Delivery callbacks run inside poll(); a thread of its own keeps them off the event loop.
        while not self._closed.is_set():
            self._producer.poll(0.1)

    async def check_topic(self, timeout_s: float = 5.0) -> None:
        """Raise StartupError naming the topic when Kafka does not have it; wait while Kafka does not answer."""
        while True:
            try:
                metadata = await in_daemon_thread(lambda: self._producer.list_topics(self.topic, timeout_s))
            except KafkaException as exc:
                # Down is not refused: start-up waits, alive and not ready, until Kafka answers.
                REPEATS.seen(WAITING, topic=self.topic, error=str(exc.args[0].str() if exc.args else exc))
                await asyncio.sleep(1.0)
                continue
            REPEATS.ended(WAITING)
            break
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise StartupError(
                f"dead-letter topic {self.topic!r} does not exist; create it, or unset kafka.dead_letter_topic "
                "to have poison records stop their partition instead"
            )

    async def write(self, message: Any, reason: Reason, detail: str) -> None:
        """Copy `message` (key, value, headers) to the dead-letter topic with reason headers; retry until acked.

        A copy the topic refuses as too large (a source record near the size limit, plus these headers) is written
        once more without its value and original headers, `appmetrica.dlq.value.dropped` saying so: a copy that
        can never be written would hold its partition's commit back for good.
        """
        # The detail can quote an answer or a record: never a secret, and never so long that Kafka refuses it.
        detail = REDACTOR.redact(detail)[:DETAIL_LIMIT]
        ours: list[tuple[str, str | bytes | None]] = [
            (HEADER_REASON, reason.encode()),
            (HEADER_DETAIL, detail.encode("utf-8", "replace")),
            (HEADER_TOPIC, message.topic().encode()),
            (HEADER_PARTITION, str(message.partition()).encode()),
            (HEADER_OFFSET, str(message.offset()).encode()),
        ]
        value: bytes | None = message.value()
        headers = [*(message.headers() or []), *ours]
        while True:
            try:
                await self._produce(message.key(), value, headers)
                return
            except KafkaException as exc:
                too_large = exc.args[0].code() in _TOO_LARGE
                if too_large and value is not None:
                    dropped = f"{len(value)} bytes, too large for the dead-letter topic with these headers"
                    log.error(
                        "dead-letter copy too large; writing it without its value and original headers",
                        topic=self.topic,
                        source_topic=message.topic(),
                        partition=message.partition(),
                        offset=message.offset(),
                        value_bytes=len(value),
                    )
                    value, headers = None, [*ours, (HEADER_VALUE_DROPPED, dropped.encode())]
                    continue
                log.error(
                    "dead-letter write failed, retrying",
                    topic=self.topic,
                    source_topic=message.topic(),
                    partition=message.partition(),
                    offset=message.offset(),
                    error=str(exc),
                )
                await asyncio.sleep(_RETRY_S)

    async def _produce(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, str | bytes | None]]
    ) -> None:
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[None] = loop.create_future()

        def delivered(error: KafkaError | None, _: Any) -> None:
            loop.call_soon_threadsafe(_settle, acked, error)

        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key, headers=headers, on_delivery=delivered)
                break
            except BufferError:
                await asyncio.sleep(0.05)
        await acked

    async def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is queued for at most `timeout_s`, then stop; what is not acked stays uncommitted."""
        try:
            left = await asyncio.wait_for(in_daemon_thread(lambda: self._producer.flush(timeout_s)), timeout_s + 1)
        except TimeoutError:
            left = len(self._producer)
        if left:
            log.warning("dead-letter producer closed with records unacknowledged", records=left, topic=self.topic)
        self._closed.set()
        # The poller wakes every 0.1 s; joined off the loop so a stuck poll cannot hold the loop.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(in_daemon_thread(self._poller.join), 2.0)


def _settle(future: asyncio.Future[None], error: KafkaError | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(KafkaException(error))


def _client_properties(properties: dict[str, Any]) -> dict[str, Any]:
    """The connection properties a producer shares with the consumer (security and the like)."""
    consumer_only = (
        "auto.offset.reset",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "max.poll.interval.ms",
        "heartbeat.interval.ms",
        "fetch.",
        "group.",
        "isolation.level",
        "enable.partition.eof",
        "queued.",
        "auto.commit",
    )
    return {k: v for k, v in properties.items() if not k.startswith(consumer_only)}
