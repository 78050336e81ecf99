"""Records whose header names are any bytes, written by a real producer as Go, kcat or librdkafka's C API can.

confluent-kafka (and Java's client) take header names as text and write them as UTF-8. kafka-python writes each
name as `name.encode("utf-8")`, so a `str` whose `encode` gives the raw bytes puts exactly those bytes on the wire.
"""

from __future__ import annotations

from collections.abc import Sequence

from kafka import KafkaProducer

RawHeaders = Sequence[tuple[bytes, bytes]]


class _RawName(str):
    """A header name that kafka-python encodes to the bytes it was made from."""

    raw: bytes

    def __new__(cls, raw: bytes) -> _RawName:
        name = super().__new__(cls, raw.decode("latin-1"))
        name.raw = raw
        return name

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


def produce_raw(
    bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes | None, RawHeaders]], partition: int = 0
) -> None:
    """Write (key, value, headers) records in order to one partition and wait until Kafka has them all."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [
            producer.send(
                topic,
                key=key,
                value=value,
                headers=[(_RawName(name), header) for name, header in headers],
                partition=partition,
            )
            for key, value, headers in records
        ]
        producer.flush(30)
        for future in futures:
            future.get(30)
    finally:
        producer.close(5)
