"""Dead letters as the tools read them: filters written into a progress group's name and read back, the headers a
replay sends, and hostile header values."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.deadletters.records import DeadLetter, Filters
from bridge.kafka.dead_letter_producer import (
    HEADER_DETAIL,
    HEADER_OFFSET,
    HEADER_ORIGINAL_OFFSET,
    HEADER_ORIGINAL_PARTITION,
    HEADER_ORIGINAL_TOPIC,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_REPLAYED,
    HEADER_TOPIC,
    HEADER_VALUE_DROPPED,
)
from bridge.postapi.uploader import RateLimit

moments = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(dt.UTC))
numbers = st.none() | st.integers(min_value=0, max_value=2**40)
reasons = st.none() | st.text(st.characters(exclude_characters=",=", exclude_categories=["Cs"]), min_size=1)


class Message:
    """What confluent-kafka's Message offers the tools, made by hand: no broker is needed to read headers."""

    def __init__(self, headers: list[tuple[str, Any]], offset: int = 7) -> None:
        self._headers = headers
        self._offset = offset

    def topic(self) -> str:
        return "events.dlq"

    def partition(self) -> int:
        return 1

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_764_547_200_000)

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"

    def headers(self) -> list[tuple[str, Any]]:
        return self._headers


def dead_lettered(*extra: tuple[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("trace-id", b"t-1"),
        *extra,
        (HEADER_REASON, b"invalid"),
        (HEADER_DETAIL, b"no key for application 5151"),
        (HEADER_TOPIC, b"events"),
        (HEADER_PARTITION, b"3"),
        (HEADER_OFFSET, b"41"),
    ]


@given(
    reason=reasons,
    since=st.none() | moments,
    until=st.none() | moments,
    partition=numbers,
    from_offset=numbers,
    to_offset=numbers,
)
def test_filters_read_back_from_their_text(
    reason: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    partition: int | None,
    from_offset: int | None,
    to_offset: int | None,
) -> None:
    filters = Filters(reason, since, until, partition, from_offset, to_offset)
    assert Filters.parse(filters.describe()) == filters


def test_a_replay_sends_the_record_s_own_headers_and_where_it_first_came_from() -> None:
    letter = DeadLetter.of(Message(dead_lettered()))
    assert (letter.reason, letter.source_topic, letter.source_partition, letter.source_offset) == (
        "invalid",
        "events",
        3,
        41,
    )
    sent = dict(letter.replay_headers())
    assert sent == {
        "trace-id": b"t-1",
        HEADER_ORIGINAL_TOPIC: b"events",
        HEADER_ORIGINAL_PARTITION: b"3",
        HEADER_ORIGINAL_OFFSET: b"41",
        HEADER_REPLAYED: b"events.dlq:1:7",
    }


def test_dead_lettered_again_it_is_marked_and_keeps_its_first_coordinates() -> None:
    first = DeadLetter.of(Message(dead_lettered()))
    # The bridge read the replayed copy at offset 900 of its topic and dead-lettered it again.
    bridge_headers = [(n, b"900" if n == HEADER_OFFSET else v) for n, v in dead_lettered()[1:]]
    again = DeadLetter.of(Message([*first.replay_headers(), *bridge_headers], offset=12))
    assert again.replayed_before and not first.replayed_before
    assert again.source_offset == 900
    sent = again.replay_headers()
    assert dict(sent)[HEADER_ORIGINAL_OFFSET] == b"41", "the first coordinates survive every replay"
    assert [n for n, _ in sent].count(HEADER_REPLAYED) == 1
    assert dict(sent)[HEADER_REPLAYED] == b"events.dlq:1:12"


@given(st.lists(st.tuples(st.text(max_size=30), st.none() | st.binary(max_size=30) | st.text(max_size=30))))
def test_any_headers_read_without_an_error(headers: list[tuple[str, Any]]) -> None:
    letter = DeadLetter.of(Message(headers))
    assert isinstance(letter.reason, str) and isinstance(letter.source_offset, int)
    assert letter.replay_headers()[-1][0] == HEADER_REPLAYED


async def test_a_rate_limit_takes_a_new_rate_from_the_next_request(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(round(seconds, 6))
        now[0] += seconds

    monkeypatch.setattr("bridge.postapi.uploader.asyncio.sleep", sleep)
    limit = RateLimit(10.0, clock=lambda: now[0])
    await limit.acquire()
    limit.rate = 2.0
    await limit.acquire()
    await limit.acquire()
    limit.rate = 4.0
    await limit.acquire()
    assert waits == [0.5, 0.5, 0.25], "a group member's share applies from the next request"


def test_a_copy_held_without_its_value_is_never_sent_back_as_a_tombstone() -> None:
    letter = DeadLetter.of(Message([*dead_lettered()[1:], (HEADER_VALUE_DROPPED, b"9000000 bytes, too large")]))
    assert letter.value_dropped
    assert not DeadLetter.of(Message(dead_lettered())).value_dropped
