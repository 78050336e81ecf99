"""Which writer schemas the records need: Confluent wire format ids through a schema registry, or one local file.

Decoding itself is `bridge.decoding.avro`, run wherever the records are transformed; this side runs in the owner loop,
fetches every schema a stretch of records names before they are transformed, and tells transient registry
trouble (the records wait) from ids that can never be read (their records are poison).
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import fastavro
from confluent_kafka.schema_registry import AsyncSchemaRegistryClient, Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from bridge.config.model import AvroConfig, RegistryCredentials
from bridge.decoding.avro import WIRE_HEADER, Reader, WriterSchemas, contract_schema, named_as, parse, with_references
from bridge.decoding.resolution import resolution_problem
from bridge.postapi.methods import MethodName

_UNKNOWN_ID_TTL_S = 60.0


_UNKNOWN_IDS_KEPT = 1024
"""Unreadable ids remembered, at most: garbage whose first byte is 0 names a new id with every record."""


class RegistryUnavailableError(Exception):
    """The schema registry could not be asked; transient, the records wait and are tried again."""


class Decoder(Protocol):
    async def prepare(self, values: Iterable[bytes | None]) -> None:
        """Make every schema these values need available; raise RegistryUnavailableError if it cannot be fetched."""

    def schemas(self, method: MethodName) -> WriterSchemas:
        """What decoding the prepared values of `method` needs, for the process that decodes them."""

    def problem(self) -> str | None:
        """Why the registry refuses the bridge (credentials, TLS) while records wait for it; None otherwise."""


class RawDecoder:
    """Plain Avro binary: events written with one known schema file, every other method with its own contract."""

    def __init__(self, writer_schema_file: Path, own_schema: bool = False) -> None:
        text = writer_schema_file.read_text(encoding="utf-8")
        problem = _unparsable(text) if own_schema else _unreadable(text, "events")
        if problem is not None:
            raise ValueError(f"{writer_schema_file} {problem}")
        self._events = WriterSchemas(raw=text)
        self._own = own_schema
        """Records of a mapping: read with the file's schema whatever their method."""
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

    def problem(self) -> str | None:
        return None


class NoSchemas:
    """The decoder of a configuration whose routes all read JSON: no value names a schema, no registry is asked."""

    async def prepare(self, values: Iterable[bytes | None]) -> None:
        return None

    def schemas(self, method: MethodName) -> WriterSchemas:
        return WriterSchemas()

    def problem(self) -> str | None:
        return None


class ConfluentDecoder:
    """The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the Avro body."""

    def __init__(self, registry: AsyncSchemaRegistryClient, own_schema: bool = False) -> None:
        self._registry = registry
        self._own = own_schema
        """Records of a mapping: read with their writer's own schema, so a writer need only parse."""
        self._writers: dict[int, str] = {}
        """Every Avro writer schema fetched, whichever method its records are read into."""
        self._unknown: dict[int, tuple[float, str]] = {}
        """Oldest first, at most _UNKNOWN_IDS_KEPT."""
        self._unreadable: dict[tuple[MethodName, int], str | None] = {}
        """Whether each writer can be read into each method's contract, asked once per pair."""
        self._schemas: dict[MethodName, WriterSchemas] = {}
        """Rebuilt only after a fetch changed what is known: every chunk carries it."""
        self._problem: str | None = None

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
        self._problem = None

    async def _fetch(self, schema_id: int) -> None:
        try:
            schema = await self._resolved(await self._registry.get_schema(schema_id))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                self._not_readable(schema_id, time.monotonic() + _UNKNOWN_ID_TTL_S, "the registry knows no such id")
                return
            if exc.http_status_code in (401, 403):
                self._problem = (
                    f"the schema registry refuses the bridge's credentials (HTTP {exc.http_status_code}); "
                    "records wait until it accepts them"
                )
                raise RegistryUnavailableError(self._problem) from None
            raise RegistryUnavailableError(f"schema registry answered {exc.http_status_code}") from None
        except Exception as exc:
            tls = _tls_failure(exc)
            if tls is not None:
                self._problem = f"TLS with the schema registry failed: {tls}; records wait until it succeeds"
                raise RegistryUnavailableError(self._problem) from None
            raise RegistryUnavailableError(f"schema registry unreachable: {type(exc).__name__}") from None
        if (schema.schema_type or "AVRO") != "AVRO" or schema.schema_str is None:
            self._not_readable(schema_id, float("inf"), f"the schema is {schema.schema_type}, not AVRO")
            return
        try:
            json.loads(schema.schema_str)
        except ValueError as exc:
            self._not_readable(schema_id, float("inf"), f"cannot be read into the contract: {exc}")
            return
        self._writers[schema_id] = schema.schema_str
        self._unknown.pop(schema_id, None)
        self._schemas.clear()

    async def _resolved(self, schema: Schema) -> Schema:
        """The schema with the named types it references (from other subjects) written in."""
        if not schema.references or schema.schema_str is None:
            return schema
        referenced: list[str] = []
        await self._referenced(schema, referenced, set())
        try:
            text = with_references(schema.schema_str, referenced)
        except Exception:
            return schema  # the contract check below names the type it cannot find
        return Schema(text, schema.schema_type)

    async def _referenced(self, schema: Schema, found: list[str], visited: set[tuple[str, int]]) -> None:
        # Depth first, so each referenced schema comes after the ones it needs itself.
        for reference in schema.references or []:
            subject, version = reference.subject or "", reference.version or -1
            if (subject, version) in visited:
                continue
            visited.add((subject, version))
            registered = await self._registry.get_version(subject, version)
            await self._referenced(registered.schema, found, visited)
            if registered.schema.schema_str is not None:
                found.append(registered.schema.schema_str)

    def _not_readable(self, schema_id: int, until: float, why: str) -> None:
        unknown = self._unknown
        unknown.pop(schema_id, None)
        while len(unknown) >= _UNKNOWN_IDS_KEPT:
            # Forgotten ids are asked again when met again; their records are "schema" failures meanwhile.
            del unknown[next(iter(unknown))]
        unknown[schema_id] = (until, why)
        self._schemas.clear()

    def problem(self) -> str | None:
        return self._problem

    def schemas(self, method: MethodName) -> WriterSchemas:
        """The writers whose records `method`'s contract can read, and why the others cannot be.

        A registry id names its writer whatever the topic, but whether it can be read depends on the method: the
        answer is asked once per writer and method.
        """
        schemas = self._schemas.get(method)
        if schemas is None:
            readable: dict[int, str] = {}
            unknown = {schema_id: why for schema_id, (_, why) in self._unknown.items()}
            for schema_id, text in self._writers.items():
                key = (method, schema_id)
                if key not in self._unreadable:
                    self._unreadable[key] = _unparsable(text) if self._own else _unreadable(text, method)
                why = self._unreadable[key]
                if why is None:
                    readable[schema_id] = text
                else:
                    unknown[schema_id] = why
            schemas = self._schemas[method] = WriterSchemas(by_id=readable, unknown=unknown)
        return schemas


def _unreadable(writer_text: str, method: MethodName) -> str | None:
    """Why a writer schema's records can never be read into `method`'s contract, or None.

    Parsed here only to refuse an unreadable schema once; the transforms parse their own copies.
    """
    contract = contract_schema(method)
    try:
        writer = json.loads(writer_text)
        Reader.of(writer, parse(contract))
    except Exception as exc:
        return f"cannot be read into the contract: {exc}"
    problem = resolution_problem(named_as(writer, contract), contract)
    return None if problem is None else f"cannot be read into the contract: {problem}"


def _unparsable(writer_text: str) -> str | None:
    """Why a writer schema cannot be read with at all (records of a mapping need nothing more), or None."""
    try:
        fastavro.parse_schema(json.loads(writer_text))
    except Exception as exc:
        return f"cannot be parsed: {exc}"
    return None


def _tls_failure(exc: BaseException) -> str | None:
    """The TLS reason somewhere in an exception's chain (the registry's HTTP client wraps it twice), or None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"certificate verification failed: {seen.verify_message}"
        if isinstance(seen, ssl.SSLError):
            return seen.reason or type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return None


def registry_client_conf(avro: AvroConfig, credentials: RegistryCredentials) -> dict[str, Any]:
    """The operator's registry client properties as given, with the credentials from the environment or files."""
    return {**avro.schema_registry_properties, **credentials.client_properties()}


def make_decoder(
    fmt: str,
    schema_registry_url: str | None,
    schema_file: Path | None,
    registry_conf: Mapping[str, Any] | None = None,
    own_schema: bool = False,
) -> Decoder:
    """The decoder the configuration asks for: each method's contract is its reader schema, or, for routes with a
    mapping (`own_schema`), each writer's own."""
    if fmt == "raw":
        assert schema_file is not None
        return RawDecoder(schema_file, own_schema)
    assert schema_registry_url is not None
    registry = AsyncSchemaRegistryClient(
        {"max.retries": 1, "timeout": 10, **(registry_conf or {}), "url": schema_registry_url}
    )
    return ConfluentDecoder(registry, own_schema)
