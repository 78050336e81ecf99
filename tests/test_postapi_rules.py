"""The Post API rules of bridge.postapi.rules, example by example and as properties."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bridge.postapi.methods import EVENTS, SESSION, Window
from bridge.postapi.rules import MAX_EVENT_AGE_S, MAX_ROWS_PER_REQUEST, Violation, json_object_problem, json_objects

EVENT_COLUMNS = EVENTS.names
EVENTS_PATH, EVENTS_CSV_PATH = EVENTS.path, EVENTS.csv_path
SESSION_TYPES = SESSION.values
NOW = 1_800_000_000.0
DAY = 86400
CONTRACT = Path(__file__).resolve().parents[1] / "schemas" / "appmetrica_event.avsc"
INTEGER_COLUMNS = ("application_id", "event_timestamp", "mcc", "mnc")


def check_event(params: dict[str, str], now: float, max_future_s: float | None = None) -> Violation | None:
    return EVENTS.verdict(params, Window(now, max_future_s))


def event(**changes: str) -> dict[str, str]:
    """A valid event with ``changes`` applied; ``""`` makes a parameter absent, as in a CSV cell."""
    base = {
        "application_id": "1111",
        "profile_id": "user-1",
        "event_name": "purchase",
        "event_timestamp": str(int(NOW) - 60),
    }
    return base | changes


def invalid(params: dict[str, str], max_future_s: float | None = None) -> str:
    """The detail of the invalid verdict ``params`` must get."""
    verdict = check_event(params, NOW, max_future_s)
    assert verdict is not None, params
    assert verdict.reason == "invalid", verdict
    return verdict.detail


def test_constants_are_the_documented_ones() -> None:
    assert EVENTS_PATH == "/logs/v1/import/events"
    assert EVENTS_CSV_PATH == "/logs/v1/import/events.csv"
    assert MAX_ROWS_PER_REQUEST == 100_000
    assert MAX_EVENT_AGE_S == 14 * DAY
    assert frozenset({"foreground", "background"}) == SESSION_TYPES
    assert "post_api_key" not in EVENT_COLUMNS
    assert EVENT_COLUMNS[:5] == (
        "application_id",
        "profile_id",
        "appmetrica_device_id",
        "event_name",
        "event_timestamp",
    )
    assert len(set(EVENT_COLUMNS)) == len(EVENT_COLUMNS) == 24


def test_columns_follow_the_input_contract() -> None:
    fields = [field["name"] for field in json.loads(CONTRACT.read_text())["fields"]]
    assert tuple(fields) == EVENT_COLUMNS


def test_valid_minimal_event_passes() -> None:
    assert check_event(event(), NOW) is None


def test_valid_full_event_passes() -> None:
    full = event(
        profile_id="",
        appmetrica_device_id=str(2**64 + 12345),
        event_json='{"level": 3, "item": {"id": "x", "tags": ["a", "b"], "price": 9.99, "ok": true, "n": null}}',
        session_type="foreground",
        ios_ifa="A1B2",
        os_name="ios",
        os_version="17.1",
        device_type="phone",
        connection_type="wifi",
        mcc="250",
        mnc="01",
        device_ipv6="::ffff:5.255.232.147",
    )
    assert check_event(full, NOW) is None


@pytest.mark.parametrize("column", ["application_id", "event_name", "event_timestamp"])
def test_each_required_parameter_missing_is_named(column: str) -> None:
    assert invalid(event(**{column: ""})) == f"{column} is missing"
    absent = event()
    del absent[column]
    assert invalid(absent) == f"{column} is missing"


def test_several_missing_parameters_are_all_named() -> None:
    assert invalid({"profile_id": "u"}) == "application_id, event_name, event_timestamp are missing"


def test_both_identities_and_neither_are_told_apart() -> None:
    both = invalid(event(appmetrica_device_id="123"))
    neither = invalid(event(profile_id=""))
    assert both.startswith("both profile_id and appmetrica_device_id are set")
    assert neither.startswith("neither profile_id nor appmetrica_device_id is set")


@pytest.mark.parametrize("device_id", [str(2**64), str(2**200), "0", "007"])
def test_device_id_is_any_non_negative_decimal(device_id: str) -> None:
    assert check_event(event(profile_id="", appmetrica_device_id=device_id), NOW) is None


@pytest.mark.parametrize("device_id", ["-1", "+1", "1e5", " 12", "12 ", "0x1f", "١٢", "1_000", "12.0", "abc"])
def test_device_id_that_is_not_a_decimal_is_invalid(device_id: str) -> None:
    detail = invalid(event(profile_id="", appmetrica_device_id=device_id))
    assert detail.startswith("appmetrica_device_id ")
    assert "non-negative decimal integer" in detail


@pytest.mark.parametrize("column", INTEGER_COLUMNS)
@pytest.mark.parametrize("value", ["12a", "-1", "+1", "1_000", " 1", "1.0", "٣", "9223372036854775808", "1" * 5000])
def test_integer_parameters_take_only_decimal_int64(column: str, value: str) -> None:
    assert invalid(event(**{column: value})).startswith(f"{column} ")


def test_integer_parameters_accept_the_int64_maximum_where_it_makes_sense() -> None:
    assert check_event(event(mcc="9223372036854775807", mnc="0"), NOW) is None


def test_application_id_zero_is_invalid() -> None:
    assert invalid(event(application_id="0")) == "application_id '0' is not a positive integer"


def test_milliseconds_are_named_as_such() -> None:
    assert (
        invalid(event(event_timestamp="1700000000000"))
        == "event_timestamp 1700000000000 looks like milliseconds; the Post API takes seconds"
    )


def test_milliseconds_threshold_is_ten_to_the_eleventh() -> None:
    assert check_event(event(event_timestamp=str(10**11)), NOW) is None
    assert "milliseconds" in invalid(event(event_timestamp=str(10**11 + 1)))


def test_age_limit_is_fourteen_days_inclusive() -> None:
    assert check_event(event(event_timestamp=str(int(NOW) - 14 * DAY)), NOW) is None
    verdict = check_event(event(event_timestamp=str(int(NOW) - 14 * DAY - 1)), NOW)
    assert verdict == Violation(
        "expired",
        f"event_timestamp {int(NOW) - 14 * DAY - 1} is 1209601 s (14.0 days) old; "
        "the Post API takes events at most 1209600 s (14 days) old",
    )


def test_an_expired_event_that_breaks_another_rule_is_invalid() -> None:
    old_and_broken = event(event_timestamp=str(int(NOW) - 30 * DAY), session_type="sometimes")
    assert invalid(old_and_broken).startswith("session_type ")


def test_future_limit_applies_only_when_given() -> None:
    ahead = event(event_timestamp=str(int(NOW) + 3600))
    assert check_event(ahead, NOW) is None
    assert check_event(ahead, NOW, max_future_s=3600) is None
    assert invalid(ahead, max_future_s=3599) == (
        f"event_timestamp {int(NOW) + 3600} is 3600 s in the future; at most 3599 s is allowed"
    )


@pytest.mark.parametrize(
    "value", ["{}", '{"a":{"b":[1,2,{"c":null}]}}', ' {"a": 1} ', '{"a": 1}\n', '{"ключ": "значение"}']
)
def test_event_json_objects_pass(value: str) -> None:
    assert check_event(event(event_json=value), NOW) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[1, 2]", "event_json must be a JSON object, got list"),
        ('"text"', "event_json must be a JSON object, got str"),
        ("42", "event_json must be a JSON object, got int"),
        ("{", "event_json is not valid JSON: "),
        ('{"a": 1}}', "event_json is not valid JSON: Extra data"),
        ('{"a": 1} x', "event_json is not valid JSON: Extra data"),
        ("{'a': 1}", "event_json is not valid JSON: "),
        ('{"a": NaN}', "event_json is not valid JSON: NaN is not JSON"),
        ('{"a": Infinity}', "event_json is not valid JSON: Infinity is not JSON"),
    ],
)
def test_event_json_that_is_not_an_object_is_invalid(value: str, expected: str) -> None:
    assert invalid(event(event_json=value)).startswith(expected)


@pytest.mark.parametrize("session_type", sorted(SESSION_TYPES))
def test_session_types_pass(session_type: str) -> None:
    assert check_event(event(session_type=session_type), NOW) is None


@pytest.mark.parametrize("session_type", ["Foreground", "fg", " background"])
def test_other_session_types_are_invalid(session_type: str) -> None:
    assert invalid(event(session_type=session_type)) == (
        f"session_type {session_type!r} is not one of background, foreground"
    )


@pytest.mark.parametrize("name", ["post_api_key", "event_type", "Event_Name", ""])
def test_unknown_parameters_are_invalid(name: str) -> None:
    assert invalid(event(**{name: "x"})) == f"unknown parameter {name!r}"


def test_long_values_are_shortened_in_details() -> None:
    detail = invalid(event(session_type="x" * 1000))
    assert len(detail) < 120


# Properties ---------------------------------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_identity = st.one_of(
    st.builds(lambda p: {"profile_id": p}, st.text(min_size=1)),
    st.builds(lambda d: {"appmetrica_device_id": str(d)}, st.integers(min_value=0, max_value=2**130)),
)
_optional = st.fixed_dictionaries(
    {},
    optional={
        "event_json": st.dictionaries(st.text(max_size=8), _json_values, max_size=5).map(json.dumps),
        "session_type": st.sampled_from(sorted(SESSION_TYPES)),
        "mcc": st.integers(min_value=0, max_value=999).map(str),
        "mnc": st.integers(min_value=0, max_value=999).map(str),
        "os_name": st.sampled_from(["ios", "android", "windows"]),
        "device_model": st.text(),
        "device_ipv6": st.just("2a02:6b8::40c:6676:baff:fea6:53d8"),
    },
)
_valid_events = st.builds(
    lambda app, name, ts, identity, rest: {
        "application_id": str(app),
        "event_name": name,
        "event_timestamp": str(ts),
        **identity,
        **rest,
    },
    st.integers(min_value=1, max_value=2**63 - 1),
    st.text(min_size=1),
    st.integers(min_value=int(NOW) - MAX_EVENT_AGE_S, max_value=int(NOW) + 30 * DAY),
    _identity,
    _optional,
)


@given(_valid_events)
def test_every_valid_event_passes(params: dict[str, str]) -> None:
    assert check_event(params, NOW) is None


@given(st.dictionaries(st.sampled_from(EVENT_COLUMNS) | st.text(max_size=12), st.text(max_size=30)))
@example({"application_id": "1", "event_name": "e", "event_timestamp": str(int(NOW)), "profile_id": "p"})
def test_acceptance_implies_every_rule(params: dict[str, str]) -> None:
    """An independent reading of the rules: whatever check_event accepts obeys all of them."""
    verdict = check_event(params, NOW)
    if verdict is not None:
        assert verdict.reason in ("invalid", "expired")
        assert verdict.detail
        return
    assert set(params) <= set(EVENT_COLUMNS)
    assert params["event_name"]
    assert bool(params.get("profile_id")) != bool(params.get("appmetrica_device_id"))
    for column in INTEGER_COLUMNS:
        if params.get(column):
            assert params[column].isascii()
            assert params[column].isdigit()
    assert int(params["application_id"]) > 0
    assert NOW - MAX_EVENT_AGE_S <= int(params["event_timestamp"]) <= 10**11
    if params.get("event_json"):
        assert isinstance(json.loads(params["event_json"]), dict)
    assert params.get("session_type", "foreground") in SESSION_TYPES | {""}


@given(st.integers(min_value=-(10**3), max_value=10**14))
def test_timestamp_verdict_follows_the_rules(timestamp: int) -> None:
    verdict = check_event(event(event_timestamp=str(timestamp)), NOW)
    expected: Any
    if timestamp < 0 or timestamp > 10**11:
        expected = "invalid"
    elif NOW - timestamp > MAX_EVENT_AGE_S:
        expected = "expired"
    else:
        expected = None
    assert (verdict.reason if verdict else None) == expected


@given(st.sampled_from(INTEGER_COLUMNS), st.text(min_size=1).filter(lambda s: not (s.isascii() and s.isdigit())))
def test_integer_columns_refuse_anything_but_digits(column: str, value: str) -> None:
    assert invalid(event(**{column: value})).startswith(f"{column} ")


@given(st.text(min_size=1))
def test_device_id_is_accepted_exactly_when_it_is_ascii_digits(device_id: str) -> None:
    verdict = check_event(event(profile_id="", appmetrica_device_id=device_id), NOW)
    assert (verdict is None) == (device_id.isascii() and device_id.isdigit())


@given(_json_values)
def test_event_json_is_accepted_exactly_when_it_is_an_object(value: object) -> None:
    verdict = check_event(event(event_json=json.dumps(value)), NOW)
    assert (verdict is None) == isinstance(value, dict)


_json_texts = st.one_of(
    _json_values.map(json.dumps),
    st.dictionaries(st.text(max_size=4), _json_values, max_size=3).map(json.dumps),
    st.sampled_from(['{"a": 1} ', ' {"a": 1}', '{"a": 1}{', '{"a": NaN}', "{", '{"a": 1}}', "{}", "{} "]),
).filter(bool)


@given(st.lists(_json_texts, max_size=6))
def test_the_json_column_test_never_clears_what_the_rule_refuses(texts: list[str]) -> None:
    problems = [json_object_problem(text, "event_json") for text in texts]
    if json_objects(texts):
        assert problems == [None] * len(texts)
    elif all(text.startswith("{") and text.endswith("}") for text in texts):
        assert any(problems), "compact objects alone are always cleared"
