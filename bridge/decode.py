"""Avro bytes to records: Confluent wire format through a schema registry, or raw binary with a local schema.

Records are read into the project's contract (`schemas/appmetrica_event.avsc`) by Avro schema resolution, so a
producer one version ahead (an added optional field) still decodes. Logical types are left as their plain
values: `event_timestamp` stays integer milliseconds, which is what `rows` needs and what costs least.
"""

from __future__ import annotations

import io
import json
import struct
import time
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

import fastavro
from confluent_kafka.schema_registry import AsyncSchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

Record = dict[str, Any]
ReasonClass = Literal["decode", "schema"]

_WIRE_HEADER = struct.Struct(">bI")
_UNKNOWN_ID_TTL_S = 60.0


class DecodeError(Exception):
    """A record that can never be decoded: `reason` is the dead-letter class, `detail` says why."""

    def __init__(self, reason: ReasonClass, detail: str) -> None:
        super().__init__(detail)
        self.reason: ReasonClass = reason
        self.detail = detail


class RegistryUnavailableError(Exception):
    """The schema registry could not be asked; transient, the records wait and are tried again."""


class Decoder(Protocol):
    async def prepare(self, values: Iterable[bytes | None]) -> None:
        """Make every schema these values need available; raise RegistryUnavailableError if it cannot be fetched."""

    def decode(self, value: bytes) -> Record:
        """One record from its bytes; raise DecodeError for bytes that can never decode."""


def contract_schema() -> dict[str, Any]:
    """The project's input contract, as shipped in the package."""
    text = (resources.files("bridge") / "schemas" / "appmetrica_event.avsc").read_text(encoding="utf-8")
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


class _Reader:
    """A parsed (writer, reader) pair; the reader is skipped when the writer is the contract itself."""

    __slots__ = ("_reader", "_writer")

    def __init__(self, writer: Any, reader: Any) -> None:
        self._writer = parse(writer)
        same = fastavro.schema.to_parsing_canonical_form(self._writer) == fastavro.schema.to_parsing_canonical_form(
            reader
        )
        self._reader = None if same else reader

    def read(self, payload: io.BytesIO) -> Record:
        record = fastavro.schemaless_reader(payload, self._writer, self._reader)
        if not isinstance(record, dict):
            raise TypeError(f"the schema describes a {type(record).__name__}, not a record")
        return record


def _read(reader: _Reader, payload: io.BytesIO, size: int) -> Record:
    try:
        record = reader.read(payload)
    except Exception as exc:
        raise DecodeError("decode", f"not a valid Avro record for its schema: {type(exc).__name__}: {exc}") from None
    if payload.tell() != size:
        raise DecodeError("decode", f"{size - payload.tell()} bytes left after the record")
    return record


class RawDecoder:
    """Plain Avro binary written with one known schema file."""

    def __init__(self, writer_schema_file: Path, reader_schema: Any) -> None:
        writer = json.loads(writer_schema_file.read_text(encoding="utf-8"))
        try:
            self._reader = _Reader(writer, reader_schema)
        except Exception as exc:
            raise ValueError(f"{writer_schema_file} cannot be read into the contract: {exc}") from exc

    async def prepare(self, values: Iterable[bytes | None]) -> None:
        return None

    def decode(self, value: bytes) -> Record:
        return _read(self._reader, io.BytesIO(value), len(value))


class ConfluentDecoder:
    """The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the Avro body."""

    def __init__(self, registry: AsyncSchemaRegistryClient, reader_schema: Any) -> None:
        self._registry = registry
        self._reader_schema = reader_schema
        self._readers: dict[int, _Reader] = {}
        self._unknown: dict[int, tuple[float, str]] = {}

    async def prepare(self, values: Iterable[bytes | None]) -> None:
        wanted = set()
        for value in values:
            if value is not None and len(value) >= 5 and value[0] == 0:
                schema_id = _WIRE_HEADER.unpack_from(value)[1]
                if schema_id not in self._readers:
                    wanted.add(schema_id)
        now = time.monotonic()
        for schema_id in wanted:
            unknown = self._unknown.get(schema_id)
            if unknown is None or unknown[0] < now:
                await self._fetch(schema_id)

    async def _fetch(self, schema_id: int) -> None:
        try:
            schema = await self._registry.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                self._unknown[schema_id] = (time.monotonic() + _UNKNOWN_ID_TTL_S, "the registry knows no such id")
                return
            raise RegistryUnavailableError(f"schema registry answered {exc.http_status_code}") from None
        except Exception as exc:
            raise RegistryUnavailableError(f"schema registry unreachable: {type(exc).__name__}") from None
        if (schema.schema_type or "AVRO") != "AVRO" or schema.schema_str is None:
            self._unknown[schema_id] = (float("inf"), f"the schema is {schema.schema_type}, not AVRO")
            return
        try:
            reader = _Reader(json.loads(schema.schema_str), self._reader_schema)
        except Exception as exc:
            self._unknown[schema_id] = (float("inf"), f"cannot be read into the contract: {exc}")
            return
        self._readers[schema_id] = reader
        self._unknown.pop(schema_id, None)

    def decode(self, value: bytes) -> Record:
        size = len(value)
        if size < 5:
            raise DecodeError("decode", f"{size} bytes is too short for the Confluent wire format")
        magic, schema_id = _WIRE_HEADER.unpack_from(value)
        if magic != 0:
            raise DecodeError("decode", f"magic byte {magic}: not the Confluent wire format (version 0)")
        reader = self._readers.get(schema_id)
        if reader is None:
            why = self._unknown.get(schema_id, (0.0, "not fetched from the registry"))[1]
            raise DecodeError("schema", f"schema id {schema_id}: {why}")
        payload = io.BytesIO(value)
        payload.seek(5)
        return _read(reader, payload, size)


def make_decoder(fmt: str, schema_registry_url: str | None, schema_file: Path | None) -> Decoder:
    """The decoder the configuration asks for, with the contract as the reader schema."""
    reader = parse(contract_schema())
    if fmt == "raw":
        assert schema_file is not None
        return RawDecoder(schema_file, reader)
    assert schema_registry_url is not None
    registry = AsyncSchemaRegistryClient({"url": schema_registry_url, "max.retries": 1, "timeout": 10})
    return ConfluentDecoder(registry, reader)
