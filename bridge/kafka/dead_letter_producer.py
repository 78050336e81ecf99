"""Records that can never be delivered, to the dead-letter topic with their original bytes and reason headers.

A dead-lettered record counts as done only once Kafka acknowledges the write (acks=all, idempotent producer).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer

from bridge.errors import StartupError
from bridge.kafka.clients import client_properties
from bridge.kafka.headers import MessageHeaders, read_headers
from bridge.kafka.logs import REPEATS, client_conf
from bridge.ops.logs import REDACTOR
from bridge.runtime.threads import in_daemon_thread

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
HEADER_VALUE_SHA256 = "appmetrica.dlq.value.sha256"
HEADER_KEY_DROPPED = "appmetrica.dlq.key.dropped"
"""Set, with `appmetrica.dlq.key.sha256`, when even the key alone was too large for the dead-letter topic."""
HEADER_KEY_SHA256 = "appmetrica.dlq.key.sha256"
HEADER_HEADERS_DROPPED = "appmetrica.dlq.headers.dropped"
"""The original headers the dead letter could not keep: a JSON array, an object per header with its `position`
among the original headers, `name` (hex; null when the Kafka client library lost it), `value` (base64, or null)
and `why`. confluent-kafka writes only UTF-8 header names, and loses all but the first name that is not UTF-8 of
a message it reads."""

WAITING = "Kafka unreachable while checking the dead-letter topic; waiting for it"
_RETRY_S = 5.0
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
DETAIL_LIMIT = 1000
"""Characters of a detail the header keeps."""


class DeadLetters:
    """An idempotent producer to the dead-letter topic; `write` returns once Kafka has the record."""

    def __init__(self, topic: str, bootstrap_servers: str, properties: dict[str, Any]) -> None:
        self.topic = topic
        conf = {
            **client_properties(properties),
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

        The original headers are kept byte for byte, but for names the Kafka client library cannot write or read
        (not UTF-8), which `appmetrica.dlq.headers.dropped` records. A copy the topic refuses as too large is
        written once more without its value and original headers (`appmetrica.dlq.value.dropped` and `.sha256`),
        and if even that is too large, once more without its key (`appmetrica.dlq.key.dropped` and `.sha256`):
        a copy that can never be written would hold its partition's commit back for good.
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
        where = {"source_topic": message.topic(), "partition": message.partition(), "offset": message.offset()}
        copies = _copies(message.key(), message.value(), read_headers(message), ours)
        copy = next(copies)
        while True:
            try:
                await self._produce(copy.key, copy.value, copy.headers)
                return
            except KafkaException as exc:
                smaller = next(copies, None) if exc.args[0].code() in _TOO_LARGE else None
                if smaller is not None:
                    log.error(smaller.dropping, topic=self.topic, **where, **smaller.sizes)
                    copy = smaller
                    continue
                log.error("dead-letter write failed, retrying", topic=self.topic, **where, error=str(exc))
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


class _Copy(NamedTuple):
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]]
    dropping: str = ""
    """What the log says when this smaller copy replaces one the topic refused as too large."""
    sizes: dict[str, int] = {}


def _copies(
    key: bytes | None, value: bytes | None, original: MessageHeaders, ours: list[tuple[str, str | bytes | None]]
) -> Iterator[_Copy]:
    """The dead letter whole, then smaller each time the topic refuses one as too large: without its value and
    original headers, then without its key too. Only the bridge's own headers, short by construction, remain."""
    yield _Copy(key, value, [*_writable(original), *ours])
    if value is None and not original.items and not original.lost and original.failure is None:
        smaller = ours
    else:
        smaller = [*ours, *_dropped(HEADER_VALUE_DROPPED, HEADER_VALUE_SHA256, value, "with these headers")]
        yield _Copy(
            key,
            None,
            smaller,
            "dead-letter copy too large; writing it without its value and original headers",
            {"value_bytes": len(value or b"")},
        )
    if key is not None:
        yield _Copy(
            None,
            None,
            [*smaller, *_dropped(HEADER_KEY_DROPPED, HEADER_KEY_SHA256, key, "even alone")],
            "dead-letter copy too large without its value; writing it without its key too",
            {"key_bytes": len(key)},
        )


def _dropped(
    size_header: str, digest_header: str, data: bytes | None, when: str
) -> list[tuple[str, str | bytes | None]]:
    if data is None:
        return []
    size = f"{len(data)} bytes, too large for the dead-letter topic {when}"
    return [(size_header, size.encode()), (digest_header, hashlib.sha256(data).hexdigest().encode())]


def _writable(headers: MessageHeaders) -> list[tuple[str, str | bytes | None]]:
    """The original headers the producer can write (UTF-8 names), then a record of those it cannot."""
    kept: list[tuple[str, str | bytes | None]] = []
    dropped: list[dict[str, Any]] = []
    unnamed = {header.position for header in headers.lost}
    positions = (position for position in range(len(headers.items) + len(unnamed)) if position not in unnamed)
    for position, (name, value) in zip(positions, headers.items, strict=False):
        try:
            kept.append((name.decode(), value))
        except UnicodeDecodeError:
            why = "the name is not UTF-8, which the Kafka client library cannot write"
            dropped.append({"position": position, "name": name.hex(), "value": _base64(value), "why": why})
    for lost in headers.lost:
        why = "the Kafka client library lost the name (not UTF-8) while reading the record"
        dropped.append({"position": lost.position, "name": None, "value": _base64(lost.value), "why": why})
    if headers.failure is not None:
        dropped.append({"position": None, "name": None, "value": None, "why": headers.failure})
    if dropped:
        dropped.sort(key=lambda entry: -1 if entry["position"] is None else entry["position"])
        kept.append((HEADER_HEADERS_DROPPED, json.dumps(dropped).encode()))
    return kept


def _base64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode()


def _settle(future: asyncio.Future[None], error: KafkaError | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(KafkaException(error))
