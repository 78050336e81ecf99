"""A reader for flat Avro records, compiled once per writer schema: the fast path of decoding.

fastavro reads each value through a file object and dispatches on the schema field by field, one Python call per
byte of every varint: about 14 µs for a 24-field contract event, most of a transform's time. No maintained library
reads faster from Python (the README's Performance section names those tried), so this module writes, for a writer
schema that is a record of primitive fields, arrays of primitives and unions of those (every contract once logical
types are dropped, and many producers' own records), the straight-line code that reads it from the bytes
themselves, in about a third of fastavro's time.

It is only ever a shortcut to fastavro's answer. The caller tries it first; whenever it answers None (anything it
does not read exactly as fastavro would: a value too short or too long, a negative length, a union index past one
byte, a varint past 64 bits, text that is not UTF-8, an array block counted negative), the caller reads the value
with fastavro, which then gives the record or the error. Schemas it does not take (nested records, arrays of
anything but primitives, maps, enums, fixed, logical types kept) compile to None and always use fastavro.
tests/test_flat_reader.py holds it to fastavro's answers over generated schemas and bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final, NamedTuple

FlatRead = Callable[[bytes, int], dict[str, Any] | None]
"""Reads the record that starts at an offset of the value and ends with it; None when fastavro must read it."""
FlatValuesRead = Callable[[bytes, int], tuple[Any, ...] | None]
"""The same, giving the record's values alone, in its fields' order: what a column-wise stage takes."""

_PRIMITIVES: Final = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


def compile_reader(schema: Any) -> FlatRead | None:
    """The reader for `schema` (a writer schema as JSON data, or as fastavro parsed it), or None when it is not a
    record of primitive fields, arrays of primitives and unions of those."""
    read: FlatRead | None = _compile(schema, values=False)
    return read


def compile_values_reader(schema: Any) -> FlatValuesRead | None:
    """The same reader giving tuples of the values, in the fields' order."""
    read: FlatValuesRead | None = _compile(schema, values=True)
    return read


def _compile(schema: Any, values: bool) -> Any:
    if not (isinstance(schema, dict) and schema.get("type") == "record" and isinstance(schema.get("fields"), list)):
        return None
    kinds: list[_Value | list[_Value]] = []
    names: list[str] = []
    for field in schema["fields"]:
        name = field.get("name") if isinstance(field, dict) else None
        kind = _kind(field.get("type")) if isinstance(name, str) else None
        if kind is None or not isinstance(name, str) or name in names:
            return None
        names.append(name)
        kinds.append(kind)
    body: list[str] = ["pass"]
    for index, branches in enumerate(kinds):
        if not isinstance(branches, list):
            body += _read_one(branches, f"v{index}", "")
            continue
        # A union's index in one byte: zigzag 0, 2, 4... for branches 0, 1, 2...; anything else is left to fastavro.
        body.append("u = b[at]; at += 1")
        for position, kind in enumerate(branches):
            body.append(f"{'if' if position == 0 else 'elif'} u == {2 * position}:")
            body += _read_one(kind, f"v{index}", "    ")
        body.append("else: raise ValueError")
    if len(body) > MAX_LINES:
        return None
    # A tuple needs a trailing comma when it has one value; a record of no fields is the empty tuple.
    cells = ", ".join(f"v{index}" for index in range(len(names))) + ("," if len(names) == 1 else "")
    made = f"({cells})" if values else "{" + ", ".join(f"{name!r}: v{index}" for index, name in enumerate(names)) + "}"
    source = "\n".join(
        [
            "def read(b, at):",
            "    try:",
            *(f"        {line}" for line in body),
            "    except Exception:",
            "        return None",
            f"    return {made} if at == len(b) else None",
        ]
    )
    scope: dict[str, Any] = {"unpack_float": _FLOAT.unpack_from, "unpack_double": _DOUBLE.unpack_from}
    # Generated rather than interpreted: a loop over the fields costs more than the reading itself.
    exec(compile(source, f"<flat reader of {schema.get('name')!r}>", "exec"), scope)
    return scope["read"]


MAX_LINES: Final = 20_000
"""The most lines a reader is generated with: Python compiles about 20,000 lines a second, once per schema in each
worker, so a schema of thousands of fields is read by fastavro instead of stalling a worker while it compiles. A
contract takes 500 to 1,500."""

_FLOAT: Final = struct.Struct("<f")
_DOUBLE: Final = struct.Struct("<d")


class _Array(NamedTuple):
    items: str
    """A primitive, never null: each item takes a byte at least, which bounds a block's count by the bytes left."""


_Value = str | _Array
"""A primitive's name, or an array of a primitive."""


def _kind(kind: Any) -> _Value | list[_Value] | None:
    """A value's kind, a union's branches (each a value's kind), or None."""
    if not isinstance(kind, list):
        return _value(kind)
    branches = [_value(branch) for branch in kind]
    plain = [branch for branch in branches if branch is not None]
    return plain if plain and len(plain) == len(branches) else None


def _value(kind: Any) -> _Value | None:
    if isinstance(kind, dict) and kind.get("type") == "array":
        items = _primitive(kind.get("items"))
        return None if items in (None, "null") else _Array(items)
    return _primitive(kind)


def _primitive(kind: Any) -> str | None:
    if isinstance(kind, dict) and "logicalType" not in kind:
        kind = kind.get("type")
    return kind if isinstance(kind, str) and kind in _PRIMITIVES else None


def _varint(target: str, indent: str) -> list[str]:
    # At most ten bytes, the tenth at most 1: 64 bits, where fastavro's reader stops being exact.
    return [
        f"{indent}x = b[at]; at += 1",
        f"{indent}if x & 0x80:",
        f"{indent}    x &= 0x7F; shift = 7",
        f"{indent}    while True:",
        f"{indent}        c = b[at]; at += 1",
        f"{indent}        if shift == 63 and c > 1: raise ValueError",
        f"{indent}        x |= (c & 0x7F) << shift",
        f"{indent}        if c < 0x80: break",
        f"{indent}        shift += 7",
        f"{indent}{target} = (x >> 1) ^ -(x & 1)",
    ]


def _read_one(kind: _Value, target: str, indent: str) -> list[str]:
    """Reads one value of a kind. Reading past the end either raises or leaves `at` past it, which the caller's
    check of where the record ends rejects; only a negative length could move `at` back."""
    if isinstance(kind, _Array):
        # Blocks of items until a count of 0. A negative count (a block with its size in bytes) is left to fastavro.
        return [
            *_varint("k", indent),
            f"{indent}{target} = []",
            f"{indent}while k:",
            f"{indent}    if k < 0 or k > len(b): raise ValueError",
            f"{indent}    for _ in range(k):",
            *_read_one(kind.items, "item", indent + "        "),
            f"{indent}        {target}.append(item)",
            *_varint("k", indent + "    "),
        ]
    if kind == "null":
        return [f"{indent}{target} = None"]
    if kind == "boolean":
        return [f"{indent}{target} = b[at] != 0; at += 1"]
    if kind in ("int", "long"):
        return _varint(target, indent)
    if kind in ("float", "double"):
        return [f"{indent}({target},) = unpack_{kind}(b, at); at += {4 if kind == 'float' else 8}"]
    text = ".decode()" if kind == "string" else ""
    return [
        f"{indent}n = b[at]; at += 1",
        f"{indent}if n & 0x81:",
        f"{indent}    at -= 1",
        *_varint("n", indent + "    "),
        f"{indent}    if n < 0: raise ValueError",
        f"{indent}else:",
        f"{indent}    n >>= 1",
        f"{indent}end = at + n",
        f"{indent}{target} = b[at:end]{text}; at = end",
    ]
