"""JSON record values read so that every number keeps the exact text its producer wrote.

orjson, the fast reader, turns integers past 64 bits into floats (`99999999999999999999` becomes `1e+20`), reads
`1.50` and `1E3` as floats whose text differs, `-0` as `0`, and refuses numbers past a double's range and `NaN`.
A value whose reading holds no float and no `-0` keeps orjson's reading; any other is read again by the standard
library's decoder, which hands each such number's text to `JsonNumber`. NaN and Infinity are read as the floats
they name, which every conversion refuses. Floats are looked for a chunk of readings at a time (`inexact`), level
by level with C-level passes: a walk of each reading alone cost half as much again as orjson itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from itertools import chain, compress, repeat
from operator import is_
from typing import Any, Final

import orjson

_loads: Final = orjson.loads
_NEGATIVE_ZERO: Final = re.compile(rb"[:\[,]\s*-0(?![0-9.eE])")
_DICTS: Final = frozenset({dict})


class JsonNumber:
    """A JSON number exactly as written, where neither a Python int nor a float gives the same text back."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return type(other) is JsonNumber and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def _integer(text: str) -> int | JsonNumber:
    # Below 19 digits an int prints back as written, except for `-0`.
    return int(text) if len(text) < 19 and text != "-0" else JsonNumber(text)


_EXACT: Final = json.JSONDecoder(parse_float=JsonNumber, parse_int=_integer)


def fragment(value: Any) -> orjson.Fragment:
    """orjson's `default` for a `JsonNumber`: its text, written as it is."""
    if type(value) is JsonNumber:
        return orjson.Fragment(value.text)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def loads(value: bytes) -> Any:
    """One JSON text, numbers exact; raises orjson.JSONDecodeError (a ValueError) for what is not JSON."""
    try:
        parsed = _loads(value)
    except orjson.JSONDecodeError as refused:
        # Numbers past a double's range and NaN are JSON to some producers; anything else orjson refuses stays
        # refused, so the slower reader must also agree that the value holds no lone surrogate.
        try:
            read = exact(value)
            orjson.dumps(read, default=fragment)
        except (ValueError, TypeError, RecursionError):
            raise refused from None
        return read
    if b"-0" in value and _NEGATIVE_ZERO.search(value) is not None:
        return exact(value)
    return parsed


def inexact(readings: Sequence[Any]) -> list[int]:
    """The positions of the `loads` readings that hold a float, whose numbers `exact` must read again."""
    if not _hold_float(readings):
        return []
    return [position for position, reading in enumerate(readings) if _hold_float([reading])]


def _hold_float(nodes: Sequence[Any]) -> bool:
    """Whether any of `nodes`, or anything in them, is a float: one pass over each level of all of them."""
    level: Sequence[Any] = nodes
    while level:
        types = set(map(type, level))
        if float in types:
            return True
        if dict not in types and list not in types:
            return False
        if types == _DICTS:
            dicts, lists = level, []
        else:
            dicts = list(compress(level, map(is_, map(type, level), repeat(dict))))
            lists = list(compress(level, map(is_, map(type, level), repeat(list)))) if list in types else []
        level = list(chain(chain.from_iterable(map(dict.values, dicts)), chain.from_iterable(lists)))
    return False


def exact(value: bytes) -> Any:
    """One JSON text read with each number that no int prints back as written kept as a `JsonNumber`."""
    return _EXACT.decode(value.decode())
