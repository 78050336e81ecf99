"""Records to rows and rows to CSV bodies: rules checked before upload, every cell round-trips exactly."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import pytest

from bridge.batching import Batcher
from bridge.csvbody import encode
from bridge.offsets import PartitionOffsets
from bridge.postapi import EVENT_COLUMNS, Violation
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
    body = encode(rows)
    parsed = list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))
    assert [p["event_name"] for p in parsed] == tricky
    header = body.split(b"\r\n", 1)[0].decode()
    assert header == "application_id,profile_id,event_name,event_timestamp,event_json", "only columns in use"


def test_batches_cut_at_max_rows_max_bytes_and_linger() -> None:
    clock = [100.0]
    batcher = Batcher(max_rows=3, max_bytes=10_000, linger_s=1.0, clock=lambda: clock[0])
    state = PartitionOffsets("t", 0)
    made = maker().make(record(), NOW)
    assert isinstance(made, Row)
    other = Row(2222, made.values)
    cut = [batcher.add(made, (state, i)) for i in range(3)]
    assert cut[:2] == [None, None]
    assert cut[2] is not None and len(cut[2].rows) == 3
    assert batcher.add(other, (state, 9)) is None, "applications never share a batch"
    assert batcher.add(made, (state, 10)) is None
    clock[0] += 0.5
    assert batcher.expired() == []
    clock[0] += 0.6
    expired = batcher.expired()
    assert sorted(b.application_id for b in expired) == [1111, 2222]

    small = Batcher(max_rows=100, max_bytes=300, linger_s=1.0, clock=lambda: clock[0])
    cuts = [small.add(made, (state, i)) for i in range(10)]
    full = [b for b in cuts if b is not None]
    assert full and all(b.size <= 300 for b in full)
