"""JSON record values read so that every number keeps the exact text its producer wrote.

orjson, the fast reader, turns integers past 64 bits into floats (`99999999999999999999` becomes `1e+20`), reads
`1.50` and `1E3` as floats whose text differs, `-0` as `0`, and refuses numbers past a double's range and `NaN`.
A value whose reading holds no float and no `-0` keeps orjson's reading; any other is read by the standard
library's decoder, which hands each such number's text to `JsonNumber`. NaN and Infinity are read as the floats
they name, which every conversion refuses.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import orjson

_loads: Final = orjson.loads
_NEGATIVE_ZERO: Final = re.compile(rb"[:\[,]\s*-0(?![0-9.eE])")
_CONTAINERS: Final = (dict, list)


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


def loads(value: bytes | memoryview) -> Any:
    """One JSON text, numbers exact; raises orjson.JSONDecodeError (a ValueError) for what is not JSON."""
    try:
        parsed = _loads(value)
    except orjson.JSONDecodeError as refused:
        # Numbers past a double's range and NaN are JSON to some producers; anything else orjson refuses stays
        # refused, so the slower reader must also agree that the value holds no lone surrogate.
        try:
            exact = _exact(value)
            orjson.dumps(exact, default=fragment)
        except (ValueError, TypeError, RecursionError):
            raise refused from None
        return exact
    if _holds_float(parsed) or (b"-0" in value and _NEGATIVE_ZERO.search(value) is not None):
        return _exact(value)
    return parsed


def _holds_float(parsed: Any) -> bool:
    """Whether orjson read any number of `parsed` as a float: a type check per container, in C, and a Python step
    only into nested containers. (A scan of the text costs more, and grows with every long string.)"""
    if type(parsed) not in _CONTAINERS:
        return type(parsed) is float
    pending = [parsed]
    while pending:
        node = pending.pop()
        values = node.values() if type(node) is dict else node
        types = set(map(type, values))
        if float in types:
            return True
        if dict in types or list in types:
            pending += [item for item in values if type(item) in _CONTAINERS]
    return False


def _exact(value: bytes | memoryview) -> Any:
    return _EXACT.decode(bytes(value).decode())
