"""A value is uploaded exactly as its producer wrote it, or refused with a reason: never altered.

JSON numbers at and past every boundary (2^53, 2^63, 2^64, negative, fractions, exponents, huge) go through the
JSON route's transform as ids and inside `event_json`, passed through or packed; NaN and Infinity, from Avro
doubles or JSON, are refused; an empty string is absent, so a first-of list goes on to its next source.
"""

from __future__ import annotations

import csv
import io
import json
import time
from decimal import Decimal

import fastavro
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from bridge.decoding.avro import WriterSchemas
from bridge.decoding.reading import Reading
from bridge.decoding.transform import FAILED, Rules, Transformed, transform
from bridge.kafka.headers import NO_HEADERS, MessageHeaders
from bridge.mapping import MappingSpec
from bridge.postapi.rules import INT64_MAX

NOW = time.time()
NOW_MS = int(NOW * 1000)
APP = 3713842
RULES = Rules(default_application=None, keyed=None, max_future_s=3600)
PACKED: MappingSpec = TypeAdapter(MappingSpec).validate_python(
    {
        "profile_id": "pid",
        "event_name": "name",
        "event_timestamp": "ts",
        "application_id": "app",
        "event_json": {"pack": ["n", "a"]},
    }
)
BOUNDARIES = [2**53, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**19, 10**20, 99999999999999999999]
boundary_integers = st.builds(
    lambda base, delta, sign: str(sign * (base + delta)),
    st.sampled_from(BOUNDARIES),
    st.integers(-2, 2),
    st.sampled_from([1, -1]),
)
number_texts = st.one_of(
    boundary_integers,
    st.integers(min_value=-(10**45), max_value=10**45).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.from_regex(r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
)


def rows_and_failures(result: Transformed) -> tuple[list[dict[str, str]], list[tuple[str, str]]]:
    rows = []
    for group, line in zip(result.placed, result.lines, strict=True):
        if group != FAILED:
            (row,) = csv.DictReader(io.StringIO((result.groups[group][2] + line).decode(), newline=""))
            rows.append(row)
    return rows, list(result.failures.values())


def through_json_route(
    value: bytes, mapping: MappingSpec | None = None, headers: MessageHeaders = NO_HEADERS
) -> tuple[dict[str, str] | None, str]:
    """The uploaded row of one JSON value (None when refused) and the refusal's reason and detail."""
    reading = Reading.of("events", "json", mapping)
    result = transform([value], NOW, RULES, WriterSchemas(), "events", reading, None, [headers])
    rows, failures = rows_and_failures(result)
    if rows:
        return rows[0], ""
    ((reason, detail),) = failures
    return None, f"{reason}: {detail}"


@settings(max_examples=400, deadline=None)
@given(number_texts)
@example("99999999999999999999")
@example("-0")
@example("1.50")
@example("1E400")
def test_json_numbers_are_uploaded_exactly_as_written_or_refused_with_a_reason(text: str) -> None:
    event_json = f'{{"n": {text}, "a": [{text}, 1]}}'
    expected_json = f'{{"n":{text},"a":[{text},1]}}'
    common = f'"application_id": {APP}, "event_name": "e", "event_timestamp": {NOW_MS}, "event_json": {event_json}'

    # A device id is digits only: any other number is refused, with the rule named.
    row, why = through_json_route(f'{{"appmetrica_device_id": {text}, {common}}}'.encode())
    if text.isdigit():
        assert row is not None, why
        assert (row["appmetrica_device_id"], row["event_json"]) == (text, expected_json)
    else:
        assert row is None and why.startswith("invalid: appmetrica_device_id"), why

    # A profile id is any text: every number is kept as written, in the id and in the passed-through object.
    row, why = through_json_route(f'{{"profile_id": {text}, {common}}}'.encode())
    assert row is not None, why
    assert (row["profile_id"], row["event_json"]) == (text, expected_json)

    # Packed by a mapping, the same.
    value = f'{{"pid": {text}, "name": "e", "ts": {NOW_MS}, "app": {APP}, "n": {text}, "a": [{text}, 1]}}'
    row, why = through_json_route(value.encode(), PACKED)
    assert row is not None, why
    assert (row["profile_id"], row["event_json"]) == (text, expected_json)


@settings(max_examples=200, deadline=None)
@given(number_texts)
def test_a_json_number_for_an_integer_parameter_is_its_exact_value_or_refused(text: str) -> None:
    value = f'{{"profile_id": "p", "event_name": "e", "event_timestamp": {NOW_MS}, "application_id": {text}}}'
    row, why = through_json_route(value.encode())
    exact = Decimal(text)
    if row is None:
        assert why.startswith("invalid: application_id"), why
        assert not (exact == exact.to_integral_value() and 1 <= exact <= INT64_MAX), "a long that was refused"
    else:
        assert Decimal(row["application_id"]) == exact


def test_nan_and_infinity_from_json_are_refused_never_null() -> None:
    common = f'"event_name": "e", "event_timestamp": {NOW_MS}, "application_id": {APP}'
    for bad in ("NaN", "Infinity", "-Infinity"):
        row, why = through_json_route(f'{{"profile_id": "p", "event_json": {{"x": {bad}}}, {common}}}'.encode())
        assert row is None and why.startswith("invalid: event_json") and "finite" in why, (bad, why)
        row, why = through_json_route(f'{{"profile_id": {bad}, {common}}}'.encode())
        assert row is None and why.startswith("invalid: profile_id") and "finite" in why, (bad, why)


SCORED = {
    "type": "record",
    "name": "Scored",
    "fields": [
        {"name": "pid", "type": "string"},
        {"name": "score", "type": "double"},
        {"name": "ratio", "type": "float"},
        {"name": "nested", "type": {"type": "map", "values": ["null", "double"]}},
    ],
}


def test_nan_and_infinity_in_a_packed_avro_double_are_refused_and_the_neighbours_go_on() -> None:
    mapping: MappingSpec = TypeAdapter(MappingSpec).validate_python(
        {
            "profile_id": "pid",
            "event_name": {"value": "e"},
            "event_timestamp": {"value": NOW_MS},
            "application_id": {"value": APP},
            "event_json": {"pack": ["score", "ratio", "nested"]},
        }
    )
    parsed = fastavro.parse_schema(SCORED)
    cases = [
        (1.5, 0.5, {"a": None}),
        (float("nan"), 0.5, {}),
        (2.0, float("inf"), {}),
        (2.0, 0.5, {"a": float("-inf"), "b": None}),
        (-0.0, 0.25, {"a": 1e308}),
    ]
    values: list[bytes | None] = []
    for seq, (score, ratio, nested) in enumerate(cases):
        body = io.BytesIO()
        fastavro.schemaless_writer(body, parsed, {"pid": f"p{seq}", "score": score, "ratio": ratio, "nested": nested})
        values.append(b"\x00\x00\x00\x00\x01" + body.getvalue())
    reading = Reading.of("events", "avro", mapping)
    schemas = WriterSchemas(by_id={1: json.dumps(SCORED)})
    result = transform(values, NOW, RULES, schemas, "events", reading, None, None)
    rows, _ = rows_and_failures(result)
    assert {row["profile_id"]: json.loads(row["event_json"]) for row in rows} == {
        "p0": {"score": 1.5, "ratio": 0.5, "nested": {"a": None}},
        "p4": {"score": -0.0, "ratio": 0.25, "nested": {"a": 1e308}},
    }
    assert sorted(result.failures) == [1, 2, 3]
    for reason, detail in result.failures.values():
        assert reason == "invalid" and detail.startswith("event_json (pack)") and "not a finite number" in detail


def test_an_empty_string_is_absent_so_a_first_of_list_takes_the_next_source() -> None:
    first_of: MappingSpec = TypeAdapter(MappingSpec).validate_python(
        {
            "profile_id": ["uid", "pid"],
            "event_name": {"value": "e"},
            "event_timestamp": {"value": NOW_MS},
            "application_id": ["app", {"value": APP}],
            "app_version_name": ["client.version", "client.build"],
            "os_version": [{"header": "os"}, "os"],
        }
    )
    record = {"uid": "", "pid": "p", "app": "", "client": {"version": "", "build": "b7"}, "os": "17.5"}
    row, why = through_json_route(json.dumps(record).encode(), first_of, MessageHeaders(((b"os", b""),)))
    assert row is not None, why
    assert {k: row[k] for k in ("profile_id", "application_id", "app_version_name", "os_version")} == {
        "profile_id": "p",
        "application_id": str(APP),
        "app_version_name": "b7",
        "os_version": "17.5",
    }
