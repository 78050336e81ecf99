"""A route's `mapping`: where each Post API parameter comes from in the records a team already has.

The forms (a dot path, `{path, unit}`, `{path, lookup}`, `{pack: [...]}` / `{pack: rest}`, a list meaning the first
one that is set, `{value}`, `{header}`, `{key: true}`) are parsed once by pydantic inside the configuration and
checked against the method's parameters there. `compile_mapping` turns them into one column function per
parameter: each runs over a whole chunk of records with list comprehensions and C-level type checks, and looks at
values one by one only where the column's types say a conversion is needed.

The output is what the method's Avro contract decodes to (strings, longs, timestamps as integer milliseconds,
None for absent), so the same row maker and the same rules judge mapped and contract records. Only conversions
are judged here; a value that cannot be converted makes its record a dead letter (`invalid`) whose detail names
the parameter and where its value came from. Written by hand: no library maps records column-wise onto a target
whose types are this project's own contract.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Annotated, Any, Final, Literal, NamedTuple
from uuid import UUID

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
)

from bridge.avro import contract_schema
from bridge.postapi import EVENT_COLUMNS

Record = dict[str, Any]
Headers = Sequence[tuple[str, bytes | None]]
Kind = Literal["string", "integer", "timestamp", "json", "decimal"]
Unit = Literal["s", "ms", "us", "ns", "iso8601"]

_PATH: Final = re.compile(r"[^.\s]+(\.[^.\s]+)*")


def _path_text(text: str) -> str:
    if not _PATH.fullmatch(text):
        raise ValueError(f"malformed path {text!r}: field names joined by dots, without spaces")
    return text


PathText = Annotated[str, AfterValidator(_path_text)]
"""Field names joined by dots: into nested records, map keys and whichever union branch the value has."""
Scalar = StrictBool | StrictInt | StrictFloat | StrictStr

JSON_PARAMETERS: Final = frozenset({"event_json"})
"""Parameters whose value is JSON text: a record or map given to them is written as JSON."""


class Parameter(NamedTuple):
    kind: Kind
    bits: int = 64
    """Integers: the width of the contract's Avro type (int 32, long 64)."""


@cache
def method_parameters(method: str) -> Mapping[str, Parameter]:
    """The method's Post API parameters and what each takes, read from its Avro contract.

    Only `events` has a contract so far; the other methods' parameters come with their declaration.
    """
    if method != "events":
        return {}
    fields = {field["name"]: field["type"] for field in contract_schema()["fields"]}
    return {name: _parameter(name, fields[name]) for name in EVENT_COLUMNS}


def _parameter(name: str, avro_type: Any) -> Parameter:
    if isinstance(avro_type, list):
        avro_type = next(t for t in avro_type if t != "null")
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical == "timestamp-millis":
            return Parameter("timestamp")
        if logical == "decimal":
            return Parameter("decimal")
        avro_type = avro_type["type"]
    if avro_type in ("int", "long"):
        return Parameter("integer", 32 if avro_type == "int" else 64)
    return Parameter("json" if name in JSON_PARAMETERS else "string")


# -- the forms, as the configuration writes them ------------------------------------------------------------------


def _lookup_text(key: Any) -> Any:
    """YAML reads `{1: ..., true: ...}` keys as numbers and booleans; a record's value is looked up as text."""
    return _to_text(key) if isinstance(key, bool | int | float) else key


class _Form(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldForm(_Form):
    """`{path, unit}` or `{path, lookup, default}`."""

    path: PathText
    unit: Unit | None = None
    """How a timestamp is written; Avro timestamp types are read as they are whatever it says."""
    lookup: dict[Annotated[str, BeforeValidator(_lookup_text)], Scalar] | None = None
    """The parameter's value for each of the field's values; a value it does not list is a dead letter."""
    default: Scalar | None = None
    """With `lookup`: the value for a field value the lookup does not list, instead of a dead letter."""


class PackForm(_Form):
    """A JSON object of fields: a list (named by their paths), a mapping of names to paths, or `rest`."""

    pack: Literal["rest"] | Annotated[list[PathText], Field(min_length=1)] | dict[str, PathText]


class ValueForm(_Form):
    value: Scalar


class HeaderForm(_Form):
    header: Annotated[str, Field(min_length=1)]
    """A Kafka header's name; its value is read as UTF-8 (the last header of that name)."""


class KeyForm(_Form):
    key: Literal[True]
    """The Kafka message key, read as UTF-8."""


_FORM_KEYS: Final = (("path", "field"), ("pack", "pack"), ("value", "value"), ("header", "header"), ("key", "key"))


def _form_of(raw: Any) -> str | None:
    if isinstance(raw, str):
        return "path"
    if isinstance(raw, list):
        return "first"
    if isinstance(raw, dict):
        return next((tag for key, tag in _FORM_KEYS if key in raw), None)
    if isinstance(raw, BaseModel):
        return {FieldForm: "field", PackForm: "pack", ValueForm: "value", HeaderForm: "header", KeyForm: "key"}.get(
            type(raw)
        )
    return None


_SOURCE_ERROR: Final = "a dot path, a list of sources, or a mapping with path, pack, value, header or key"
Single = Annotated[
    Annotated[PathText, Tag("path")]
    | Annotated[FieldForm, Tag("field")]
    | Annotated[PackForm, Tag("pack")]
    | Annotated[ValueForm, Tag("value")]
    | Annotated[HeaderForm, Tag("header")]
    | Annotated[KeyForm, Tag("key")],
    Discriminator(_form_of, custom_error_type="source", custom_error_message=f"expected {_SOURCE_ERROR}"),
]
Source = Annotated[
    Annotated[PathText, Tag("path")]
    | Annotated[FieldForm, Tag("field")]
    | Annotated[PackForm, Tag("pack")]
    | Annotated[ValueForm, Tag("value")]
    | Annotated[HeaderForm, Tag("header")]
    | Annotated[KeyForm, Tag("key")]
    | Annotated[Annotated[list[Single], Field(min_length=1)], Tag("first")],
    Discriminator(_form_of, custom_error_type="source", custom_error_message=f"expected {_SOURCE_ERROR}"),
]
"""Where one parameter's value comes from."""
MappingSpec = dict[str, Source]


def check_mapping(method: str, mapping: MappingSpec) -> None:
    """Refuse what the forms alone cannot: parameters the method lacks, forms their parameter cannot take.

    Raises ValueError naming the parameter.
    """
    parameters = method_parameters(method)
    if not parameters:
        raise ValueError(f"mappings for method {method} are not supported yet")
    for name, source in mapping.items():
        parameter = parameters.get(name)
        if parameter is None:
            raise ValueError(f"{name}: not a parameter of method {method} ({', '.join(parameters)})")
        for single in source if isinstance(source, list) else [source]:
            _check_single(name, parameter, single)


def _check_single(name: str, parameter: Parameter, single: Any) -> None:
    if isinstance(single, FieldForm):
        if single.unit is not None and parameter.kind != "timestamp":
            raise ValueError(f"{name}.unit: {name} is not a timestamp")
        if single.lookup is not None and single.unit is not None:
            raise ValueError(f"{name}: give unit or lookup, not both")
        if single.default is not None and single.lookup is None:
            raise ValueError(f"{name}.default: only a lookup has a default")
        for key, value in (single.lookup or {}).items():
            _constant(name, parameter, value, f"{name}.lookup.{key}")
        if single.default is not None:
            _constant(name, parameter, single.default, f"{name}.default")
    elif isinstance(single, PackForm) and parameter.kind != "json":
        raise ValueError(f"{name}.pack: {name} is not a JSON parameter, so it cannot take a packed object")
    elif isinstance(single, ValueForm):
        _constant(name, parameter, single.value, f"{name}.value")


def _constant(name: str, parameter: Parameter, value: Any, where: str) -> Any:
    try:
        return _converter(parameter, None)(value)
    except UnconvertibleError as exc:
        raise ValueError(f"{where}: {exc}") from None


# -- conversions: one value to what the contract holds -------------------------------------------------------------


class UnconvertibleError(Exception):
    """A value the parameter cannot take; the message says why."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _to_text(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        if not math.isfinite(value):
            raise UnconvertibleError(f"{value!r} is not a finite number")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, Decimal) and value.is_finite():
        return format(value, "f")
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise UnconvertibleError(f"a {_type_name(value)} is not text")


def _type_name(value: Any) -> str:
    if isinstance(value, dict):
        return "record or map"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bytes):
        return "bytes value"
    return type(value).__name__


def _integer(bits: int) -> Callable[[Any], int]:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def to_integer(value: Any) -> int:
        kind = type(value)
        if kind is int:
            number: int = value
        elif _integral(value):
            number = int(value)
        else:
            raise UnconvertibleError(f"{_show(value)} is not an integer")
        if not low <= number <= high:
            raise UnconvertibleError(f"{number} does not fit a {bits}-bit integer")
        return number

    return to_integer


def _integral(value: Any) -> bool:
    """A float, decimal text or Decimal that is exactly an integer (not a bool, which is an int too)."""
    kind = type(value)
    if kind is float:
        return bool(value.is_integer())
    if kind is str:
        digits = value.removeprefix("-")
        return bool(digits.isascii() and digits.isdigit())
    return isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value()


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND: Final = timedelta(milliseconds=1)
_TO_MILLISECONDS: Final[dict[str, tuple[int, int]]] = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000), "ns": (1, 10**6)}
"""(multiplier, divisor) from each unit to milliseconds; a number with no unit is milliseconds, as in the contract."""


def _timestamp(unit: Unit | None) -> Callable[[Any], int]:
    multiplier, divisor = _TO_MILLISECONDS.get(unit or "ms", (1, 1))

    def to_millis(value: Any) -> int:
        kind = type(value)
        if isinstance(value, datetime):
            # An Avro timestamp type, read as it is; a naive (local-timestamp) value is taken as UTC.
            aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
            return int((aware - _EPOCH) // _MILLISECOND)
        if kind is str and (unit == "iso8601" or (unit is None and not value.isdigit())):
            return _iso_millis(value)
        if unit == "iso8601":
            raise UnconvertibleError(f"{_show(value)} is not an ISO 8601 text")
        if kind is str and value.isascii() and value.isdigit():
            return int(value) * multiplier // divisor
        if kind is int:
            return int(value) * multiplier // divisor
        if kind is float and math.isfinite(value):
            number: float = value
            return math.floor(number * multiplier / divisor)
        raise UnconvertibleError(f"{_show(value)} is not a timestamp in {unit or 'ms'}")

    return to_millis


def _iso_millis(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UnconvertibleError(f"{_show(text)} is not an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise UnconvertibleError(f"{_show(text)} has no UTC offset")
    return int((moment - _EPOCH) // _MILLISECOND)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal) and value.is_finite():
        return format(value, "f")
    raise TypeError(f"a {_type_name(value)} has no JSON form")


def _to_json(value: Any) -> str:
    if type(value) is str:
        return value
    try:
        return orjson.dumps(value, default=_json_default).decode()
    except TypeError as exc:
        raise UnconvertibleError(f"cannot be written as JSON ({exc})") from None


_SCALE: Final = Decimal(1).scaleb(-8)


def _to_decimal(value: Any) -> bytes:
    """Unscaled two's-complement bytes at scale 8, as Avro's decimal holds them."""
    if type(value) is bool or not isinstance(value, int | float | str | Decimal):
        raise UnconvertibleError(f"a {_type_name(value)} is not a decimal")
    try:
        number = Decimal(str(value)) if not isinstance(value, Decimal) else value
        scaled = number.quantize(_SCALE)
    except (InvalidOperation, ValueError):
        raise UnconvertibleError(f"{_show(value)} is not a decimal") from None
    if scaled != number:
        raise UnconvertibleError(f"{_show(value)} has more than 8 decimal places")
    unscaled = int(scaled.scaleb(8))
    return unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)


def _converter(parameter: Parameter, unit: Unit | None) -> Callable[[Any], Any]:
    if parameter.kind == "integer":
        return _integer(parameter.bits)
    if parameter.kind == "timestamp":
        return _timestamp(unit)
    if parameter.kind == "json":
        return _to_json
    if parameter.kind == "decimal":
        return _to_decimal
    return _to_text


# -- compiled: column functions over a chunk ------------------------------------------------------------------------


class Chunk(NamedTuple):
    records: Sequence[Record]
    keys: Sequence[bytes | None] | None
    """The Kafka message keys; given only to mappings that read them."""
    headers: Sequence[Headers | None] | None
    """The Kafka headers; given only to mappings that read them."""


Errors = dict[int, str]
Column = Callable[[Chunk, Errors], list[Any]]
"""A parameter's values for every record of a chunk; records whose value cannot be made are added to errors."""

_MISSING: Final = object()
_NONE: Final = type(None)


class Mapped(NamedTuple):
    records: list[Record]
    """Per record that converted, its parameters as the contract decodes them."""
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
        absent = [None] * count
        by_name = {name: column(chunk, errors) for name, column in self._columns}
        rows = zip(*(by_name.get(name, absent) for name in self.parameters), strict=True)
        names = self.parameters
        if not errors:
            return Mapped([dict(zip(names, row, strict=True)) for row in rows], list(range(count)), {})
        records, positions = [], []
        for position, row in enumerate(rows):
            if position not in errors:
                records.append(dict(zip(names, row, strict=True)))
                positions.append(position)
        return Mapped(records, positions, errors)


def identity_mapping(method: str) -> MappingSpec:
    """Every parameter from the field of the same name: how a route without a mapping reads JSON records."""
    return {name: name for name in method_parameters(method)}


def _reads(source: Any, form: type[_Form]) -> bool:
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
        values = converts[0](extracts[0](chunk, errors), errors)
        for extract, convert in zip(extracts[1:], converts[1:], strict=True):
            if None not in values:
                break
            # Later sources are read for every record but only fill the ones still unset; the errors of a
            # source that was not needed are not the record's.
            later: Errors = {}
            more = convert(extract(chunk, later), later)
            for position, value in enumerate(values):
                if value is None:
                    values[position] = more[position]
                    if position in later:
                        errors.setdefault(position, later[position])
        return values

    return column


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
    convert = _converter(parameter, unit)
    kind = parameter.kind
    # The types a column may hold that need no conversion at all.
    ready: set[type] = set()
    if kind in ("string", "json") or (kind == "integer" and parameter.bits == 64):
        ready = {str} if kind != "integer" else {int}
    elif kind == "timestamp" and unit != "iso8601":
        ready = {int}
    multiplier, divisor = _TO_MILLISECONDS.get(unit or "ms", (1, 1))

    def converting(values: list[Any], errors: Errors) -> list[Any]:
        types = set(map(type, values))
        types.discard(_NONE)
        if types <= ready:
            if kind != "timestamp" or (divisor == 1 and multiplier == 1):
                return values
            if _NONE in set(map(type, values)):
                return [None if v is None else v * multiplier // divisor for v in values]
            return [v * multiplier // divisor for v in values]
        out: list[Any] = []
        for position, value in enumerate(values):
            if value is None or value is _MISSING:
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
        values = [record.get(first) for record in chunk.records]
        for step in rest:
            values = [v.get(step) if type(v) is dict else None for v in values]
        return values

    return path


def _present(text: str) -> Column:
    """Like `_path`, with _MISSING where the record has no such field (a pack leaves it out; None stays null)."""
    first, *rest = text.split(".")

    def present(chunk: Chunk, errors: Errors) -> list[Any]:
        values = [record.get(first, _MISSING) for record in chunk.records]
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
        out: list[Any] = []
        for position, value in enumerate(path(chunk, errors)):
            if value is None:
                out.append(None)
                continue
            found = table.get(value if type(value) is str else _lookup_key(value), _MISSING)
            if found is _MISSING:
                if default is None:
                    errors.setdefault(position, f"{name} (path {single.path}): {_show(value)} is not in the lookup")
                found = default
            out.append(found)
        return out

    return looked_up


def _lookup_key(value: Any) -> str:
    try:
        return _to_text(value)
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
        packed = [
            {n: v for n, v in zip(names, row, strict=True) if v is not _MISSING} for row in zip(*columns, strict=True)
        ]
        return [p or None for p in packed]

    return pack


def _header(name: str, header: str) -> Column:
    def from_header(chunk: Chunk, errors: Errors) -> list[Any]:
        assert chunk.headers is not None
        out: list[Any] = []
        for position, headers in enumerate(chunk.headers):
            raw = None
            for key, value in headers or ():
                if key == header:
                    raw = value
            out.append(_utf8(name, f"header {header}", raw, position, errors))
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
