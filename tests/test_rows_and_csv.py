"""Records to rows and rows to CSV bodies: rules checked before upload, every cell round-trips exactly."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge import csvbody
from bridge.batching import Batcher, Held
from bridge.offsets import PartitionOffsets
from bridge.postapi import EVENT_COLUMNS, Violation, check_event
from bridge.rows import Row, RowMaker

NOW = time.time()


def record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {name: None for name in EVENT_COLUMNS}
    base.update(event_name="level_up", event_timestamp=int(NOW * 1000) - 5000, profile_id="user-1")
    base.update(fields)
    return base


def maker(default: int | None = 1111, keyed: frozenset[int] = frozenset({1111, 2222})) -> RowMaker:
    return RowMaker(default, keyed.__contains__, max_future_s=3600)


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
    row = RowMaker(None, lambda _: True, 3600).make(record(), NOW)
    assert isinstance(row, Violation)
    assert "post_api.application_id is not set" in row.detail


def test_csv_round_trips_quotes_commas_newlines_and_non_ascii() -> None:
    tricky = ['a "quoted", value', "line one\nline two\r\nthree", "Привет, мир 🎮", '{"k": "v, \\"x\\""}']
    rows = []
    for i, text in enumerate(tricky):
        made = maker().make(record(event_name=text, event_json=f'{{"i": {i}, "s": "{text[:1]}"}}'), NOW)
        assert isinstance(made, Row)
        rows.append(made.values)
    used = csvbody.columns_in_use(rows)
    body = csvbody.header(used) + b"".join(csvbody.lines(rows, used))
    parsed = list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))
    assert [p["event_name"] for p in parsed] == tricky
    header = body.split(b"\r\n", 1)[0].decode()
    assert header == "application_id,profile_id,event_name,event_timestamp,event_json", "only columns in use"


def test_batches_cut_at_max_rows_max_bytes_and_linger() -> None:
    clock = [100.0]
    batcher = Batcher(max_rows=3, max_bytes=10_000, linger_s=1.0, clock=lambda: clock[0])
    state = PartitionOffsets("t", 0)
    made, other = (1111, b"application_id,event_name\r\n"), (2222, b"application_id,event_name\r\n")
    narrower = (1111, b"application_id\r\n")
    line = b"x" * 48 + b"\r\n"
    cut = [batcher.add(made, line, Held(state, i, None, b"x" * 50)) for i in range(3)]
    assert cut[:2] == [None, None]
    assert cut[2] is not None and len(cut[2].lines) == 3
    assert batcher.add(other, line, Held(state, 9, None, b"x")) is None, "applications never share a batch"
    assert batcher.add(made, line, Held(state, 10, None, b"x")) is None
    assert batcher.add(narrower, line, Held(state, 11, None, b"x")) is None, "nor do lines of other columns"
    clock[0] += 0.5
    assert batcher.expired() == []
    clock[0] += 0.6
    expired = batcher.expired()
    assert sorted(b.application_id for b in expired) == [1111, 1111, 2222]
    assert all(b.body() == b.header + line * len(b.lines) for b in expired)

    small = Batcher(max_rows=100, max_bytes=300, linger_s=1.0, clock=lambda: clock[0])
    cuts = [small.add(made, line, Held(state, i, None, b"x" * 50)) for i in range(10)]
    full = [b for b in cuts if b is not None]
    assert full and all(b.size <= 300 for b in full)
    assert all(len(b.body()) == b.size for b in full), "the size is the body's, header included"


_text = st.one_of(st.none(), st.just(""), st.text(max_size=8), st.sampled_from(["123", "foreground", "x"]))
_json = st.one_of(st.none(), st.just(""), st.sampled_from(['{"a": 1}', "[1]", "{bad", ' {"a": {"b": []}} ', "NaN"]))


@given(
    application=st.one_of(st.none(), st.integers(min_value=-5, max_value=5000)),
    millis=st.integers(min_value=-(10**13), max_value=10**13),
    age_s=st.one_of(st.none(), st.integers(min_value=-7200, max_value=20 * 86400)),
    profile=_text,
    device=st.one_of(_text, st.sampled_from(["00123", "12345678901234567890123"])),
    name=_text,
    event_json=_json,
    session=st.one_of(_text, st.sampled_from(["background", "foreground"])),
    mcc=st.one_of(st.none(), st.integers(min_value=-3, max_value=999)),
)
def test_the_typed_shortcut_never_clears_what_the_rules_refuse(
    application: int | None,
    millis: int,
    age_s: int | None,
    profile: str | None,
    device: str | None,
    name: str | None,
    event_json: str | None,
    session: str | None,
    mcc: int | None,
) -> None:
    if age_s is not None:
        millis = int((NOW - age_s) * 1000)
    rec = record(
        application_id=application,
        event_timestamp=millis,
        profile_id=profile,
        appmetrica_device_id=device,
        event_name=name or "",
        event_json=event_json,
        session_type=session,
        mcc=mcc,
    )
    made = RowMaker(1111, lambda _: True, 3600).make(rec, NOW)
    if isinstance(made, Row):
        assert check_event(dict(zip(EVENT_COLUMNS, made.values, strict=True)), NOW, 3600) is None
    else:
        cells = {k: "" if v is None else str(v) for k, v in rec.items()}
        cells["event_timestamp"] = str(millis // 1000)
        cells["application_id"] = str(1111 if application is None else application)
        assert check_event(cells, NOW, 3600) == made
