"""Reads a stretch of the dead-letter topic once, from its start (or `--since`) to its end when the read began."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from confluent_kafka import Consumer, KafkaException, TopicPartition

from bridge.config.model import KafkaConfig
from bridge.deadletters.clients import StopRequestedError, client_properties, reach
from bridge.deadletters.records import DeadLetter, Filters

PROGRESS_EVERY_S = 2.0
_TIMEOUT_S = 15.0


class ReadError(Exception):
    """The dead-letter topic cannot be read (missing, or Kafka does not answer)."""


@dataclass(frozen=True, slots=True)
class Stretch:
    """Per partition of the dead-letter topic, the offsets to read: [start, end)."""

    topic: str
    bounds: dict[int, tuple[int, int]]

    @property
    def total(self) -> int:
        return sum(end - start for start, end in self.bounds.values())


def consumer(config: KafkaConfig, group: str) -> Consumer:
    """A consumer of the bridge's cluster with its connection properties; it never commits by itself."""
    return Consumer(
        {
            **client_properties(config),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
        }
    )


def stretch(
    client: Consumer,
    topic: str,
    filters: Filters,
    starts: dict[int, int] | None = None,
    *,
    bootstrap: str = "",
    stop: Callable[[], bool] = lambda: False,
) -> Stretch:
    """What to read: from `starts` (a replay's progress) or the earliest record at or after `filters.since`, to the
    end the partition has now (or the first record at or after `filters.until`)."""
    metadata = reach(client, topic, bootstrap or "the configured bootstrap servers", stop)
    if metadata is None or metadata.error is not None:
        raise ReadError(f"dead-letter topic {topic!r} does not exist")
    bounds = {}
    try:
        for partition in sorted(metadata.partitions):
            low, high = client.get_watermark_offsets(TopicPartition(topic, partition), timeout=_TIMEOUT_S)
            start = max(low, _offset_at(client, topic, partition, filters.since, low))
            end = min(high, _offset_at(client, topic, partition, filters.until, high))
            if starts is not None and starts.get(partition, -1) >= 0:
                start = max(start, starts[partition])
            bounds[partition] = (start, max(start, end))
    except KafkaException as exc:
        raise ReadError(f"cannot read the offsets of {topic!r}: {exc.args[0].str() if exc.args else exc}") from None
    return Stretch(topic, bounds)


def read(
    client: Consumer,
    span: Stretch,
    progress: Callable[[int, int], None],
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[DeadLetter]:
    """Every record of `span`, partition by partition in offset order; `progress(read, total)` now and then.

    Raises StopRequestedError when `stop()` turns true (checked about once a second, and between records)."""
    remaining = {p: bounds for p, bounds in span.bounds.items() if bounds[1] > bounds[0]}
    client.assign([TopicPartition(span.topic, p, start) for p, (start, _) in remaining.items()])
    done = 0
    last_report = time.monotonic()
    try:
        while remaining:
            if stop():
                raise StopRequestedError
            messages = client.consume(500, 1.0)
            if not messages:
                # The last offsets of a stretch can be transaction markers, which are never handed out.
                for position in client.position([TopicPartition(span.topic, p) for p in remaining]):
                    if position.offset >= remaining[position.partition][1]:
                        del remaining[position.partition]
            for message in messages:
                error = message.error()
                if error is not None:
                    raise ReadError(f"reading {span.topic!r}: {error.str()}")
                letter = DeadLetter.of(message)
                bounds = remaining.get(letter.partition)
                if bounds is None or letter.offset >= bounds[1]:
                    continue
                done += 1
                yield letter
                if letter.offset + 1 >= bounds[1]:
                    del remaining[letter.partition]
            if time.monotonic() - last_report >= PROGRESS_EVERY_S:
                progress(done, span.total)
                last_report = time.monotonic()
    finally:
        client.unassign()


def stderr_progress(stream: TextIO = sys.stderr) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        share = f" ({done * 100 // total} %)" if total else ""
        print(f"read {done:,} of {total:,} dead letters{share}", file=stream, flush=True)

    return report


def _offset_at(client: Consumer, topic: str, partition: int, moment: Any, default: int) -> int:
    """The first offset whose timestamp is at or after `moment`; `default` when there is no moment, and the end
    when no record is that late."""
    if moment is None:
        return default
    millis = int(moment.timestamp() * 1000)
    found = client.offsets_for_times([TopicPartition(topic, partition, millis)], timeout=_TIMEOUT_S)[0]
    if found.offset < 0:
        _, high = client.get_watermark_offsets(TopicPartition(topic, partition), timeout=_TIMEOUT_S)
        return int(high)
    return int(found.offset)
