"""The dead-letter producer at the edges of a run: its topic check waits for Kafka, its close keeps a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import structlog

from bridge.kafka import dead_letter_producer as deadletter
from bridge.kafka.dead_letter_producer import DeadLetters
from bridge.kafka.logs import Repeats
from devtools.testkit.bridge_child import free_port


class Record:
    """What the dead-letter writer reads of a consumed record."""

    def topic(self) -> str:
        return "appmetrica.events"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"poison"

    def headers(self) -> None:
        return None


async def test_the_topic_check_waits_while_kafka_is_away_instead_of_failing_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(deadletter, "REPEATS", Repeats())  # no condition left lasting by another test
    dead_letters = DeadLetters("appmetrica.dlq", f"127.0.0.1:{free_port()}", {})
    try:
        with structlog.testing.capture_logs() as lines:
            checking = asyncio.ensure_future(dead_letters.check_topic(timeout_s=0.5))
            done, _ = await asyncio.wait([checking], timeout=3)
            assert not done, "still waiting for Kafka: an outage is not a refusal"
            checking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checking
        waiting = [line for line in lines if line["event"].startswith("Kafka unreachable")]
        assert len(waiting) == 1, lines
    finally:
        await dead_letters.close(0.1)


async def test_closing_while_kafka_is_away_keeps_its_deadline_and_says_what_was_left() -> None:
    dead_letters = DeadLetters("appmetrica.dlq", f"127.0.0.1:{free_port()}", {})
    writing = asyncio.ensure_future(dead_letters.write(Record(), "decode", "not Avro"))
    await asyncio.sleep(0.1)  # the write is queued in the producer, never acknowledged
    with structlog.testing.capture_logs() as lines:
        began = time.monotonic()
        await dead_letters.close(1.0)
        took = time.monotonic() - began
    writing.cancel()
    assert took < 3, f"close took {took:.1f} s"
    left = [line for line in lines if line["event"] == "dead-letter producer closed with records unacknowledged"]
    assert left and left[0]["records"] == 1, lines
