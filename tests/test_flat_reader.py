"""The flat reader is a shortcut to fastavro's answer: whatever it reads, fastavro reads the same; what it cannot
read exactly, it leaves to fastavro.

Held to fastavro over generated schemas (records of primitives and unions of primitives), generated records, and
bytes Kafka may hold instead: truncated, extended, overwritten, or any bytes at all.
"""

from __future__ import annotations

import io
import json
import math
import struct
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.decoding.avro import DecodeError, Readers, WriterSchemas, contract_schema, parse
from bridge.decoding.flat_reader import compile_reader, compile_values_reader
from bridge.postapi.methods import METHODS
from devtools.testkit.records import event, wire

LONGS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(min_value=-(2**31), max_value=2**31 - 1),
    "long": LONGS,
    "float": st.floats(width=32),
    "double": st.floats(),
    "bytes": st.binary(max_size=300),
    "string": st.text(max_size=300),
}
PRIMITIVES = sorted(VALUES)


ITEMS = [kind for kind in PRIMITIVES if kind != "null"]
"""What an array the flat reader reads may hold."""


@st.composite
def value_types(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 3)) == 0:
        return {"type": "array", "items": draw(st.sampled_from(ITEMS))}
    return draw(st.sampled_from(PRIMITIVES))


@st.composite
def field_types(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return draw(value_types())
    # A union holds each primitive once and one array at most.
    primitives = draw(st.lists(st.sampled_from(PRIMITIVES), max_size=4, unique=True))
    arrays = draw(st.lists(st.sampled_from(ITEMS).map(lambda items: {"type": "array", "items": items}), max_size=1))
    branches = draw(st.permutations([*primitives, *arrays]))
    return branches or ["null"]


def values_of(kind: Any) -> st.SearchStrategy[Any]:
    if isinstance(kind, dict):
        return st.lists(VALUES[kind["items"]], max_size=5)
    return VALUES[kind]


@st.composite
def schemas(draw: st.DrawFn) -> dict[str, Any]:
    types = draw(st.lists(field_types(), max_size=12))
    return {"type": "record", "name": "R", "fields": [{"name": f"f{i}", "type": t} for i, t in enumerate(types)]}


@st.composite
def schema_and_record(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    schema = draw(schemas())
    record = {}
    for field in schema["fields"]:
        kind = field["type"]
        record[field["name"]] = draw(values_of(draw(st.sampled_from(kind)) if isinstance(kind, list) else kind))
    return schema, record


def encoded(schema: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def fastavro_reads(parsed: Any, value: bytes, start: int) -> Any:
    """fastavro's record for the whole value from `start`, or the exception it raises (or leftover bytes)."""
    payload = io.BytesIO(value)
    payload.seek(start)
    try:
        record = fastavro.schemaless_reader(payload, parsed, None)
    except Exception as exc:
        return exc
    return record if payload.tell() == len(value) else ValueError("bytes left over")


def same(left: Any, right: Any) -> bool:
    """Equal, a NaN equal to itself and a float compared bit for bit."""
    if isinstance(left, dict) and isinstance(right, dict):
        return list(left) == list(right) and all(same(left[key], right[key]) for key in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(same, left, right))
    if isinstance(left, float) and isinstance(right, float):
        return (math.isnan(left) and math.isnan(right)) or struct.pack("<d", left) == struct.pack("<d", right)
    return type(left) is type(right) and left == right


@given(schema_and_record(), st.binary(max_size=6))
def test_every_record_reads_as_fastavro_reads_it(case: tuple[dict[str, Any], dict[str, Any]], prefix: bytes) -> None:
    schema, record = case
    parsed = fastavro.parse_schema(schema)
    read = compile_reader(parsed)
    assert read is not None
    value = prefix + encoded(schema, record)
    got = read(value, len(prefix))
    assert got is not None
    assert same(got, fastavro_reads(parsed, value, len(prefix)))
    values = compile_values_reader(parsed)
    assert values is not None
    assert same(dict(zip(got, values(value, len(prefix)) or (), strict=True)), got)


def mutations(value: bytes) -> st.SearchStrategy[bytes]:
    at = st.integers(min_value=0, max_value=max(len(value) - 1, 0))
    return st.one_of(
        at.map(lambda i: value[:i]),
        st.binary(min_size=1, max_size=12).map(lambda tail: value + tail),
        st.tuples(at, st.integers(0, 255)).map(lambda c: value[: c[0]] + bytes([c[1]]) + value[c[0] + 1 :]),
        st.tuples(at, st.binary(min_size=1, max_size=11)).map(lambda c: value[: c[0]] + c[1] + value[c[0] :]),
        st.tuples(at, st.sampled_from([b"\x01", b"\x03", b"\x7f", b"\xff" * 10 + b"\x01", b"\x80" * 9 + b"\x02"])).map(
            lambda c: value[: c[0]] + c[1] + value[c[0] + 1 :]
        ),
        st.binary(max_size=64),
    )


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_bytes_it_reads_are_bytes_fastavro_reads_alike(data: st.DataObject) -> None:
    schema, record = data.draw(schema_and_record())
    parsed = fastavro.parse_schema(schema)
    read = compile_reader(parsed)
    assert read is not None
    value = data.draw(mutations(encoded(schema, record)))
    got = read(value, 0)
    if got is not None:
        assert same(got, fastavro_reads(parsed, value, 0)), (value, got)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"\x03", "a negative length"),
        (b"\x0a" + b"abc", "a string longer than the value"),
        (b"\x04\xff\xfe", "text that is not UTF-8"),
        (b"\x80" * 10 + b"\x00", "a varint past ten bytes"),
        (b"\x00\x00", "a byte left over"),
        (b"", "nothing at all"),
    ],
)
def test_what_it_cannot_read_exactly_is_left_to_fastavro(value: bytes, why: str) -> None:
    read = compile_reader({"type": "record", "name": "R", "fields": [{"name": "s", "type": "string"}]})
    assert read is not None
    assert read(value, 0) is None, why


def test_any_boolean_byte_but_zero_is_true_as_fastavro_reads_it() -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "f", "type": "boolean"}]}
    read = compile_reader(schema)
    assert read is not None
    for byte in (b"\x00", b"\x01", b"\x02", b"\xff"):
        assert read(byte, 0) == fastavro_reads(fastavro.parse_schema(schema), byte, 0)


def test_a_negative_length_never_reads_backwards() -> None:
    """-2 as the first string's length would step back onto the last byte, and a second string read from there
    would end exactly with the value: a record fastavro refuses."""
    read = compile_reader(
        {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": "string"}]}
    )
    assert read is not None
    assert read(b"\x03A\x06", 0) is None


def test_a_union_index_past_its_branches_is_left_to_fastavro() -> None:
    read = compile_reader({"type": "record", "name": "R", "fields": [{"name": "u", "type": ["null", "long"]}]})
    assert read is not None
    assert read(b"\x02\x04", 0) == {"u": 2}
    for index in (b"\x04", b"\x01", b"\x80\x01"):
        assert read(index + b"\x04", 0) is None


@pytest.mark.parametrize(
    "kind",
    [
        {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "long"}]},
        {"type": "array", "items": {"type": "array", "items": "long"}},
        {"type": "array", "items": "null"},
        {"type": "array", "items": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}},
        {"type": "map", "values": "string"},
        {"type": "enum", "name": "E", "symbols": ["A"]},
        {"type": "fixed", "name": "F", "size": 2},
        {"type": "long", "logicalType": "timestamp-millis"},
        ["null", {"type": "map", "values": "long"}],
        [],
    ],
    ids=[
        "record",
        "array of arrays",
        "array of nulls",
        "array of a logical type",
        "map",
        "enum",
        "fixed",
        "logical type",
        "union of a map",
        "empty union",
    ],
)
def test_anything_but_flat_primitives_is_read_by_fastavro_alone(kind: Any) -> None:
    assert compile_reader({"type": "record", "name": "R", "fields": [{"name": "x", "type": kind}]}) is None


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"\x03\x02\x02\x00", "a negative count: a block with its size in bytes"),
        (b"\x14\x02\x00", "a count past the bytes left"),
        (b"\x02\x02", "no end of the array"),
    ],
)
def test_arrays_it_cannot_read_exactly_are_left_to_fastavro(value: bytes, why: str) -> None:
    read = compile_reader(
        {"type": "record", "name": "R", "fields": [{"name": "a", "type": {"type": "array", "items": "long"}}]}
    )
    assert read is not None
    assert read(b"\x04\x02\x04\x02\x06\x00", 0) == {"a": [1, 2, 3]}, "two blocks, then the end"
    assert read(value, 0) is None, why


def test_a_schema_of_thousands_of_fields_is_left_to_fastavro_rather_than_compiled() -> None:
    union = ["null", "string", {"type": "array", "items": "long"}]
    fields = [{"name": f"f{i}", "type": union} for i in range(5_000)]
    assert compile_reader({"type": "record", "name": "R", "fields": fields}) is None
    assert compile_reader({"type": "record", "name": "R", "fields": fields[:100]}) is not None


def test_a_java_producers_string_annotation_still_reads_flat() -> None:
    schema = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "s", "type": {"type": "string", "avro.java.string": "String"}}],
    }
    read = compile_reader(fastavro.parse_schema(schema))
    assert read is not None
    assert read(b"\x04hi", 0) == {"s": "hi"}


def test_a_field_named_like_code_is_only_a_name() -> None:
    name = "x'}; import os; {'y"
    schema = {"type": "record", "name": "R", "fields": [{"name": name, "type": "long"}]}
    read = compile_reader(schema)
    assert read is not None
    assert read(b"\x02", 0) == {name: 1}


def test_the_contract_decodes_flat_and_poison_keeps_fastavros_reason() -> None:
    """Through the decoder the transforms use: contract events decode as before, and values the shortcut leaves
    to fastavro fail with the reasons operators already see in the dead-letter topic."""
    decode = Readers().decoder(WriterSchemas(by_id={7: json.dumps(contract_schema())}), "events")
    record = event(3)
    value = wire(7, record)
    assert decode(value) == fastavro_reads(parse(contract_schema()), value, 5)
    with pytest.raises(DecodeError, match="1 bytes left after the record"):
        decode(value + b"\x00")
    with pytest.raises(DecodeError, match="not a valid Avro record for its schema: EOFError"):
        decode(value[:-3])


def test_every_contract_lists_its_fields_in_the_order_of_its_methods_parameters() -> None:
    """The transform takes a contract record's values, in field order, as the method's columns."""
    for name, method in METHODS.items():
        assert [field["name"] for field in contract_schema(name)["fields"]] == list(method.names), name


def test_values_come_in_the_contracts_order_whatever_the_writers_order() -> None:
    contract = contract_schema()
    writer = {**contract, "fields": [*reversed(contract["fields"]), {"name": "extra", "type": "long", "default": 0}]}
    schemas = WriterSchemas(by_id={3: json.dumps(writer)})
    record = event(8)
    value = wire(3, {**record, "extra": 5}, writer)
    read = Readers()
    as_record = read.decoder(schemas, "events")(value)
    assert list(as_record) != [field["name"] for field in contract["fields"]], "fastavro keeps the writer's order"
    assert read.values_decoder(schemas, "events")(value) == tuple(as_record[name] for name in METHODS["events"].names)
