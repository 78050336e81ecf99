"""How a route's record values become contract records when they are not the project's own Avro contract.

A route with a mapping, or with `format: json`, reads each value into a plain record (Avro with the writer's own
schema, logical types kept, or one JSON object, with or without the Confluent framing) and then maps a chunk of
them onto the method's parameters with `bridge.mapping`. A route of contract Avro records without a mapping
never comes here: `bridge.decoding.avro` reads those into the contract by schema resolution.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import fastavro
import orjson

from bridge.decoding import exact_json as exactjson
from bridge.decoding.alone import alone, decode_each, unexpected
from bridge.decoding.avro import DecodeError, Reader, ReasonClass, WriterSchemas, framed_decoder, read_body
from bridge.decoding.flat_reader import compile_reader
from bridge.mapping import Chunk, CompiledMapping, Headers, MappingSpec, Record, identity_mapping
from bridge.postapi.methods import MethodName

Failure = tuple[ReasonClass | Literal["invalid"], str]

_loads: Final = exactjson.loads


@dataclass(frozen=True)
class Reading:
    """A route's value format and mapping; small and picklable, it travels with every chunk of the route."""

    method: MethodName
    format: Literal["avro", "json"]
    mapping: MappingSpec
    reads_keys: bool = False
    reads_headers: bool = False
    key: str = field(default="", compare=False)
    """Names the compiled mapping in each process's cache."""

    @classmethod
    def of(cls, method: MethodName, fmt: Literal["avro", "json"], mapping: MappingSpec | None) -> Reading | None:
        """How a route reads its values; None for contract Avro records without a mapping."""
        if mapping is None and fmt == "avro":
            return None
        spec = identity_mapping(method) if mapping is None else mapping
        compiled = CompiledMapping(method, spec)
        return cls(method, fmt, spec, compiled.reads_keys, compiled.reads_headers, f"{method}:{fmt}:{spec!r}")


@dataclass(frozen=True)
class Read:
    """The records of a chunk that decoded and mapped, by column, with where each sits in the chunk and why the
    rest did not."""

    columns: list[list[Any]]
    """The method's parameters in declared order, a value per record: what `RowMaker.table_of` takes."""
    indexes: list[int]
    failures: dict[int, Failure]


class RecordReaders:
    """One process's parsed writer schemas and compiled mappings, built on first use and kept."""

    def __init__(self) -> None:
        self._schemas: dict[tuple[int | None, str], Reader] = {}
        self._mappings: dict[str, CompiledMapping] = {}

    def read(
        self,
        reading: Reading,
        values: Sequence[bytes | None],
        schemas: WriterSchemas,
        keys: Sequence[bytes | None] | None = None,
        headers: Sequence[Headers | None] | None = None,
    ) -> Read:
        """Decode each value and map the chunk; keys and headers are needed only when the reading says so."""
        decode = self.decoder(reading, schemas)
        records, indexes, decode_failures = decode_each(values, decode)
        failures: dict[int, Failure] = dict(decode_failures)
        if reading.format == "json":
            records, indexes = _exact_numbers(values, records, indexes, failures)
        chunk = Chunk(
            records,
            [keys[i] for i in indexes] if keys is not None and reading.reads_keys else None,
            [headers[i] for i in indexes] if headers is not None and reading.reads_headers else None,
        )
        compiled = self._mapping(reading)
        mapped, kept, raised = alone(lambda some: compiled.apply(_pick(chunk, some)), range(len(records)))
        for position, why in raised.items():
            failures[indexes[position]] = ("invalid", unexpected("mapping it", why))
        for position, detail in mapped.failures.items():
            failures[indexes[kept[position]]] = ("invalid", detail)
        return Read(mapped.columns, [indexes[kept[p]] for p in mapped.positions], failures)

    def decoder(self, reading: Reading, schemas: WriterSchemas) -> Callable[[bytes], Record]:
        """One value to the plain record `read` maps; raises DecodeError for poison."""
        return self._json if reading.format == "json" else self._avro(schemas)

    def _mapping(self, reading: Reading) -> CompiledMapping:
        compiled = self._mappings.get(reading.key)
        if compiled is None:
            compiled = self._mappings[reading.key] = CompiledMapping(reading.method, reading.mapping)
        return compiled

    @staticmethod
    def _json(value: bytes) -> Record:
        try:
            record = _loads(_json_text(value))
        except orjson.JSONDecodeError as exc:
            raise DecodeError("decode", f"not valid UTF-8 JSON: {exc}") from None
        if type(record) is not dict:
            kind = "number" if type(record) is exactjson.JsonNumber else type(record).__name__
            raise DecodeError("decode", f"the value is a JSON {kind}, not an object")
        return record

    def _avro(self, schemas: WriterSchemas) -> Callable[[bytes], Record]:
        return framed_decoder(schemas, self._writer, _own)

    def _writer(self, schema_id: int | None, text: str) -> Reader:
        writer = self._schemas.get((schema_id, text))
        if writer is None:
            parsed = fastavro.parse_schema(json.loads(text))
            # Read as written: no contract to resolve into.
            writer = self._schemas[(schema_id, text)] = Reader(parsed, None, compile_reader(parsed))
        return writer


def _json_text(value: bytes) -> bytes:
    # A JSON text never starts with a zero byte: one there is the Confluent JSON Schema framing.
    return value[5:] if value[:1] == b"\0" else value


def _exact_numbers(
    values: Sequence[bytes | None], records: list[Any], indexes: list[int], failures: dict[int, Failure]
) -> tuple[list[Any], list[int]]:
    """The JSON records with every number as its producer wrote it: those orjson read a float in are read again
    by `exactjson.exact` (`bridge.decoding.exact_json`); one that reader cannot take (nested past the recursion limit)
    is
    a `decode` failure rather than a record with a number altered."""
    again = exactjson.inexact(records)
    if not again:
        return records, indexes
    for position in again:
        value = values[indexes[position]]
        assert value is not None
        try:
            records[position] = exactjson.exact(_json_text(value))
        except (ValueError, RecursionError) as exc:
            failures[indexes[position]] = ("decode", unexpected("reading its numbers exactly", exc))
    kept = [position for position in range(len(records)) if indexes[position] not in failures]
    return [records[p] for p in kept], [indexes[p] for p in kept]


def _own(writer: Reader, value: bytes, start: int) -> Record:
    """One record read with its writer's own schema, logical types kept: timestamps arrive as datetimes."""
    record = read_body(writer, value, start)
    if type(record) is not dict:
        raise DecodeError("decode", f"the writer schema is not a record but {type(record).__name__}")
    return record


def _pick(chunk: Chunk, positions: Sequence[int]) -> Chunk:
    """The records (with their keys and headers) at `positions`; the chunk itself when that is all of them."""
    if len(positions) == len(chunk.records):
        return chunk
    return Chunk(
        [chunk.records[p] for p in positions],
        None if chunk.keys is None else [chunk.keys[p] for p in positions],
        None if chunk.headers is None else [chunk.headers[p] for p in positions],
    )
