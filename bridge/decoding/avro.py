"""Avro bytes to records, in whichever process decodes them: the bridge's own or a transform worker.

Records are read into their method's contract (`schemas/appmetrica_event.avsc` for events, and one file per other
method) by Avro schema resolution, so a producer one version ahead (an added optional field), or with its own copy
of the field names and types, still decodes. Logical types are left as their plain values: `event_timestamp`
stays integer milliseconds and a decimal its unscaled bytes, which is what `rows` needs and what costs least.

Writer schemas travel as JSON text (`WriterSchemas`, small and picklable); each process parses a schema once and
keeps it. This module imports no registry or Kafka client, so workers start light; `bridge.decoding.registry` fetches.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final, Literal, NamedTuple, TypeVar

import fastavro
from fastavro.read import SchemaResolutionError

from bridge.decoding.flat_reader import FlatRead, FlatValuesRead, compile_reader, compile_values_reader
from bridge.postapi.methods import METHODS, MethodName

Record = dict[str, Any]
ReasonClass = Literal["decode", "schema"]

_schemaless_reader: Final = fastavro.schemaless_reader

WIRE_HEADER = struct.Struct(">bI")
"""The Confluent wire format's header: magic byte 0, then the writer schema's registry id."""


class DecodeError(Exception):
    """A record that can never be decoded: `reason` is the dead-letter class, `detail` says why."""

    def __init__(self, reason: ReasonClass, detail: str) -> None:
        super().__init__(detail)
        self.reason: ReasonClass = reason
        self.detail = detail


def contract_schema(method: MethodName = "events") -> dict[str, Any]:
    """A method's input contract, as shipped in the package."""
    text = (resources.files("bridge") / "schemas" / METHODS[method].contract_file).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _plain(schema: Any) -> Any:
    """The schema without logical types, so readers return plain ints instead of building datetimes."""
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_plain(s) for s in schema]
    return schema


def parse(schema: Any) -> Any:
    """A schema parsed once for fastavro, logical types dropped."""
    return fastavro.parse_schema(_plain(schema))


def named_as(writer: Any, contract: Any) -> Any:
    """The writer schema with its top-level record under the contract's full name.

    Avro resolution matches records by full name, but the topic already says which method a record is, and a
    producer's own copy of a contract under a name of its own (`shop.Purchase`) is still that contract. Nested
    named types keep their names.
    """
    if not (isinstance(writer, dict) and writer.get("type") == "record" and isinstance(contract, dict)):
        return writer
    name = contract["name"]
    namespace = contract.get("namespace")
    full = name if "." in name or not namespace else f"{namespace}.{name}"
    return {key: value for key, value in writer.items() if key != "namespace"} | {"name": full}


_NAMED_TYPES = frozenset({"record", "error", "enum", "fixed"})


def with_references(schema_text: str, referenced: Sequence[str]) -> str:
    """One self-contained schema text: `schema_text` with the named types of `referenced` (each schema after
    those it needs) written out where first used, as a Confluent registry's schema references mean.

    fastavro expands named types everywhere they appear, which Avro forbids past the first definition; the
    walk that keeps only the first is written here because no library does it. Raises when a name is unknown.
    """
    named: dict[str, Any] = {}
    for text in referenced:
        fastavro.parse_schema(json.loads(text), named_schemas=named)
    expanded = fastavro.parse_schema(json.loads(schema_text), named_schemas=named, expand=True, _write_hint=False)
    return json.dumps(_defined_once(expanded, "", set()))


def _defined_once(schema: Any, namespace: str, seen: set[str]) -> Any:
    if isinstance(schema, list):
        return [_defined_once(branch, namespace, seen) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if kind in _NAMED_TYPES:
        name = schema["name"]
        space = schema.get("namespace", namespace)
        full = name if "." in name or not space else f"{space}.{name}"
        if full in seen:
            return full
        seen.add(full)
        if kind in ("record", "error"):
            inner = full.rpartition(".")[0]
            fields = [{**f, "type": _defined_once(f["type"], inner, seen)} for f in schema["fields"]]
            return {**schema, "fields": fields}
        return schema
    if kind == "array":
        return {**schema, "items": _defined_once(schema["items"], namespace, seen)}
    if kind == "map":
        return {**schema, "values": _defined_once(schema["values"], namespace, seen)}
    if isinstance(kind, dict | list):
        return {**schema, "type": _defined_once(kind, namespace, seen)}
    return schema


class Reader(NamedTuple):
    """A parsed (writer, reader) pair; the reader is None when the writer is the contract itself."""

    writer: Any
    reader: Any
    flat: FlatRead | None = None
    """The shortcut for a flat writer read as written (`bridge.decoding.flat_reader`)."""
    flat_values: FlatValuesRead | None = None
    """The same shortcut giving the values alone, in the writer's field order."""
    names: tuple[str, ...] = ()
    """The contract's field names, in order: where `read_values` puts a record's values."""

    @classmethod
    def of(cls, writer: Any, reader: Any) -> Reader:
        """The pair for a writer schema and a parsed contract, the writer `named_as` the contract."""
        parsed = parse(named_as(writer, reader))
        names = tuple(field["name"] for field in reader["fields"])
        if fastavro.schema.to_parsing_canonical_form(parsed) != fastavro.schema.to_parsing_canonical_form(reader):
            return cls(parsed, reader, names=names)
        # The writer is the contract, fields in the contract's order.
        return cls(parsed, None, compile_reader(parsed), compile_values_reader(parsed), names)


def read_body(reader: Reader, value: bytes, start: int) -> Any:
    """The Avro datum from `start` to the end of `value`: by the flat reader when it can, else by fastavro. Raises
    DecodeError for poison."""
    if reader.flat is not None:
        flat = reader.flat(value, start)
        if flat is not None:
            return flat
    return _fastavro_read(reader, value, start)


def read_values(reader: Reader, value: bytes, start: int) -> tuple[Any, ...]:
    """The contract record's values, in the contract's field order, from `start` to the end of `value`. Raises
    DecodeError for poison."""
    if reader.flat_values is not None:
        flat = reader.flat_values(value, start)
        if flat is not None:
            return flat
    # Not the flat reader again: what its values twin left, it leaves too.
    record = _fastavro_read(reader, value, start)
    return tuple(map(record.__getitem__, reader.names))


def _fastavro_read(reader: Reader, value: bytes, start: int) -> Any:
    # Called once per record the flat reader leaves, so the fastavro call is made here directly.
    payload = io.BytesIO(value)
    payload.seek(start)
    size = len(value)
    try:
        datum = _schemaless_reader(payload, reader.writer, reader.reader)
    except SchemaResolutionError as exc:
        # A writer union branch the contract lacks, met only by the records that use it.
        raise DecodeError("schema", f"cannot be read into the contract: {exc}") from None
    except Exception as exc:
        raise DecodeError("decode", f"not a valid Avro record for its schema: {type(exc).__name__}: {exc}") from None
    if payload.tell() != size:
        raise DecodeError("decode", f"{size - payload.tell()} bytes left after the record")
    return datum


@dataclass(frozen=True, slots=True)
class WriterSchemas:
    """What decoding needs to know of the writers, as JSON text: sent with every chunk a worker decodes."""

    raw: str | None = None
    """The one writer schema of plain Avro values (`avro.format: raw`); None for the Confluent wire format."""
    by_id: Mapping[int, str] = field(default_factory=dict)
    """Confluent wire format: the writer schema of every registry id fetched and found readable."""
    unknown: Mapping[int, str] = field(default_factory=dict)
    """Registry ids that cannot be decoded, with why."""


P = TypeVar("P")
D = TypeVar("D")


def framed_decoder(
    schemas: WriterSchemas,
    prepare: Callable[[int | None, str], P],
    read: Callable[[P, bytes, int], D],
) -> Callable[[bytes], D]:
    """A function decoding one value: plain Avro of `schemas.raw`, or the Confluent wire format's id and body.

    `prepare` makes what `read` needs of one writer schema (once per schema, not per value); `read` decodes the
    body that starts at an offset of the value and must end with it. Framing that cannot be read raises DecodeError.
    """
    if schemas.raw is not None:
        prepared = prepare(None, schemas.raw)

        def decode_raw(value: bytes) -> D:
            return read(prepared, value, 0)

        return decode_raw
    by_id = {schema_id: prepare(schema_id, text) for schema_id, text in schemas.by_id.items()}
    unknown = schemas.unknown
    unpack = WIRE_HEADER.unpack_from

    def decode_wire(value: bytes) -> D:
        size = len(value)
        if size < 5:
            raise DecodeError("decode", f"{size} bytes is too short for the Confluent wire format")
        magic, schema_id = unpack(value)
        if magic != 0:
            raise DecodeError("decode", f"magic byte {magic}: not the Confluent wire format (version 0)")
        writer = by_id.get(schema_id)
        if writer is None:
            why = unknown.get(schema_id, "not fetched from the registry")
            raise DecodeError("schema", f"schema id {schema_id}: {why}")
        return read(writer, value, 5)

    return decode_wire


class Readers:
    """One process's parsed readers, built on first use and kept.

    Keyed by the schema text as well as the id: a registry never reuses an id, and the text costs one hash per
    chunk, so a process that meets two registries (the tests, say) still never reads with the wrong schema.
    """

    def __init__(self) -> None:
        self._contracts: dict[MethodName, Any] = {}
        self._parsed: dict[tuple[MethodName, int | None, str], Reader] = {}

    def decoder(self, schemas: WriterSchemas, method: MethodName) -> Callable[[bytes], Record]:
        """A function decoding one value written with one of `schemas` into `method`'s contract; it raises
        DecodeError for poison."""
        # Always records: each writer is the contract, or is resolved into it.
        return framed_decoder(schemas, lambda schema_id, text: self._reader(method, schema_id, text), read_body)

    def values_decoder(self, schemas: WriterSchemas, method: MethodName) -> Callable[[bytes], tuple[Any, ...]]:
        """The same, decoding each value into a tuple of the contract's values in its field order, which is the
        order of the method's parameters (`Method.names`)."""
        return framed_decoder(schemas, lambda schema_id, text: self._reader(method, schema_id, text), read_values)

    def _reader(self, method: MethodName, schema_id: int | None, text: str) -> Reader:
        reader = self._parsed.get((method, schema_id, text))
        if reader is None:
            contract = self._contracts.get(method)
            if contract is None:
                contract = self._contracts[method] = parse(contract_schema(method))
            reader = self._parsed[(method, schema_id, text)] = Reader.of(json.loads(text), contract)
        return reader
