"""`appmetrica-bridge preview`: the rows a configuration makes of real records, and the refusals, before going live.

It samples each route's topics in a throw-away consumer that is assigned partitions directly and never commits
(so no consumer group gets offsets), or reads a local file instead, and sends the records through the same
`transform` as the bridge: what it prints is the row that would be uploaded or the dead-letter reason and detail
the record would get. It never uploads anything.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import itertools
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import fastavro
from confluent_kafka import Consumer, KafkaException, TopicPartition

from bridge.config.model import BridgeConfig, ConfigError, RouteConfig, Settings, load_config
from bridge.decoding.avro import WriterSchemas
from bridge.decoding.reading import Reading
from bridge.decoding.registry import RegistryUnavailableError, make_decoder, registry_client_conf
from bridge.decoding.transform import FAILED, Failure, Rules, Transformed, transform
from bridge.kafka.headers import read_headers
from bridge.mapping import Headers

DEFAULT_LIMIT: Final = 20
FETCH_TIMEOUT_S: Final = 15.0
"""How long sampling one route may take before it shows what it has."""
AVRO_MAGIC: Final = b"Obj\x01"


@dataclass(frozen=True)
class Sampled:
    """One record to preview: where it came from and what the bridge would be handed."""

    source: str
    value: bytes | None
    key: bytes | None = None
    headers: Headers | None = None


@dataclass(frozen=True)
class Outcome:
    source: str
    row: dict[str, str] | None
    reason: str | None = None
    detail: str | None = None

    def as_json(self) -> dict[str, Any]:
        if self.row is not None:
            return {"source": self.source, "row": self.row}
        return {"source": self.source, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class Start:
    """Where sampling starts in each partition: the newest records, the beginning, or one offset of one partition."""

    from_beginning: bool = False
    partition: int | None = None
    offset: int | None = None


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    preview = commands.add_parser(
        "preview",
        help="show the Post API rows (or dead-letter reasons) the configuration makes of real records",
        description="Read up to --limit records of each route, without committing anything, and print the row "
        "each one becomes or the dead-letter reason and detail it would get. Nothing is uploaded.",
    )
    preview.add_argument("--config", type=Path, required=True, metavar="FILE")
    preview.add_argument("--limit", type=_positive, default=DEFAULT_LIMIT, metavar="N", help="records per route")
    where = preview.add_mutually_exclusive_group()
    where.add_argument("--from-beginning", action="store_true", help="the oldest records instead of the newest")
    where.add_argument("--partition", type=_not_negative, metavar="P", help="only partition P (with --offset)")
    preview.add_argument("--offset", type=_not_negative, metavar="O", help="start at offset O of --partition")
    preview.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    preview.add_argument(
        "--input",
        type=Path,
        metavar="FILE",
        help="read this file instead of Kafka: JSON lines, or an Avro object container file",
    )
    preview.add_argument(
        "--topic",
        metavar="TOPIC",
        help="only this topic (and its route); with --input, the route that reads the file",
    )
    preview.set_defaults(func=_preview)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


class PreviewError(Exception):
    """Why preview cannot show anything; one line."""


def _preview(args: argparse.Namespace) -> int:
    from bridge.errors import EXIT_CONFIG

    if (args.partition is None) != (args.offset is None):
        print("appmetrica-bridge: preview: --partition and --offset go together", file=sys.stderr)
        return EXIT_CONFIG
    try:
        settings = load_config(args.config)
    except ConfigError as exc:
        print(f"appmetrica-bridge: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.partition is not None and args.topic is None and len(settings.config.topics) > 1:
        print(
            "appmetrica-bridge: preview: --partition needs --topic: the configuration reads "
            f"{', '.join(settings.config.topics)}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        if args.input is not None:
            route = _route_for_file(settings.config, args.topic)
            outcomes = _file_outcomes(settings, route, args.input, args.limit)
            _show(outcomes, route, args.json, sys.stdout)
        else:
            start = Start(args.from_beginning, args.partition, args.offset)
            for route, topics in _targets(settings.config, args.topic):
                records = sample(settings.config, route, args.limit, start, topics)
                _show(outcomes_of(settings, route, records), route, args.json, sys.stdout)
    except PreviewError as exc:
        print(f"appmetrica-bridge: preview: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Piped into `head`: what was wanted is shown; the interpreter must not complain flushing the rest.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


# -- where the records come from --------------------------------------------------------------------------------


def _targets(config: BridgeConfig, topic: str | None) -> list[tuple[RouteConfig, list[str]]]:
    """Each route to sample with the topics to read: every route and topic, or the one `--topic` names."""
    if topic is None:
        return [(route, list(route.topics)) for route in config.effective_routes]
    return [(_route_for_file(config, topic), [topic])]


def sample(
    config: BridgeConfig, route: RouteConfig, limit: int, start: Start, topics: Sequence[str] | None = None
) -> list[Sampled]:
    """Up to `limit` records of the route's topics (or of `topics`), read by a consumer that is assigned and never
    commits."""
    consumer = Consumer(
        {
            # librdkafka would log each failed connection to stderr; a Kafka that does not answer is one error here.
            "log_level": 0,
            **config.kafka.properties,
            "bootstrap.servers": config.kafka.bootstrap_servers,
            # Never joined (partitions are assigned) and never committed: the group keeps no offsets.
            "group.id": f"appmetrica-bridge-preview-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
    )
    try:
        ends = _positions(consumer, route.topics if topics is None else topics, limit, start)
        consumer.assign([TopicPartition(topic, partition, first) for (topic, partition), (first, _) in ends.items()])
        wanted = {key: end for key, (first, end) in ends.items() if first < end}
        found: list[Any] = []
        deadline = time.monotonic() + FETCH_TIMEOUT_S
        # The newest records are the last `limit` of every partition: all of them are read, then the newest kept.
        oldest_first = start.from_beginning or start.partition is not None
        while wanted and time.monotonic() < deadline and not (oldest_first and len(found) >= limit):
            for message in consumer.consume(500, 0.5):
                key, offset = (message.topic(), message.partition()), message.offset()
                if message.error() is not None or offset is None or key not in wanted:
                    continue
                if offset < wanted[key]:
                    found.append(message)
                if offset + 1 >= wanted[key]:
                    del wanted[key]
            _past_the_end(consumer, wanted)
    except KafkaException as exc:
        raise PreviewError(f"Kafka: {exc.args[0] if exc.args else exc}") from None
    finally:
        consumer.close()
    if oldest_first:
        found.sort(key=lambda m: (m.topic(), m.partition(), m.offset()))
        chosen = found[:limit]
    else:
        found.sort(key=lambda m: (m.timestamp()[1], m.topic(), m.partition(), m.offset()))
        chosen = found[-limit:]
    return [Sampled(f"{m.topic()}[{m.partition()}]@{m.offset()}", m.value(), m.key(), read_headers(m)) for m in chosen]


def _past_the_end(consumer: Consumer, wanted: dict[tuple[str, int], int]) -> None:
    """Forget the partitions whose position reached their end: the last offsets of a partition can be transaction
    markers (any topic a transactional producer such as `dead-letters replay` wrote to), never handed out."""
    if wanted:
        for position in consumer.position([TopicPartition(topic, partition) for topic, partition in wanted]):
            key = (position.topic, position.partition)
            if position.offset >= wanted[key]:
                del wanted[key]


def _positions(
    consumer: Consumer, topics: Sequence[str], limit: int, start: Start
) -> dict[tuple[str, int], tuple[int, int]]:
    """(first offset to read, end offset) of every partition sampled."""
    positions = {}
    for topic in topics:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise PreviewError(f"topic {topic!r} does not exist or cannot be read")
        partitions = sorted(metadata.partitions)
        if start.partition is not None:
            if start.partition not in metadata.partitions:
                raise PreviewError(f"topic {topic!r} has no partition {start.partition}")
            partitions = [start.partition]
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if start.partition is not None:
                first = max(low, start.offset or 0)
            elif start.from_beginning:
                first = low
            else:
                first = max(low, high - limit)
            positions[(topic, partition)] = (first, high)
    return positions


def _route_for_file(config: BridgeConfig, topic: str | None) -> RouteConfig:
    routes = config.effective_routes
    if topic is not None:
        for route in routes:
            if topic in route.topics:
                return route
        raise PreviewError(f"no route reads topic {topic!r}")
    if len(routes) != 1:
        raise PreviewError("the configuration has several routes: name the one for the file with --topic")
    return routes[0]


def _file_outcomes(settings: Settings, route: RouteConfig, path: Path, limit: int) -> list[Outcome]:
    try:
        with path.open("rb") as file:
            head = file.read(4)
            file.seek(0)
            if head == AVRO_MAGIC:
                return _container_outcomes(settings, route, file, path, limit)
            # Line by line and no further than the limit: the file can be far larger than memory.
            lines = ((number, raw.strip()) for number, raw in enumerate(file, 1))
            records = [Sampled(f"{path.name}:{n}", line) for n, line in itertools.islice(_set_lines(lines), limit)]
    except OSError as exc:
        raise PreviewError(f"cannot read {path}: {exc.strerror}") from None
    reading = Reading.of(route.method, "json", route.mapping)
    return _outcomes(settings, route, records, WriterSchemas(), reading)


def _set_lines(lines: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
    return (line for line in lines if line[1])


def _container_outcomes(settings: Settings, route: RouteConfig, file: Any, path: Path, limit: int) -> list[Outcome]:
    """An Avro object container file: each record is written again as a plain Avro value of the file's schema."""
    try:
        reader = fastavro.reader(file)
        schema = reader.writer_schema
        records = []
        for number, record in enumerate(reader, 1):
            if number > limit:
                break
            value = io.BytesIO()
            fastavro.schemaless_writer(value, schema, record)
            records.append(Sampled(f"{path.name}#{number}", value.getvalue()))
    except (ValueError, EOFError) as exc:
        raise PreviewError(f"{path} is not a readable Avro object container file: {exc}") from None
    reading = Reading.of(route.method, "avro", route.mapping)
    return _outcomes(settings, route, records, WriterSchemas(raw=json.dumps(schema)), reading)


# -- what the bridge would make of them -------------------------------------------------------------------------


def outcomes_of(settings: Settings, route: RouteConfig, records: list[Sampled]) -> list[Outcome]:
    """Each record's row or dead-letter reason, decoded as the route says (schemas fetched from the registry)."""
    reading = Reading.of(route.method, route.format, route.mapping)
    schemas = WriterSchemas()
    if route.format == "avro" and records:
        avro = settings.config.avro
        try:
            conf = registry_client_conf(avro, settings.registry)
            own = reading is not None
            decoder = make_decoder(avro.format, avro.schema_registry_url, avro.schema_file, conf, own_schema=own)
            asyncio.run(decoder.prepare(r.value for r in records))
        except (ValueError, RegistryUnavailableError) as exc:
            raise PreviewError(str(exc)) from None
        schemas = decoder.schemas(route.method)
    return _outcomes(settings, route, records, schemas, reading)


def _outcomes(
    settings: Settings, route: RouteConfig, records: list[Sampled], schemas: WriterSchemas, reading: Reading | None
) -> list[Outcome]:
    config = settings.config
    rules = Rules(config.post_api.application_id, settings.keys.keyed_applications(), config.post_api.max_future_s)
    result = transform(
        [r.value for r in records],
        time.time(),
        rules,
        schemas,
        route.method,
        reading,
        [r.key for r in records],
        [r.headers for r in records],
    )
    outcomes = []
    for index, record in enumerate(records):
        row, failure = row_or_failure(result, index)
        if failure is not None:
            outcomes.append(Outcome(record.source, None, *failure))
        else:
            outcomes.append(Outcome(record.source, row))
    return outcomes


def row_or_failure(result: Transformed, index: int) -> tuple[dict[str, str] | None, Failure | None]:
    """The row a record of a transformed chunk made (its set cells, with its application), or why it made none."""
    group = result.placed[index]
    if group == FAILED:
        return None, result.failures[index]
    _, application, header = result.groups[group]
    (row,) = csv.DictReader(io.StringIO((header + result.lines[index]).decode(), newline=""))
    return {"application_id": str(application)} | {name: cell for name, cell in row.items() if cell}, None


# -- how they are shown -----------------------------------------------------------------------------------------


def _show(outcomes: list[Outcome], route: RouteConfig, as_json: bool, out: TextIO) -> None:
    if as_json:
        for outcome in outcomes:
            out.write(json.dumps({"method": route.method, **outcome.as_json()}, ensure_ascii=False) + "\n")
        return
    rows = sum(o.row is not None for o in outcomes)
    out.write(
        f"route {', '.join(route.topics)} -> {route.method}: {len(outcomes)} records, {rows} rows, "
        f"{len(outcomes) - rows} dead letters\n"
    )
    if not outcomes:
        return
    width = max(len(o.source) for o in outcomes)
    for outcome in outcomes:
        if outcome.row is not None:
            cells = "  ".join(f"{name}={_cell(value)}" for name, value in outcome.row.items())
            out.write(f"  {outcome.source:<{width}}  row      {cells}\n")
        else:
            out.write(f"  {outcome.source:<{width}}  {outcome.reason:<7}  {outcome.detail}\n")


def _cell(value: str) -> str:
    """A cell on one line: text with spaces or line breaks is shown as a JSON string."""
    plain = value.isprintable() and " " not in value
    return value if plain else json.dumps(value, ensure_ascii=False)
