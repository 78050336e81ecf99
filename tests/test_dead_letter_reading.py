"""Reading the dead-letter topic on the real broker: `--since`/`--until` by when records were dead-lettered, the
summary's counts, and the progress line of a long read."""

from __future__ import annotations

import datetime as dt

import pytest
from confluent_kafka import Producer

from bridge.config.model import KafkaConfig
from bridge.deadletters import reading
from bridge.deadletters.reading import consumer, read, stretch
from bridge.deadletters.records import Filters
from bridge.deadletters.summary import Summary
from bridge.kafka.dead_letter_producer import (
    HEADER_DETAIL,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_TOPIC,
)
from devtools.testkit.kafka import TopicFactory

DAYS = [dt.datetime(2026, 11, d, 12, tzinfo=dt.UTC) for d in (20, 21, 22)]
PER_DAY = 3600


def fill(bootstrap: str, dlq: str) -> None:
    """PER_DAY dead letters stamped on each of DAYS, reasons and source partitions alternating."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for day in DAYS:
        for i in range(PER_DAY):
            reason = ("invalid", "expired")[i % 2]
            headers: list[tuple[str, str | bytes | None]] = [
                (HEADER_REASON, reason.encode()),
                (HEADER_DETAIL, f"{reason} because {i % 3}".encode()),
                (HEADER_TOPIC, b"events"),
                (HEADER_PARTITION, str(i % 4).encode()),
                (HEADER_OFFSET, str(i).encode()),
            ]
            while True:
                try:
                    producer.produce(
                        dlq,
                        value=b"v",
                        key=b"k",
                        headers=headers,
                        partition=i % 2,
                        timestamp=int(day.timestamp() * 1000) + i,
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
    assert producer.flush(60) == 0


def test_since_and_until_choose_by_the_day_records_were_dead_lettered(
    kafka_bootstrap: str, new_topic: TopicFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    dlq = new_topic(2)
    fill(kafka_bootstrap, dlq)
    config = KafkaConfig(bootstrap_servers=kafka_bootstrap, topics=["events"], group_id="reader")
    client = consumer(config, "reader.dead-letters")
    reports: list[tuple[int, int]] = []
    monkeypatch.setattr(reading, "PROGRESS_EVERY_S", 0.0)
    try:
        everything = Summary.of(read(client, stretch(client, dlq, Filters()), lambda *r: reports.append(r)))
        middle = Filters(since=DAYS[1].replace(hour=0), until=DAYS[2].replace(hour=0))
        one_day = Summary.of(read(client, stretch(client, dlq, middle), lambda *_: None))
        nothing = Summary.of(read(client, stretch(client, dlq, Filters(since=DAYS[2] + dt.timedelta(days=1))), print))
    finally:
        client.close()
    assert everything.total == 3 * PER_DAY
    assert dict(everything.by_reason) == {"invalid": 3 * PER_DAY // 2, "expired": 3 * PER_DAY // 2}
    assert dict(everything.by_source) == {("events", p): 3 * PER_DAY // 4 for p in range(4)}
    assert everything.by_day == {d.date().isoformat(): PER_DAY for d in DAYS}
    assert everything.by_detail.most_common(1)[0][1] == 3 * PER_DAY // 6
    assert one_day.total == PER_DAY and list(one_day.by_day) == ["2026-11-21"]
    assert nothing.total == 0
    assert reports and reports[-1][1] == 3 * PER_DAY and all(done <= total for done, total in reports)
    text = everything.as_text(dlq)
    assert "invalid" in text and "2026-11-22" in text and f"{PER_DAY:,}" in text
