"""Each method's Post API parameters and what each one takes, as a mapping must produce them.

Read from the method's Avro contract, so a mapped record holds exactly what a contract record decodes to.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any, Final, Literal, NamedTuple

from bridge.avro import contract_schema
from bridge.postapi import EVENT_COLUMNS

Kind = Literal["string", "integer", "timestamp", "json", "decimal"]

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
