"""CPU of the transform alone (decode, map, make rows, encode CSV) per workload, in one process, no Kafka.

    .venv/bin/python -m bench.transform_speed [--events N] [--rounds R]

For each workload of `bench.workloads` it runs `bridge.decoding.transform.transform` over chunks of the pipeline's size
and prints CPU seconds per 100k events (the best of R rounds), beside the least work the same values need:
decoding alone (fastavro with the writer schema, or orjson), and the flat reader's decoding alone where the schema is
flat (what the transform decodes Avro with then). It also times the JSON parsers on the GameEvent
values, which is how orjson was chosen. A benchmark reports, it never judges.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import fastavro
import orjson

from bench.throughput import make_values
from bench.workloads import GAME_EVENT, GAME_MAPPING, IDENTITY_MAPPING, Decoding, game_values
from bridge.config.model import RouteConfig
from bridge.decoding.avro import WriterSchemas, contract_schema, parse
from bridge.decoding.flat_reader import compile_reader
from bridge.decoding.reading import Reading
from bridge.decoding.transform import Rules, collect_rarely, transform
from bridge.runtime.transforms import CHUNK_RECORDS
from devtools.testkit.records import APP

SCHEMA_ID = 1


def cpu_per_100k(work: Callable[[], Any], events: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        began = time.process_time()
        work()
        best = min(best, time.process_time() - began)
    return best * 100_000 / events


def transforming(values: list[bytes], schema: dict[str, Any], reading: Reading | None) -> Callable[[], None]:
    schemas = WriterSchemas(by_id={SCHEMA_ID: json.dumps(schema)})
    rules = Rules(APP, None, 3600)
    keys: list[bytes | None] = [str(i).encode() for i in range(len(values))]

    def run() -> None:
        now = time.time()
        for start in range(0, len(values), CHUNK_RECORDS):
            chunk = values[start : start + CHUNK_RECORDS]
            result = transform(chunk, now, rules, schemas, "events", reading, keys[start : start + CHUNK_RECORDS], None)
            assert not result.failures, next(iter(result.failures.values()))

    return run


def decoding_only(values: list[bytes], schema: dict[str, Any], decoding: Decoding) -> Callable[[], None]:
    parsed = parse(schema)
    read, loads = fastavro.schemaless_reader, orjson.loads

    def run() -> None:
        for value in values:
            if decoding == "json":
                loads(value)
            else:
                payload = io.BytesIO(value)
                payload.seek(5)
                read(payload, parsed, None)

    return run


def flat_decoding_only(values: list[bytes], schema: dict[str, Any]) -> Callable[[], None] | None:
    """The flat reader's decoding alone (`bridge.decoding.flat_reader`), or None when the schema is not flat."""
    read = compile_reader(parse(schema))
    if read is None:
        return None

    def run() -> None:
        for value in values:
            read(value, 5)

    return run


def reading(mapping: dict[str, Any] | None, decoding: Decoding) -> Reading | None:
    route = RouteConfig.model_validate({"topics": ["t"], "method": "events", "format": decoding, "mapping": mapping})
    return Reading.of(route.method, route.format, route.mapping)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transform_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    collect_rarely()
    now_us = int(time.time() * 1_000_000)
    contract = make_values(args.events, SCHEMA_ID)
    game_avro = game_values(args.events, now_us, "avro", SCHEMA_ID)
    game_json = game_values(args.events, now_us, "json", SCHEMA_ID)
    workloads = [
        ("contract, no mapping", contract, contract_schema(), "avro", None),
        ("contract, identity mapping", contract, contract_schema(), "avro", reading(IDENTITY_MAPPING, "avro")),
        ("GameEvent Avro, the issue's mapping", game_avro, GAME_EVENT, "avro", reading(GAME_MAPPING, "avro")),
        ("GameEvent JSON, the issue's mapping", game_json, GAME_EVENT, "json", reading(GAME_MAPPING, "json")),
    ]
    print(
        f"transform CPU s per 100k events, best of {args.rounds}, {args.events:,} events in chunks of {CHUNK_RECORDS}"
    )
    print(f"{'workload':<40}{'decode only':>12}{'flat reader':>12}{'transform':>12}{'ratio':>8}")
    for title, values, schema, decoding, read in workloads:
        floor = cpu_per_100k(decoding_only(values, schema, decoding), args.events, args.rounds)  # type: ignore[arg-type]
        flat = flat_decoding_only(values, schema) if decoding == "avro" else None
        flat_text = "-" if flat is None else f"{cpu_per_100k(flat, args.events, args.rounds):.3f}"
        spent = cpu_per_100k(transforming(values, schema, read), args.events, args.rounds)
        print(f"{title:<40}{floor:>12.3f}{flat_text:>12}{spent:>12.3f}{floor / spent:>8.2f}")
    print("\nJSON parsers on the GameEvent values (CPU s per 100k):")
    parsers: list[tuple[str, Callable[[bytes], Any]]] = [("json (stdlib)", json.loads), ("orjson", orjson.loads)]
    for name, loads in parsers:
        spent = cpu_per_100k(lambda f=loads: [f(v) for v in game_json], args.events, args.rounds)  # type: ignore[misc]
        print(f"  {name:<14}{spent:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
