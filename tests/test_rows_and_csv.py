"""Records to rows and rows to CSV bodies: rules checked before upload, every cell round-trips exactly."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.postapi import csv_body as csvbody
from bridge.postapi.methods import EVENTS, Window
from bridge.postapi.rows import Row, RowMaker
from bridge.postapi.rules import Violation
from bridge.runtime.batching import Batcher, BatchKey
from bridge.runtime.ledger import Held, PartitionOffsets

NOW = time.time()
EVENT_COLUMNS = EVENTS.names


def record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {name: None for name in EVENT_COLUMNS}
    base.update(event_name="level_up", event_timestamp=int(NOW * 1000) - 5000, profile_id="user-1")
    base.update(fields)
    return base


def maker(default: int | None = 1111, keyed: frozenset[int] = frozenset({1111, 2222})) -> RowMaker:
    return RowMaker(EVENTS, default, keyed.__contains__, max_future_s=3600)


def test_timestamp_millis_become_seconds_and_default_application_fills_in() -> None:
    row = maker().make(record(event_timestamp=1_700_000_000_999), NOW)
    assert isinstance(row, Violation)  # 2023 is more than 14 days ago
    assert row.reason == "expired"
    millis = int(NOW * 1000) - 1
    row = maker().make(record(event_timestamp=millis), NOW)
    assert isinstance(row, Row)
    assert row.application_id == 1111
    values = dict(zip(EVENT_COLUMNS, row.values, strict=True))
    assert values["event_timestamp"] == str(millis // 1000)
    assert values["application_id"] == "1111"


@pytest.mark.parametrize(
    ("fields", "reason", "words"),
    [
        ({"appmetrica_device_id": "123"}, "invalid", "both profile_id and appmetrica_device_id"),
        ({"profile_id": None}, "invalid", "neither profile_id nor appmetrica_device_id"),
        ({"event_json": "{not json"}, "invalid", "event_json is not valid JSON"),
        ({"session_type": "sometimes"}, "invalid", "session_type"),
        ({"event_timestamp": int(NOW * 1000) + 7200_000}, "invalid", "in the future"),
        ({"application_id": 3333}, "invalid", "no Post API key is configured for application 3333"),
        ({"event_name": ""}, "invalid", "event_name is missing"),
    ],
)
def test_rule_breaking_records_never_become_rows(fields: dict[str, Any], reason: str, words: str) -> None:
    row = maker().make(record(**fields), NOW)
    assert isinstance(row, Violation)
    assert row.reason == reason
    assert words in row.detail


def test_without_a_default_application_a_record_must_carry_one() -> None:
    row = RowMaker(EVENTS, None, lambda _: True, 3600).make(record(), NOW)
    assert isinstance(row, Violation)
    assert "post_api.application_id is not set" in row.detail


def test_csv_round_trips_quotes_commas_newlines_and_non_ascii() -> None:
    tricky = ['a "quoted", value', "line one\nline two\r\nthree", "Привет, мир 🎮", '{"k": "v, \\"x\\""}']
    records = [record(event_name=text, event_json=f'{{"i": {i}, "s": "{text[:1]}"}}') for i, text in enumerate(tricky)]
    table = maker().table(records, NOW)
    assert not table.violations
    used, lines = csvbody.lines(table.columns)
    body = csvbody.header(EVENTS.names, used) + b"".join(lines)
    parsed = list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))
    assert [p["event_name"] for p in parsed] == tricky
    assert [p["event_json"] for p in parsed] == [r["event_json"] for r in records]
    reference = io.StringIO(newline="")
    csv.writer(reference, lineterminator="\r\n").writerows(zip(*(table.columns[i] for i in used), strict=True))
    assert b"".join(lines) == reference.getvalue().encode(), "quoted as the csv module quotes: only where needed"
    header = body.split(b"\r\n", 1)[0].decode()
    assert header == "application_id,profile_id,event_name,event_timestamp,event_json", "only columns in use"


def test_batches_cut_at_max_rows_max_bytes_and_linger() -> None:
    clock = [100.0]
    batcher = Batcher(max_rows=3, max_bytes=10_000, linger_s=1.0, clock=lambda: clock[0], wall=lambda: 0.0)
    state = PartitionOffsets("t", 0)
    made: BatchKey = ("events", 1111, b"application_id,event_name\r\n")
    other: BatchKey = ("events", 2222, b"application_id,event_name\r\n")
    narrower: BatchKey = ("events", 1111, b"application_id\r\n")
    revenue: BatchKey = ("revenue", 1111, b"application_id,event_name\r\n")
    line = b"x" * 48 + b"\r\n"
    cut = [batcher.add(made, line, Held(state, i, None, b"x" * 50)) for i in range(3)]
    assert cut[:2] == [None, None]
    assert cut[2] is not None and len(cut[2].lines) == 3
    assert batcher.add(other, line, Held(state, 9, None, b"x")) is None, "applications never share a batch"
    assert batcher.add(made, line, Held(state, 10, None, b"x")) is None
    assert batcher.add(narrower, line, Held(state, 11, None, b"x")) is None, "nor do lines of other columns"
    assert batcher.add(revenue, line, Held(state, 12, None, b"x")) is None, "nor of other methods"
    clock[0] += 0.5
    assert batcher.expired() == []
    clock[0] += 0.6
    expired = batcher.expired()
    assert sorted((b.method, b.application_id) for b in expired) == [
        ("events", 1111),
        ("events", 1111),
        ("events", 2222),
        ("revenue", 1111),
    ]
    assert all(b.body() == b.header + line * len(b.lines) for b in expired)

    small = Batcher(max_rows=100, max_bytes=300, linger_s=1.0, clock=lambda: clock[0], wall=lambda: 0.0)
    cuts = [small.add(made, line, Held(state, i, None, b"x" * 50)) for i in range(10)]
    full = [b for b in cuts if b is not None]
    assert full and all(b.size <= 300 for b in full)
    assert all(len(b.body()) == b.size for b in full), "the size is the body's, header included"


_text = st.one_of(st.none(), st.just(""), st.text(max_size=8), st.sampled_from(["123", "foreground", "x"]))
_json = st.one_of(st.none(), st.just(""), st.sampled_from(['{"a": 1}', "[1]", "{bad", ' {"a": {"b": []}} ', "NaN"]))


def _mostly(valid: Any, other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The valid value half the time, so records break one rule, not all of them, often enough."""
    return st.one_of(st.just(valid), other)


_records: st.SearchStrategy[dict[str, Any]] = st.builds(
    dict,
    application=_mostly(None, st.one_of(st.integers(min_value=-5, max_value=5000), st.sampled_from([2222, 1 << 63]))),
    millis=st.integers(min_value=-(10**13), max_value=10**13),
    age_s=_mostly(60, st.one_of(st.none(), st.integers(min_value=-7200, max_value=20 * 86400))),
    profile=_mostly("user-1", _text),
    device=_mostly(None, st.one_of(_text, st.sampled_from(["00123", "12345678901234567890123", "١٢٣"]))),
    name=_mostly("level_up", _text),
    event_json=_mostly(None, _json),
    session=_mostly(None, st.one_of(_text, st.sampled_from(["background", "foreground"]))),
    mcc=_mostly(None, st.sampled_from([-1, 0, 250])),
    mnc=_mostly(None, st.just(0)),
)


@settings(max_examples=400)
@given(
    drawn=st.lists(_records, min_size=1, max_size=6),
    default=st.sampled_from([1111, None]),
    keyed=st.sampled_from([frozenset({1111, 2222, 7}), None]),
)
def test_the_column_tests_never_clear_what_the_rules_refuse(
    drawn: list[dict[str, Any]], default: int | None, keyed: frozenset[int] | None
) -> None:
    records = []
    for d in drawn:
        millis = d["millis"] if d["age_s"] is None else int((NOW - d["age_s"]) * 1000)
        records.append(
            record(
                application_id=d["application"],
                event_timestamp=millis,
                profile_id=d["profile"],
                appmetrica_device_id=d["device"],
                event_name=d["name"] or "",
                event_json=d["event_json"],
                session_type=d["session"],
                mcc=d["mcc"],
                mnc=d["mnc"],
            )
        )
    table = RowMaker(EVENTS, default, lambda a: keyed is None or a in keyed, 3600).table(records, NOW)
    for position, rec in enumerate(records):
        application = default if rec["application_id"] is None else rec["application_id"]
        cells = {k: "" if v is None else str(v) for k, v in rec.items()}
        cells["event_timestamp"] = str(rec["event_timestamp"] // 1000)
        cells["application_id"] = "" if application is None else str(application)
        judged = EVENTS.verdict(cells, Window(NOW, 3600))
        if position in table.violations:
            assert table.applications[position] is None
            if application is None:
                assert "post_api.application_id is not set" in table.violations[position].detail
            elif judged is None:
                assert keyed is not None and application not in keyed
                assert "no Post API key" in table.violations[position].detail
            else:
                assert table.violations[position] == judged
        else:
            assert judged is None and (keyed is None or application in keyed)
            assert table.applications[position] == application
            assert {name: column[position] for name, column in zip(EVENT_COLUMNS, table.columns, strict=True)} == cells


def test_a_timestamp_in_milliseconds_is_refused_however_far_ahead_events_may_be() -> None:
    maker = RowMaker(EVENTS, 1111, lambda _: True, max_future_s=1e12)
    table = maker.table([record(event_timestamp=(10**11 + 5) * 1000), record()], NOW)
    assert list(table.violations) == [0]
    assert "looks like milliseconds" in table.violations[0].detail
    assert table.applications == [None, 1111]
