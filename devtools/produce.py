"""Produce the records of a file to a Kafka topic, so your own data can be tried without writing code.

    python -m devtools.produce --topic T --input FILE [--format json|avro] [--registry URL]
        [--bootstrap-servers 127.0.0.1:19092] [--key-field NAME] [--stamp-now NAME[:UNIT]]

`json`: a JSON-lines file, one JSON object a line (blank lines skipped), each sent as the UTF-8 text of its line:
what a route with `format: json` reads. `avro`: an Avro object container file; with `--registry` its writer schema
is registered under `<topic>-value` and every record sent in the Confluent wire format (what `avro.format:
confluent` reads), without it as plain Avro binary (what `avro.format: raw` reads with the same schema in
`avro.schema_file`). The format defaults to `avro` for a `.avro` file and `json` otherwise.

`--stamp-now NAME[:UNIT]` sets that top-level field of every record to the moment it is produced, in `s`, `ms` (the
default), `us` or `ns`, so a sample written long ago still lands inside the Post API's 14-day window.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.kafka_local import OUTSIDE_THE_VENV

EXIT_INPUT = 2
"""Bad arguments or a file that cannot be read as its format: nothing was sent."""
EXIT_KAFKA = 1
"""Kafka or the registry did not take the records."""


class InputError(Exception):
    """The input file cannot be read as its format; the message names the line or record."""


@dataclass(frozen=True)
class Outgoing:
    """One message to send: its key (or None) and its value, as bytes."""

    key: bytes | None
    value: bytes


def json_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each line's JSON object with its line number; blank lines are skipped."""
    with path.open(encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path}:{number}: not JSON: {error.msg} (column {error.colno})") from None
            if not isinstance(record, dict):
                raise InputError(f"{path}:{number}: a {type(record).__name__}, not a JSON object")
            yield number, record


def avro_records(path: Path) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """The container file's writer schema and its records."""
    import fastavro

    data = path.read_bytes()
    try:
        reader = fastavro.reader(io.BytesIO(data))
    except (ValueError, EOFError, fastavro.read.SchemaResolutionError) as error:
        raise InputError(f"{path}: not an Avro object container file: {error}") from None
    schema = reader.writer_schema
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise InputError(f"{path}: the writer schema's top level is not a record")
    return schema, (record for record in reader if isinstance(record, dict))


def _key(record: dict[str, Any], key_field: str | None, where: str) -> bytes | None:
    if key_field is None:
        return None
    value = record.get(key_field)
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, str | int):
        return str(value).encode()
    raise InputError(f"{where}: --key-field {key_field!r} holds a {type(value).__name__}, not text or a number")


_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


@dataclass(frozen=True)
class Stamp:
    """A top-level field set to the moment of producing, in a unit."""

    field: str
    per_second: int

    @classmethod
    def parse(cls, text: str) -> Stamp:
        field, _, unit = text.partition(":")
        if not field or (unit or "ms") not in _PER_SECOND:
            raise ValueError(f"--stamp-now {text!r}: expected NAME or NAME:UNIT, UNIT one of {', '.join(_PER_SECOND)}")
        return cls(field, _PER_SECOND[unit or "ms"])


def _stamp(record: dict[str, Any], stamp: Stamp | None) -> dict[str, Any]:
    return record if stamp is None else {**record, stamp.field: time.time_ns() * stamp.per_second // 1_000_000_000}


def json_messages(path: Path, key_field: str | None, stamp: Stamp | None) -> Iterator[Outgoing]:
    for number, record in json_records(path):
        stamped = _stamp(record, stamp)
        value = json.dumps(stamped, ensure_ascii=False, separators=(",", ":")).encode()
        yield Outgoing(_key(record, key_field, f"{path}:{number}"), value)


def avro_messages(
    path: Path, topic: str, registry: str | None, key_field: str | None, stamp: Stamp | None
) -> Iterator[Outgoing]:
    schema, records = avro_records(path)
    encode = _avro_encoder(schema, topic, registry)
    for number, record in enumerate(records, 1):
        where = f"{path}: record {number}"
        try:
            value = encode(_stamp(record, stamp))
        except (ValueError, TypeError) as error:
            raise InputError(f"{where}: cannot be written with the file's schema: {error}") from None
        yield Outgoing(_key(record, key_field, where), value)


def _avro_encoder(schema: dict[str, Any], topic: str, registry: str | None) -> Callable[[dict[str, Any]], bytes]:
    import fastavro

    if registry is None:
        parsed = fastavro.parse_schema(schema)

        def raw(record: dict[str, Any]) -> bytes:
            out = io.BytesIO()
            fastavro.schemaless_writer(out, parsed, record)
            return out.getvalue()

        return raw
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    serializer = AvroSerializer(SchemaRegistryClient({"url": registry}), json.dumps(schema))
    context = SerializationContext(topic, MessageField.VALUE)

    def framed(record: dict[str, Any]) -> bytes:
        value = serializer(record, context)
        assert value is not None  # a record is never serialized to None
        return bytes(value)

    return framed


def send(messages: Iterator[Outgoing], topic: str, bootstrap: str, timeout: float) -> int:
    """Send every message, waiting for each acknowledgement; the count acknowledged."""
    from confluent_kafka import KafkaError, Producer

    failures: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: object) -> None:
        if error is not None:
            failures.append(error)

    # A missing topic should fail at once, not wait for message.timeout.ms.
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "message.timeout.ms": int(timeout * 1000),
            "log_level": 0,
        }
    )
    metadata = producer.list_topics(timeout=timeout)
    if topic not in metadata.topics or metadata.topics[topic].error is not None:
        raise ConnectionError(
            f"topic {topic!r} does not exist at {bootstrap}; create it first: "
            f"python -m devtools.kafka_local create-topic {topic}"
        )
    count = 0
    for message in messages:
        producer.produce(topic, value=message.value, key=message.key, on_delivery=delivered)
        producer.poll(0)
        count += 1
    remaining = producer.flush(timeout)
    if remaining or failures:
        reason = failures[0].str() if failures else f"{remaining} messages not acknowledged within {timeout:g} s"
        raise ConnectionError(f"Kafka did not take every record: {reason}")
    return count


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.produce", description=__doc__.splitlines()[0])
    parser.add_argument("--topic", required=True, help="the topic to write to (it must exist)")
    parser.add_argument("--input", required=True, type=Path, help="a JSON-lines file or an Avro container file")
    parser.add_argument("--format", choices=["json", "avro"], help="default: avro for *.avro, json otherwise")
    parser.add_argument("--registry", metavar="URL", help="Avro only: register the schema, send the wire format")
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:19092", help="default: 127.0.0.1:19092")
    parser.add_argument("--key-field", metavar="NAME", help="send this top-level field as the message key")
    parser.add_argument(
        "--stamp-now", metavar="NAME[:UNIT]", help="set this top-level field to now, in s, ms (default), us or ns"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for Kafka (default 30)")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("confluent_kafka") is None:
        print(f"produce: error: {OUTSIDE_THE_VENV}", file=sys.stderr)
        return EXIT_INPUT
    form = args.format or ("avro" if args.input.suffix == ".avro" else "json")
    if args.registry is not None and form != "avro":
        parser.error("--registry applies to --format avro only")
    if not args.input.is_file():
        parser.error(f"--input {args.input}: no such file")
    try:
        stamp = None if args.stamp_now is None else Stamp.parse(args.stamp_now)
    except ValueError as error:
        parser.error(str(error))
    messages = (
        json_messages(args.input, args.key_field, stamp)
        if form == "json"
        else avro_messages(args.input, args.topic, args.registry, args.key_field, stamp)
    )
    try:
        # Read the whole file first: a bad line must stop the run before anything is sent.
        ready = list(messages)
        count = send(iter(ready), args.topic, args.bootstrap_servers, args.timeout)
    except InputError as error:
        print(f"produce: error: {error}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as error:  # the registry client and librdkafka raise many kinds; each ends the same way
        print(f"produce: error: {error}", file=sys.stderr)
        return EXIT_KAFKA
    print(f"produced {count} record{'s' if count != 1 else ''} from {args.input} to {args.topic} ({form})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
