"""Which writer schemas the records need: Confluent wire format ids through a schema registry, or one local file.

Decoding itself is `bridge.avro`, run wherever the records are transformed; this side runs in the owner loop,
fetches every schema a stretch of records names before they are transformed, and tells transient registry
trouble (the records wait) from ids that can never be read (their records are poison).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import fastavro
from confluent_kafka.schema_registry import AsyncSchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from bridge.avro import WIRE_HEADER, Reader, WriterSchemas, contract_schema, parse
from bridge.methods import MethodName

_UNKNOWN_ID_TTL_S = 60.0


class RegistryUnavailableError(Exception):
    """The schema registry could not be asked; transient, the records wait and are tried again."""


class Decoder(Protocol):
    async def prepare(self, values: Iterable[bytes | None]) -> None:
        """Make every schema these values need available; raise RegistryUnavailableError if it cannot be fetched."""

    def schemas(self, method: MethodName) -> WriterSchemas:
        """What decoding the prepared values of `method` needs, for the process that decodes them."""


class RawDecoder:
    """Plain Avro binary: events written with one known schema file, every other method with its own contract."""

    def __init__(self, writer_schema_file: Path, reader_schema: Any) -> None:
        text = writer_schema_file.read_text(encoding="utf-8")
        try:
            _readable(json.loads(text), reader_schema)
        except Exception as exc:
            raise ValueError(f"{writer_schema_file} cannot be read into the contract: {exc}") from exc
        self._events = WriterSchemas(raw=text)
        self._own = reader_schema is None
        """Records of a mapping, read with the file's schema whatever their method."""
        self._contracts: dict[MethodName, WriterSchemas] = {}

    async def prepare(self, values: Iterable[bytes | None]) -> None:
        return None

    def schemas(self, method: MethodName) -> WriterSchemas:
        if method == "events" or self._own:
            return self._events
        schemas = self._contracts.get(method)
        if schemas is None:
            schemas = self._contracts[method] = WriterSchemas(raw=json.dumps(contract_schema(method)))
        return schemas


class ConfluentDecoder:
    """The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the Avro body."""

    def __init__(self, registry: AsyncSchemaRegistryClient, reader_schema: Any) -> None:
        self._registry = registry
        self._reader_schema = reader_schema
        self._writers: dict[int, str] = {}
        self._unknown: dict[int, tuple[float, str]] = {}
        self._schemas: WriterSchemas | None = None
        """Rebuilt only after a fetch changed what is known: every chunk carries it."""

    async def prepare(self, values: Iterable[bytes | None]) -> None:
        wanted = set()
        # A chunk's values share a handful of distinct headers: look at each once, not at every value.
        for header in {value[:5] for value in values if value}:
            if len(header) == 5 and header[0] == 0:
                schema_id = WIRE_HEADER.unpack(header)[1]
                if schema_id not in self._writers:
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
                self._not_readable(schema_id, time.monotonic() + _UNKNOWN_ID_TTL_S, "the registry knows no such id")
                return
            raise RegistryUnavailableError(f"schema registry answered {exc.http_status_code}") from None
        except Exception as exc:
            raise RegistryUnavailableError(f"schema registry unreachable: {type(exc).__name__}") from None
        if (schema.schema_type or "AVRO") != "AVRO" or schema.schema_str is None:
            self._not_readable(schema_id, float("inf"), f"the schema is {schema.schema_type}, not AVRO")
            return
        try:
            # Parsed here only to refuse an unreadable schema once; the transforms parse their own copies.
            _readable(json.loads(schema.schema_str), self._reader_schema)
        except Exception as exc:
            self._not_readable(schema_id, float("inf"), f"cannot be read into the contract: {exc}")
            return
        self._writers[schema_id] = schema.schema_str
        self._unknown.pop(schema_id, None)
        self._schemas = None

    def _not_readable(self, schema_id: int, until: float, why: str) -> None:
        self._unknown[schema_id] = (until, why)
        self._schemas = None

    def schemas(self, method: MethodName) -> WriterSchemas:
        """The same for every method: a registry id names its writer whatever the topic; resolution into the
        method's contract happens where records are decoded."""
        if self._schemas is None:
            self._schemas = WriterSchemas(
                by_id=dict(self._writers), unknown={schema_id: why for schema_id, (_, why) in self._unknown.items()}
            )
        return self._schemas


def _readable(writer: Any, reader: Any) -> None:
    """Raise unless records of `writer` can be read: into `reader` when given, else with the writer's own schema."""
    if reader is None:
        fastavro.parse_schema(writer)
    else:
        Reader.of(writer, reader)


def make_decoder(
    fmt: str, schema_registry_url: str | None, schema_file: Path | None, own_schema: bool = False
) -> Decoder:
    """The decoder the configuration asks for: into the contract, or with each writer's own schema (a mapping)."""
    reader = None if own_schema else parse(contract_schema())
    if fmt == "raw":
        assert schema_file is not None
        return RawDecoder(schema_file, reader)
    assert schema_registry_url is not None
    registry = AsyncSchemaRegistryClient({"url": schema_registry_url, "max.retries": 1, "timeout": 10})
    return ConfluentDecoder(registry, reader)
