"""A checked mapping compiled into column functions that run over a whole chunk of records.

Each parameter's values are extracted for every record of the chunk with list comprehensions, and converted
value by value only where the column's types (one C-level pass, `set(map(type, ...))`) say a conversion is
needed. Records whose value cannot be converted are named with the parameter and where the value came from.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from itertools import repeat
from typing import Any, Final, NamedTuple

import orjson

from bridge.kafka.headers import MessageHeaders
from bridge.mapping.convert import (
    EPOCH,
    MILLISECOND,
    TO_MILLISECONDS,
    UnconvertibleError,
    Unit,
    converter,
    json_default,
    refuse_non_finite,
    show,
    to_text,
)
from bridge.mapping.forms import FieldForm, Form, HeaderForm, KeyForm, MappingSpec, PackForm, ValueForm
from bridge.mapping.parameters import Parameter, method_parameters

Record = dict[str, Any]
Headers = MessageHeaders


class Chunk(NamedTuple):
    records: Sequence[Record]
    keys: Sequence[bytes | None] | None
    """The Kafka message keys; given only to mappings that read them."""
    headers: Sequence[Headers | None] | None
    """The Kafka headers, as `bridge.kafka.headers.read_headers` reads them; given only to mappings that read them."""


Errors = dict[int, str]
Column = Callable[[Chunk, Errors], list[Any]]
"""A parameter's values for every record of a chunk; records whose value cannot be made are added to errors."""

_MISSING: Final = object()
_NONE: Final = type(None)
_CONTAINERS: Final = frozenset({dict, list})
_TIME: Final = frozenset({datetime})
_DICT: Final = frozenset({dict})
_get: Final[Callable[..., Any]] = dict.get
_dumps: Final = orjson.dumps


class Mapped(NamedTuple):
    columns: list[list[Any]]
    """One list per parameter of the method, in declared order: a value (as the contract decodes it) per record
    that converted, None for absent; what `RowMaker.table_of` takes."""
    positions: list[int]
    """Each of those records' position in the chunk."""
    failures: dict[int, str]
    """By position: the parameter and path that could not be converted, and why."""


class CompiledMapping:
    """A mapping made into column functions; `apply` runs them over a chunk."""

    def __init__(self, method: str, mapping: MappingSpec) -> None:
        self.parameters = tuple(method_parameters(method))
        used = _used_fields(mapping)
        self._columns = [
            (name, _compile(name, method_parameters(method)[name], mapping[name], used))
            for name in self.parameters
            if name in mapping
        ]
        self.reads_keys = any(_reads(source, KeyForm) for source in mapping.values())
        self.reads_headers = any(_reads(source, HeaderForm) for source in mapping.values())

    def apply(self, chunk: Chunk) -> Mapped:
        count = len(chunk.records)
        errors: Errors = {}
        by_name = {name: column(chunk, errors) for name, column in self._columns}
        # Columns, not a dict per record: the row maker works by column, and building a dict of every parameter
        # for each record cost a sixth of a mapped chunk.
        columns = [by_name[name] if name in by_name else [None] * count for name in self.parameters]
        if not errors:
            return Mapped(columns, list(range(count)), {})
        positions = [position for position in range(count) if position not in errors]
        return Mapped([[column[p] for p in positions] for column in columns], positions, errors)


def identity_mapping(method: str) -> MappingSpec:
    """Every parameter from the field of the same name: how a route without a mapping reads JSON records."""
    return {name: name for name in method_parameters(method)}


def _reads(source: Any, form: type[Form]) -> bool:
    return any(isinstance(s, form) for s in (source if isinstance(source, list) else [source]))


def _used_fields(mapping: MappingSpec) -> frozenset[str]:
    """The top-level fields a mapping reads, which `{pack: rest}` leaves out."""
    used = set()
    for source in mapping.values():
        for single in source if isinstance(source, list) else [source]:
            if isinstance(single, str):
                used.add(single.split(".")[0])
            elif isinstance(single, FieldForm):
                used.add(single.path.split(".")[0])
            elif isinstance(single, PackForm) and single.pack != "rest":
                paths = single.pack if isinstance(single.pack, list) else single.pack.values()
                used.update(path.split(".")[0] for path in paths)
    return frozenset(used)


def _compile(name: str, parameter: Parameter, source: Any, used: frozenset[str]) -> Column:
    singles = source if isinstance(source, list) else [source]
    extracts = [_extract(name, single, used) for single in singles]
    units = [single.unit if isinstance(single, FieldForm) else None for single in singles]
    converts = [_converting(name, parameter, unit, _where(single)) for single, unit in zip(singles, units, strict=True)]

    def column(chunk: Chunk, errors: Errors) -> list[Any]:
        values = converts[0](_blank_absent(extracts[0](chunk, errors)), errors)
        for extract, convert in zip(extracts[1:], converts[1:], strict=True):
            if None not in values:
                break
            # Later sources are read for every record but only fill the ones still unset; the errors of a
            # source that was not needed are not the record's.
            later: Errors = {}
            more = convert(_blank_absent(extract(chunk, later)), later)
            for position, value in enumerate(values):
                if value is None:
                    values[position] = more[position]
                    if position in later:
                        errors.setdefault(position, later[position])
        return values

    return column


def _blank_absent(values: list[Any]) -> list[Any]:
    """An empty string is absent, as the contract reads it: a first-of list goes on to its next source."""
    if "" in values:
        return [None if value == "" else value for value in values]
    return values


def _where(single: Any) -> str:
    if isinstance(single, str):
        return f"path {single}"
    if isinstance(single, FieldForm):
        return f"path {single.path}"
    if isinstance(single, PackForm):
        return "pack"
    if isinstance(single, HeaderForm):
        return f"header {single.header}"
    if isinstance(single, KeyForm):
        return "the message key"
    return "value"


def _converting(
    name: str, parameter: Parameter, unit: Unit | None, where: str
) -> Callable[[list[Any], Errors], list[Any]]:
    convert = converter(parameter, unit)
    kind = parameter.kind
    # The types a column may hold that need no conversion at all.
    ready: set[type] = set()
    if kind in ("string", "json"):
        ready = {str}
    elif kind == "integer" or (kind == "timestamp" and unit != "iso8601"):
        ready = {int}
    low, high = -(1 << (parameter.bits - 1)), (1 << (parameter.bits - 1)) - 1
    multiplier, divisor = TO_MILLISECONDS.get(unit or "ms", (1, 1))

    def converting(values: list[Any], errors: Errors) -> list[Any]:
        types = set(map(type, values))
        nullable = _NONE in types
        types.discard(_NONE)
        if types and types <= ready:
            if kind == "integer":
                numbers = [v for v in values if v is not None] if nullable else values
                if low <= min(numbers) and max(numbers) <= high:
                    return values
            elif kind != "timestamp" or (divisor == 1 and multiplier == 1):
                return values
            elif nullable:
                return [None if v is None else v * multiplier // divisor for v in values]
            else:
                return [v * multiplier // divisor for v in values]
        elif not types:
            return values
        if kind == "timestamp" and types == _TIME:
            with contextlib.suppress(TypeError):
                # Avro timestamp types, read as they are: aware UTC datetimes (a naive one goes value by value).
                return [None if v is None else (v - EPOCH) // MILLISECOND for v in values]
        if kind == "json" and types <= _CONTAINERS:
            with contextlib.suppress(TypeError):
                # Plain records and maps, the common case, in one pass; anything orjson refuses goes value by value.
                # Decoded at once: orjson's bytes objects, kept alive for a whole column, cost more than the writing.
                texts = [None if v is None else _dumps(v, default=json_default).decode() for v in values]
                # orjson writes NaN and Infinity as null: only a text holding a null can hide one.
                for position in [p for p, text in enumerate(texts) if text is not None and "null" in text]:
                    try:
                        refuse_non_finite(texts[position], values[position])  # type: ignore[arg-type]
                    except UnconvertibleError as exc:
                        errors.setdefault(position, f"{name} ({where}): {exc}")
                        texts[position] = None
                return texts
        out: list[Any] = []
        for position, value in enumerate(values):
            if value is None:
                out.append(None)
                continue
            try:
                out.append(convert(value))
            except UnconvertibleError as exc:
                errors.setdefault(position, f"{name} ({where}): {exc}")
                out.append(None)
        return out

    return converting


def _extract(name: str, single: Any, used: frozenset[str]) -> Column:
    if isinstance(single, str):
        return _path(single)
    if isinstance(single, FieldForm):
        return _looked_up(name, single) if single.lookup is not None else _path(single.path)
    if isinstance(single, PackForm):
        return _pack(single, used)
    if isinstance(single, ValueForm):
        value = single.value
        return lambda chunk, errors: [value] * len(chunk.records)
    if isinstance(single, HeaderForm):
        return _header(name, single.header)
    return _key(name)


def _path(text: str) -> Column:
    first, *rest = text.split(".")

    def path(chunk: Chunk, errors: Errors) -> list[Any]:
        # map() over dict.get runs in C; records are always dicts, nested values only where every one is.
        values = list(map(_get, chunk.records, repeat(first)))
        for step in rest:
            if set(map(type, values)) == _DICT:
                values = list(map(_get, values, repeat(step)))
            else:
                values = [v.get(step) if type(v) is dict else None for v in values]
        return values

    return path


def _present(text: str) -> Column:
    """Like `_path`, with _MISSING where the record has no such field (a pack leaves it out; None stays null)."""
    first, *rest = text.split(".")

    def present(chunk: Chunk, errors: Errors) -> list[Any]:
        values = list(map(_get, chunk.records, repeat(first), repeat(_MISSING)))
        for step in rest:
            values = [v.get(step, _MISSING) if type(v) is dict else _MISSING for v in values]
        return values

    return present


def _looked_up(name: str, single: FieldForm) -> Column:
    assert single.lookup is not None
    table = dict(single.lookup)
    default = single.default
    path = _path(single.path)

    def looked_up(chunk: Chunk, errors: Errors) -> list[Any]:
        values = path(chunk, errors)
        if set(map(type, values)) == {str}:
            hits: list[Any] = [table.get(value, _MISSING) for value in values]
            if _MISSING not in hits:
                return hits
        out: list[Any] = []
        for position, value in enumerate(values):
            if value is None or value == "":
                out.append(None)
                continue
            found = table.get(value if type(value) is str else _lookup_key(value), _MISSING)
            if found is _MISSING:
                if default is None:
                    errors.setdefault(position, f"{name} (path {single.path}): {show(value)} is not in the lookup")
                found = default
            out.append(found)
        return out

    return looked_up


def _lookup_key(value: Any) -> str:
    try:
        return to_text(value)
    except UnconvertibleError:
        return repr(value)


def _pack(single: PackForm, used: frozenset[str]) -> Column:
    if single.pack == "rest":

        def rest(chunk: Chunk, errors: Errors) -> list[Any]:
            packed = [{k: v for k, v in record.items() if k not in used} for record in chunk.records]
            return [p or None for p in packed]

        return rest
    named = single.pack if isinstance(single.pack, dict) else {path: path for path in single.pack}
    names = tuple(named)
    paths = [_present(path) for path in named.values()]

    def pack(chunk: Chunk, errors: Errors) -> list[Any]:
        columns = [path(chunk, errors) for path in paths]
        rows = zip(*columns, strict=True)
        if not any(_MISSING in column for column in columns):
            # Every field there in every record: dicts built in C, and none of them empty.
            return list(map(dict, map(zip, repeat(names), rows)))
        packed = [{n: v for n, v in zip(names, row, strict=True) if v is not _MISSING} for row in rows]
        return [p or None for p in packed]

    return pack


def _header(name: str, header: str) -> Column:
    wanted = header.encode()
    where = f"header {header}"

    def from_header(chunk: Chunk, errors: Errors) -> list[Any]:
        assert chunk.headers is not None
        out: list[Any] = []
        for position, headers in enumerate(chunk.headers):
            if headers is not None and headers.failure is not None:
                errors.setdefault(position, f"{name} ({where}): the record's headers cannot be read: {headers.failure}")
                out.append(None)
                continue
            raw = None if headers is None else headers.last(wanted)
            out.append(_utf8(name, where, raw, position, errors))
        return out

    return from_header


def _key(name: str) -> Column:
    def from_key(chunk: Chunk, errors: Errors) -> list[Any]:
        assert chunk.keys is not None
        return [_utf8(name, "the message key", key, position, errors) for position, key in enumerate(chunk.keys)]

    return from_key


def _utf8(name: str, where: str, raw: bytes | None, position: int, errors: Errors) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        errors.setdefault(position, f"{name} ({where}): not UTF-8 text")
        return None
