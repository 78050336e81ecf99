"""Each method's Post API parameters and what a mapping must make of each, read from the methods' declaration.

A mapped record holds exactly what the method's Avro contract decodes to (`bridge.postapi.methods`), so this is only the
contract's value types seen from the mapping's side: text, integers of the contract's width, timestamps in
milliseconds, decimals as unscaled bytes at scale 8, JSON text, arrays of one of those.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Literal, NamedTuple

from bridge.postapi.methods import METHODS, Amount, ArrayOf, Attributes, Integer, JsonObject, Kind, Timestamp

ValueKind = Literal["string", "integer", "timestamp", "json", "decimal", "array"]


class Parameter(NamedTuple):
    kind: ValueKind
    bits: int = 64
    """Integers: the width of the contract's Avro type (int 32, long 64)."""
    item: Parameter | None = None
    """Arrays: what each item takes."""


@cache
def method_parameters(method: str) -> Mapping[str, Parameter]:
    """The method's Post API parameters, in documented order, and what each takes; empty for an unknown method."""
    declared = METHODS.get(method)  # type: ignore[call-overload]
    if declared is None:
        return {}
    return {column.name: _parameter(column.kind) for column in declared.columns}


def _parameter(kind: Kind) -> Parameter:
    if isinstance(kind, Integer):
        return Parameter("integer", 32 if kind.avro == "int" else 64)
    if isinstance(kind, Timestamp):
        return Parameter("timestamp")
    if isinstance(kind, Amount):
        return Parameter("decimal")
    if isinstance(kind, JsonObject | Attributes):
        return Parameter("json")
    if isinstance(kind, ArrayOf):
        return Parameter("array", item=_parameter(kind.item))
    return Parameter("string")
