"""A record is judged alone: whatever one record's bytes or field values do, it is a row or a named failure, and
its neighbours in the chunk go on (issue 10)."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from bridge.decoding.avro import WriterSchemas, contract_schema
from bridge.decoding.transform import FAILED, Rules, Transformed, transform
from bridge.postapi import csv_body as csvbody
from bridge.postapi.methods import EVENTS, Method, Window
from bridge.sandbox.intake import read_csv_batch
from devtools.testkit.records import event, wire

NOW = time.time()
EVENT_COLUMNS = EVENTS.names
NOW_MS = int(NOW * 1000)
SCHEMA_ID = 3
WIRE = WriterSchemas(by_id={SCHEMA_ID: json.dumps(contract_schema())})
RULES = Rules(default_application=1111, keyed=None, max_future_s=3600)
DEEP_JSON = '{"a":' * 5000 + "1" + "}" * 5000
LONGS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INTS = st.integers(min_value=-(2**31), max_value=2**31 - 1)
HOSTILE_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
    st.sampled_from(["\x00", "a\x00b", "\r", "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029", '"', ",", "\ufeff", " "]),
)
HOSTILE_JSON = st.one_of(
    HOSTILE_TEXT,
    st.integers(1, 20_000).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
    st.integers(1, 20_000).map(lambda depth: '{"a":' + "[" * depth + "]" * depth + "}"),
    st.sampled_from(['{"a": NaN}', '{"a": Infinity}', '{"a":"\x01"}', "{}", '{"a":1}{}', '{"a":1e999999}']),
    st.just(json.dumps({"big": "x" * 2_000_000})),
)


def _is_row_or_named_failure(result: Transformed, count: int) -> None:
    assert len(result.placed) == len(result.lines) == count
    for index, group in enumerate(result.placed):
        if group == FAILED:
            reason, detail = result.failures[index]
            assert reason in {"decode", "schema", "invalid", "expired"} and detail
        else:
            assert result.lines[index].endswith(b"\r\n") and index not in result.failures


def _good(seq: int) -> bytes:
    return wire(SCHEMA_ID, event(seq, NOW_MS))


def test_json_nested_thousands_deep_is_invalid_and_its_neighbours_are_rows() -> None:
    values = [_good(1), wire(SCHEMA_ID, event(2, NOW_MS, event_json=DEEP_JSON)), _good(3)]
    result = transform(values, NOW, RULES, WIRE, "events")
    assert list(result.placed) == [0, FAILED, 0]
    assert result.failures[1] == (
        "invalid",
        "event_json is nested too deeply to be read (more levels than the recursion limit allows)",
    )


def test_the_sandbox_refuses_deep_json_by_the_same_rule() -> None:
    params = {"application_id": "1", "profile_id": "u", "event_name": "e", "event_timestamp": str(int(NOW))}
    violation = EVENTS.verdict({**params, "event_json": DEEP_JSON}, Window(NOW))
    assert violation is not None and "nested too deeply" in violation.detail


def test_an_exception_no_rule_foresaw_fails_only_its_own_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug a record's content triggers in the row maker fails that record, named, not the chunk."""
    verdict = Method.verdict

    def broken(self: Method, params: Mapping[str, str], window: Window) -> Any:
        if params.get("event_name") == "trips a bug":
            raise KeyError("something nobody thought of")
        return verdict(self, params, window)

    monkeypatch.setattr(Method, "verdict", broken)
    values = [_good(seq) for seq in range(1000)]
    values[500] = wire(SCHEMA_ID, event(500, NOW_MS, event_name="trips a bug", session_type="sideways"))
    result = transform(values, NOW, RULES, WIRE, "events")
    assert [i for i, g in enumerate(result.placed) if g == FAILED] == [500]
    assert result.failures[500] == ("invalid", "KeyError while making its row: 'something nobody thought of'")
    assert {app for _, app, _ in result.groups} == {1111, 4242}


@st.composite
def hostile_records(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {name: None for name in EVENT_COLUMNS}
    for name in EVENT_COLUMNS:
        if name in ("application_id", "event_timestamp"):
            strategy: st.SearchStrategy[Any] = LONGS
        elif name in ("mcc", "mnc"):
            strategy = INTS
        elif name == "event_json":
            strategy = HOSTILE_JSON
        else:
            strategy = HOSTILE_TEXT
        if name in ("event_name", "event_timestamp"):
            record[name] = draw(st.one_of(st.just(NOW_MS), strategy) if name == "event_timestamp" else strategy)
        else:
            record[name] = draw(st.none() | strategy)
    return record


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(hostile_records(), min_size=1, max_size=6))
def test_valid_avro_with_hostile_field_values_is_a_row_or_a_named_failure(records: list[dict[str, Any]]) -> None:
    values = [_good(0), *(wire(SCHEMA_ID, record) for record in records), _good(1)]
    result = transform(values, NOW, RULES, WIRE, "events")
    _is_row_or_named_failure(result, len(values))
    assert result.placed[0] != FAILED and result.placed[-1] != FAILED, "the valid neighbours are rows"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=80).map(lambda b: struct.pack(">bI", 0, SCHEMA_ID) + b) | st.binary(), max_size=8))
def test_hostile_bytes_are_a_row_or_a_named_failure(values: list[bytes]) -> None:
    chunk = [_good(0), *values, _good(1)]
    result = transform(chunk, NOW, RULES, WIRE, "events")
    _is_row_or_named_failure(result, len(chunk))
    assert result.placed[0] != FAILED and result.placed[-1] != FAILED


@settings(max_examples=200, deadline=None)
@given(HOSTILE_TEXT.filter(bool))
def test_the_sandbox_reads_every_cell_the_bridge_encodes_as_it_was(text: str) -> None:
    """Control characters, NUL and Unicode line separators go through the CSV body unchanged."""
    cells = {"application_id": "1", "profile_id": text, "event_name": text, "event_timestamp": str(int(NOW))}
    used, lines = csvbody.lines([[cells.get(name, "")] for name in EVENT_COLUMNS])
    (read,) = read_csv_batch(
        EVENTS, MultiDict(application_id="1"), csvbody.header(EVENTS.names, used) + lines[0]
    ).events()
    assert read == cells


def test_the_sandbox_reads_a_cell_as_large_as_the_bridge_sends() -> None:
    """A 600 KB event_json is a valid event: the Post API documents no cell limit, so the sandbox has none either."""
    text = json.dumps({"pad": "x" * 600_000})
    cells = {"application_id": "1", "profile_id": "u", "event_name": "e", "event_timestamp": str(int(NOW))}
    cells["event_json"] = text
    used, lines = csvbody.lines([[cells.get(name, "")] for name in EVENT_COLUMNS])
    (read,) = read_csv_batch(
        EVENTS, MultiDict(application_id="1"), csvbody.header(EVENTS.names, used) + lines[0]
    ).events()
    assert read["event_json"] == text
