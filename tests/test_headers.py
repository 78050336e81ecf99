"""Header names of any bytes, as Go and kcat producers write them, read and dead-lettered without a crash; and a
dead letter that always fits its topic, however large the record's key."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer

# NewTopic is documented in confluent_kafka.admin, which re-exports it without listing it as public.
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.kafka.dead_letter_producer import (
    HEADER_DETAIL,
    HEADER_HEADERS_DROPPED,
    HEADER_KEY_DROPPED,
    HEADER_KEY_SHA256,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_TOPIC,
    HEADER_VALUE_DROPPED,
    HEADER_VALUE_SHA256,
    DeadLetters,
)
from bridge.kafka.headers import NO_HEADERS, LostHeader, MessageHeaders, read_headers
from devtools.testkit.kafka import TopicFactory, consume_all
from devtools.testkit.raw_headers import produce_raw

ONE_BAD = [(b"ok", b"1"), (b"\xff\xfe", b"bad"), (b"after", b"")]
TWO_BAD = [(b"\xc3", b"x"), (b"tail", b"y"), (b"a\xe2\x82", b"z")]
OURS = [HEADER_REASON, HEADER_DETAIL, HEADER_TOPIC, HEADER_PARTITION, HEADER_OFFSET]


class Containing(str):
    """Equal to any text containing it."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and str(self) in other

    __hash__ = str.__hash__


def consumed(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None, Any]]) -> list[Any]:
    produce_raw(bootstrap, topic, records)
    messages = consume_all(bootstrap, topic, len(records))
    assert len(messages) == len(records)
    return messages


def test_header_names_that_are_not_utf8_are_read_as_the_producer_wrote_them(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    many = [(b"k", b"v", ONE_BAD)] * 40
    *ones, two, none = consumed(kafka_bootstrap, new_topic(1), [*many, (b"k2", b"v2", TWO_BAD), (b"k3", b"v3", [])])
    # Many calls, as a run makes: Python then specializes a plain `message.headers()` call site into one that no
    # longer checks for the library's error, and the NULL name is touched.
    assert [read_headers(one) for one in ones] == [MessageHeaders(tuple(ONE_BAD))] * len(many)
    one = ones[0]
    # confluent-kafka keeps only the first name that is not UTF-8; the header after it is known by value only.
    assert read_headers(two) == MessageHeaders(((b"\xc3", b"x"), (b"tail", b"y")), (LostHeader(2, b"z"),))
    assert read_headers(none) is NO_HEADERS
    # Read again, by the bridge or by the library's own accessor, a salvaged message neither raises nor crashes.
    assert read_headers(one) == MessageHeaders(tuple(ONE_BAD))
    assert one.headers() == [("ok", b"1"), ("after", b"")]
    assert two.headers() == [("tail", b"y")]


class Unreadable:
    """A message whose library gives headers it cannot read at all: what a future client version might do."""

    def headers(self) -> Any:
        raise SystemError("headers() returned a result with an exception set")


def test_headers_that_cannot_be_read_at_all_say_why() -> None:
    read = read_headers(Unreadable())
    assert read.items == () and read.failure is not None and "cannot read them" in read.failure


@pytest.fixture
async def dead_letters(kafka_bootstrap: str, new_topic: TopicFactory) -> Any:
    writer = DeadLetters(new_topic(1), kafka_bootstrap, {})
    yield writer
    await writer.close()


async def test_dead_letters_keep_every_header_the_client_can_write_and_record_the_rest(
    kafka_bootstrap: str, new_topic: TopicFactory, dead_letters: DeadLetters
) -> None:
    source = new_topic(1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(source, b"v0", b"k0", headers=[("trace", b"\x00\xffbinary"), ("empty", None), ("trace", b"2")])
    assert producer.flush(30) == 0
    produce_raw(kafka_bootstrap, source, [(b"k1", b"v1", ONE_BAD), (b"k2", b"v2", TWO_BAD)])
    messages = consume_all(kafka_bootstrap, source, 3)
    for message in messages:
        await dead_letters.write(message, "invalid", "a reason")
    letters = consume_all(kafka_bootstrap, dead_letters.topic, 3)
    assert [(m.key(), m.value()) for m in letters] == [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2")]
    plain, one, two = (read_headers(m).items for m in letters)

    assert plain[:3] == ((b"trace", b"\x00\xffbinary"), (b"empty", None), (b"trace", b"2")), "byte for byte"
    assert [name.decode() for name, _ in plain[3:]] == OURS

    assert one[:2] == ((b"ok", b"1"), (b"after", b""))
    assert one[2][0].decode() == HEADER_HEADERS_DROPPED
    assert json.loads(one[2][1] or b"") == [
        {"position": 1, "name": "fffe", "value": base64.b64encode(b"bad").decode(), "why": Containing("UTF-8")}
    ]
    assert [name.decode() for name, _ in one[3:]] == OURS

    assert two[0] == (b"tail", b"y")
    dropped = json.loads(two[1][1] or b"")
    assert [(d["position"], d["name"], d["value"]) for d in dropped] == [(0, "c3", "eA=="), (2, None, "eg==")]


@pytest.fixture
def small_topic(kafka_admin: AdminClient) -> Iterator[str]:
    """A dead-letter topic that takes record batches of at most 2,000 bytes."""
    topic = f"test-small-dlq-{uuid.uuid4().hex[:8]}"
    kafka_admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "2000"})])[topic].result(30)
    yield topic
    kafka_admin.delete_topics([topic])[topic].result(30)


@pytest.mark.parametrize(
    ("key_size", "value_size"), [(8, 5000), (5000, 10), (5000, None)], ids=["value", "key", "key-tombstone"]
)
async def test_a_dead_letter_always_fits_dropping_the_value_then_the_key_with_their_size_and_digest(
    kafka_bootstrap: str, new_topic: TopicFactory, small_topic: str, key_size: int, value_size: int | None
) -> None:
    source = new_topic(1)
    key = bytes(range(256)) * (key_size // 256) + b"k" * (key_size % 256)
    value = None if value_size is None else b"v" * value_size
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(source, value, key, headers=[("big", b"h" * 300)])
    assert producer.flush(30) == 0
    (message,) = consume_all(kafka_bootstrap, source, 1)
    writer = DeadLetters(small_topic, kafka_bootstrap, {})
    try:
        # Before, a key too large for the topic was retried every 5 s forever.
        await asyncio.wait_for(writer.write(message, "decode", "poison"), 30)
    finally:
        await writer.close()
    (letter,) = consume_all(kafka_bootstrap, small_topic, 1)
    headers = dict(letter.headers())
    assert headers[HEADER_REASON] == b"decode" and "big" not in headers, "original headers go first"
    assert letter.value() is None
    if value is not None:
        assert headers[HEADER_VALUE_DROPPED].startswith(f"{value_size} bytes".encode())
        assert headers[HEADER_VALUE_SHA256] == hashlib.sha256(value).hexdigest().encode()
    if key_size > 2000:
        assert letter.key() is None
        assert headers[HEADER_KEY_DROPPED].startswith(f"{key_size} bytes".encode())
        assert headers[HEADER_KEY_SHA256] == hashlib.sha256(key).hexdigest().encode()
    else:
        assert letter.key() == key and HEADER_KEY_DROPPED not in headers


names = st.binary(max_size=12).filter(lambda name: b"\0" not in name)  # librdkafka's names end at a NUL
records = st.lists(st.lists(st.tuples(names, st.binary(max_size=20)), max_size=5), min_size=1, max_size=25)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records)
def test_any_header_names_are_read_back_as_written_or_named_lost(
    kafka_bootstrap: str, new_topic: TopicFactory, records: list[list[tuple[bytes, bytes]]]
) -> None:
    messages = consumed(kafka_bootstrap, new_topic(1), [(b"k", b"v", headers) for headers in records])
    for headers, message in zip(records, messages, strict=True):
        read = read_headers(message)
        unreadable = [position for position, (name, _) in enumerate(headers) if not _utf8(name)]
        # The library keeps the first name that is not UTF-8; of the later ones, only position and value.
        lost = tuple(LostHeader(position, headers[position][1]) for position in unreadable[1:])
        kept = tuple(header for position, header in enumerate(headers) if position not in unreadable[1:])
        assert read == MessageHeaders(kept, lost)


def _utf8(name: bytes) -> bool:
    try:
        name.decode()
    except UnicodeDecodeError:
        return False
    return True
