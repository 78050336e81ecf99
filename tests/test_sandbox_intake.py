"""The sandbox's column-wise CSV intake answers exactly as the row-by-row reading and checking it stands in for.

The judge is the documented reading (``bridge.sandbox.documented``); where it clears rows, the bridge's declaration
is asked too, so a disagreement between the two readings of the pages on events shows up here.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from bridge.postapi.methods import EVENTS, Window
from bridge.postapi.rules import MAX_EVENT_AGE_S, MAX_ROWS_PER_REQUEST
from bridge.sandbox.documented import DOCUMENTED
from bridge.sandbox.intake import BadRequestError, CsvBatch, check_rows, read_csv_batch, read_csv_form

NOW = 1_800_000_000.25
OLDEST = int(NOW) - MAX_EVENT_AGE_S + 1
"""The oldest whole second an upload at NOW takes."""
KEY = "key"
REFUSED = "refused-name"

Outcome = tuple[str, Any, int | None, set[str] | None]
"""Where the request stopped (read, check or ok), the 400 text or the events, the row count, the application ids."""


def per_row(query: MultiDict[str], body: bytes, max_future_s: float | None, refused: Collection[str]) -> Outcome:
    """The request as the sandbox judged it before: every row read into a dict, then checked one by one."""
    try:
        events = read_csv_form(EVENTS, query, body)
    except BadRequestError as exc:
        return ("read", str(exc), None, None)
    ids = {event.get("application_id", "") for event in events}
    try:
        check_rows(EVENTS, events, Window(NOW, max_future_s), refused, numbered=True)
    except BadRequestError as exc:
        return ("check", str(exc), len(events), ids)
    return ("ok", events, len(events), ids)


def batched(query: MultiDict[str], body: bytes, max_future_s: float | None, refused: Collection[str]) -> Outcome:
    """The request as the sandbox judges it now, through ``read_csv_batch``."""
    try:
        batch = read_csv_batch(EVENTS, query, body)
    except BadRequestError as exc:
        return ("read", str(exc), None, None)
    ids = batch.application_ids()
    try:
        batch.check(Window(NOW, max_future_s), refused)
    except BadRequestError as exc:
        return ("check", str(exc), len(batch), ids)
    return ("ok", batch.events(), len(batch), ids)


def csv_body(header: list[str], rows: list[list[str]], terminator: str = "\r\n", quote_all: bool = False) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=terminator, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def query(application_id: str = "") -> MultiDict[str]:
    return MultiDict({"post_api_key": KEY, **({"application_id": application_id} if application_id else {})})


def cleared(body: bytes, application_id: str = "", max_future_s: float | None = None) -> bool:
    """Whether the column tests alone clear the body."""
    batch = read_csv_batch(EVENTS, query(application_id), body)
    return isinstance(batch, CsvBatch) and batch.cleared(Window(NOW, max_future_s), ())


# -- generated requests -----------------------------------------------------------------------------------------------

# Text that CSV must quote, that holds line breaks of str.splitlines() other than CR and LF, and that is not ASCII.
_TEXT = st.text(
    st.one_of(st.characters(codec="utf-8", exclude_characters="\x00"), st.sampled_from(',"\r\n\x0b\x1c\x85\u2028')),
    min_size=1,
    max_size=6,
)
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
VALID: dict[str, st.SearchStrategy[str]] = {
    "event_name": _TEXT,
    "event_timestamp": st.integers(OLDEST, int(NOW)).map(str),
    "event_json": st.just("")
    | st.builds(json.dumps, st.dictionaries(st.text(max_size=4), _JSON_VALUES, max_size=3), ensure_ascii=st.booleans()),
    "session_type": st.sampled_from(["", "foreground", "background"]),
    "mcc": st.just("") | st.integers(0, 999).map(str),
    "mnc": st.just("") | st.integers(0, 99).map(str),
    "os_name": st.just("") | _TEXT,
    "device_model": st.just("") | _TEXT,
}
IDENTITIES = ("profile_id", "appmetrica_device_id")
VALID_IDENTITY = {"profile_id": _TEXT, "appmetrica_device_id": st.from_regex(r"[0-9]{1,24}", fullmatch=True)}
APPLICATIONS = ["1111", "2222", "9223372036854775807"]
TRICKY_JSON = [
    *("{}", " {}", "{} ", "{}{}", "[]", '"{}"', "{", "}", "NaN", '{"a": NaN}', '{"a": -Infinity}', '{"a": [1,]}'),
    *('{"a": 1}x', '{"a": "\x01"}', '{"a": 1, "a": 2}', "[{}]", '{"a": ' * 3 + "1" + "}" * 3, '{"a": [{}', "{}]}, {}"),
]
TRICKY_NUMBERS = [
    *("0", "00", "-1", "+1", " 1", "1 ", "1_0", "1.5", "1e3", "\u0661\u0662", "\uff11\uff12", "\u00b2"),
    *("9223372036854775807", "9223372036854775808", "09223372036854775807", "00000000000000000001"),
    *("0000000000000000250", "99999999999999999999", "100000000000", "100000000001"),
    *(str(OLDEST), str(OLDEST - 1), str(int(NOW) + 300), str(int(NOW) + 301), "0" + str(int(NOW))),
]
TRICKY_TEXT = ["foreground", "Foreground", "background ", "purchase", REFUSED, "a\u2028b", "a\x85", "\x0b"]
TRICKY = st.just("") | st.sampled_from(TRICKY_NUMBERS) | st.sampled_from(TRICKY_JSON) | st.sampled_from(TRICKY_TEXT)
"""Cells that break a rule, or sit on its edge."""


@st.composite
def requests(draw: st.DrawFn) -> tuple[MultiDict[str], bytes, float | None, frozenset[str], bool]:
    """A request whose rows are valid but for a few mutated cells; the flag says whether any cell was mutated."""
    identities = draw(st.sampled_from([IDENTITIES[:1], IDENTITIES[1:], IDENTITIES, IDENTITIES, ()]))
    optional = draw(st.sets(st.sampled_from(sorted(VALID))))
    # Mostly every required column, the application in the column, the query or both.
    missing = draw(st.sampled_from([None, None, None, None, "event_name", "event_timestamp"]))
    query_app = draw(st.sampled_from(["", "", "1111", "1111", "2222", "0", "\u0661"]))
    in_column = not query_app or draw(st.booleans())
    names = (optional | {"event_name", "event_timestamp"} | set(identities)) - {missing}
    header = draw(st.permutations(sorted(names | ({"application_id"} if in_column else set()))))
    count = draw(st.integers(1, 5))
    rows = []
    for _ in range(count):
        cells = {name: draw(VALID[name]) for name in header if name in VALID}
        if in_column:
            cells["application_id"] = draw(st.sampled_from([query_app, ""] if query_app else APPLICATIONS))
        if identities:
            chosen = draw(st.sampled_from(identities))
            cells |= {name: draw(VALID_IDENTITY[name]) if name == chosen else "" for name in identities}
        rows.append([cells[name] for name in header])
    mutations = draw(st.lists(st.tuples(st.integers(0, count - 1), st.integers(0, len(header) - 1)), max_size=2))
    for row, column in mutations:
        rows[row][column] = draw(TRICKY)
    terminator = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    body = csv_body(header, rows, terminator, quote_all=draw(st.booleans()))
    max_future_s = draw(st.sampled_from([None, 0.0, 300.0]))
    refused = draw(st.sampled_from([frozenset(), frozenset({REFUSED})]))
    return query(query_app), body, max_future_s, refused, bool(mutations)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_column_tests_clear_only_what_every_row_passes(
    case: tuple[MultiDict[str], bytes, float | None, frozenset[str], bool],
) -> None:
    """Same answer as row by row; where the column tests clear a batch, the documented reading takes every row, and
    so does the bridge's own declaration: on events, with every edge case drawn, the two readings agree."""
    query_, body, max_future_s, refused, mutated = case
    expected = per_row(query_, body, max_future_s, refused)
    assert batched(query_, body, max_future_s, refused) == expected
    batch = read_csv_batch(EVENTS, query_, body) if expected[0] != "read" else None
    if isinstance(batch, CsvBatch) and batch.cleared(Window(NOW, max_future_s), refused):
        events = batch.events()
        documented = DOCUMENTED["events"]
        assert [documented.verdict(event, NOW, max_future_s) for event in events] == [None] * len(events)
        assert [EVENTS.verdict(event, Window(NOW, max_future_s)) for event in events] == [None] * len(events)
        assert not any(event["event_name"] in refused for event in events)
    if expected[0] == "ok" and not mutated:
        # Plain valid rows are the common case: the column tests must clear them, or nothing got faster.
        assert isinstance(batch, CsvBatch)
        assert batch.cleared(Window(NOW, max_future_s), refused)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.booleans(), st.lists(st.sampled_from(["\r\n", "\n", "\r"]), max_size=3))
def test_a_byte_order_mark_and_blank_lines_at_the_end_change_nothing(
    case: tuple[MultiDict[str], bytes, float | None, frozenset[str], bool], bom: bool, blank_lines: list[str]
) -> None:
    """As a spreadsheet saves CSV: the sandbox answers the same, row for row, as for the bare body."""
    query_, body, max_future_s, refused, _mutated = case
    saved = ("\ufeff".encode() if bom else b"") + body + "".join(blank_lines).encode()
    assert batched(query_, saved, max_future_s, refused) == batched(query_, body, max_future_s, refused)
    assert per_row(query_, saved, max_future_s, refused) == per_row(query_, body, max_future_s, refused)


# -- examples ---------------------------------------------------------------------------------------------------------

HEADER = ["application_id", "profile_id", "event_name", "event_timestamp", "event_json", "mcc"]


def good(seq: int, **changes: str) -> list[str]:
    """A valid row over HEADER with ``changes`` (which may only change HEADER's columns)."""
    cells = {
        "application_id": "1111",
        "profile_id": f'user-{seq}, "quoted"\n日本語 🎮',
        "event_name": "energy_recovered",
        "event_timestamp": str(int(NOW) - seq),
        "event_json": json.dumps({"seq": seq, "note": 'a "b",\r\nc', "nested": {"level": seq}}),
        "mcc": "250",
    }
    return [(cells | changes)[name] for name in HEADER]


def test_typical_rows_are_cleared_by_the_column_tests() -> None:
    body = csv_body(HEADER, [good(seq) for seq in range(200)])
    assert cleared(body)
    assert cleared(body, application_id="1111")
    batch = read_csv_batch(EVENTS, query(), body)
    batch.check(Window(NOW, None), ())
    assert batch.events() == read_csv_form(EVENTS, query(), body)
    assert batch.application_ids() == {"1111"}
    assert len(batch) == 200


@pytest.mark.parametrize("bad", [2, 50, 99])
def test_a_bad_row_is_named_by_its_number(bad: int) -> None:
    rows = [good(seq) for seq in range(100)]
    rows[bad] = good(bad, event_json='{"seq": 1,}')
    body = csv_body(HEADER, rows)
    assert not cleared(body)
    expected = per_row(query(), body, None, ())
    assert expected[0] == "check"
    assert expected[1].startswith(f"row {bad + 1}: event_json is not valid JSON")
    assert batched(query(), body, None, ()) == expected


@pytest.mark.parametrize(
    ("column", "value", "detail"),
    [
        ("application_id", "\u0661\u0661", "application_id '\u0661\u0661' is not a positive integer"),
        ("application_id", "\uff11\uff11", "application_id '\uff11\uff11' is not a positive integer"),
        (
            "event_timestamp",
            "\u0661" * 10,
            f"event_timestamp '{chr(0x661) * 10}' is not a non-negative integer of Unix seconds",
        ),
        ("mcc", "\u00b2\u00b3", "mcc '\u00b2\u00b3' is not a non-negative integer"),
        (
            "appmetrica_device_id",
            "\u0661\u0662",
            "appmetrica_device_id '\u0661\u0662' is not a non-negative decimal integer",
        ),
    ],
)
def test_non_ascii_digits_are_refused(column: str, value: str, detail: str) -> None:
    """str.isdigit() takes these digits; the Post API rules do not."""
    header = [*HEADER, "appmetrica_device_id"]
    changes = {column: value} | ({"profile_id": ""} if column == "appmetrica_device_id" else {})
    rows = [[*good(0), ""], [*good(1, **changes), changes.get("appmetrica_device_id", "")], [*good(2), ""]]
    body = csv_body(header, rows)
    assert not cleared(body)
    expected = per_row(query(), body, None, ())
    assert expected[:2] == ("check", f"row 2: {detail}")
    assert batched(query(), body, None, ()) == expected


@pytest.mark.parametrize(
    ("column", "value", "accepted"),
    [
        ("application_id", "9223372036854775807", True),
        ("application_id", "9223372036854775808", False),
        ("application_id", "00000000000000001111", False),  # fits in value, not in digits
        ("application_id", "0", False),
        ("event_timestamp", "0" * 9 + str(int(NOW)), True),  # 19 digits, leading zeros: the column tests hand it on
        ("event_timestamp", "0" * 10 + str(int(NOW)), False),
        ("mcc", "0000000000000000250", True),
        ("mcc", "9223372036854775807", True),
        ("mcc", "9223372036854775808", False),
        ("mcc", "99999999999999999999", False),
    ],
)
def test_int64_bounds(column: str, value: str, accepted: bool) -> None:
    body = csv_body(HEADER, [good(0), good(1, **{column: value}), good(2)])
    expected = per_row(query(), body, None, ())
    assert (expected[0] == "ok") is accepted
    assert batched(query(), body, None, ()) == expected


def test_timestamp_limits_are_check_events() -> None:
    """The newest and the oldest timestamp decide for the batch, at check_event's exact bounds."""
    for max_future_s in (None, 0.0, 10.0):
        for stamp in (OLDEST - 1, OLDEST, int(NOW), int(NOW) + 1, int(NOW) + 10, int(NOW) + 11, 10**11, 10**11 + 1):
            body = csv_body(HEADER, [good(0), good(1, event_timestamp=str(stamp))])
            assert batched(query(), body, max_future_s, ()) == per_row(query(), body, max_future_s, ()), stamp


def test_query_application_id_fills_and_must_agree() -> None:
    agreeing = csv_body(HEADER, [good(0, application_id=""), good(1), good(2, application_id="")])
    assert cleared(agreeing, application_id="1111")
    batch = read_csv_batch(EVENTS, query("1111"), agreeing)
    assert batch.application_ids() == {"1111"}
    assert [event["application_id"] for event in batch.events()] == ["1111"] * 3
    assert batch.events() == read_csv_form(EVENTS, query("1111"), agreeing)

    disagreeing = csv_body(HEADER, [good(0, application_id=""), good(1), good(2, application_id="2222")])
    expected = ("read", "row 3: application_id '2222' disagrees with the query's application_id '1111'", None, None)
    assert batched(query("1111"), disagreeing, None, ()) == per_row(query("1111"), disagreeing, None, ()) == expected


@pytest.mark.parametrize(
    ("column", "detail"),
    [
        ("application_id", "application_id is missing"),
        ("event_name", "event_name is missing"),
        ("event_timestamp", "event_timestamp is missing"),
        ("profile_id", "neither profile_id nor appmetrica_device_id is set; the Post API takes exactly one identity"),
    ],
)
def test_an_empty_required_cell_is_named(column: str, detail: str) -> None:
    body = csv_body(HEADER, [good(0), good(1), good(2, **{column: ""}), good(3)])
    assert not cleared(body)
    expected = per_row(query(), body, None, ())
    assert expected[:2] == ("check", f"row 3: {detail}")
    assert batched(query(), body, None, ()) == expected


def test_row_limit() -> None:
    header = b"profile_id,event_name,event_timestamp\r\n"
    line = f"p,e,{int(NOW)}\r\n".encode()
    assert cleared(header + line * MAX_ROWS_PER_REQUEST, application_id="1111")
    assert len(read_csv_batch(EVENTS, query("1111"), header + line * MAX_ROWS_PER_REQUEST)) == MAX_ROWS_PER_REQUEST
    too_many = header + line * (MAX_ROWS_PER_REQUEST + 1)
    expected = ("read", "more than 100000 rows; the Post API takes at most 100000 per request", None, None)
    assert batched(query("1111"), too_many, None, ()) == per_row(query("1111"), too_many, None, ()) == expected


def test_refused_event_names_fault() -> None:
    body = csv_body(HEADER, [good(0), good(1, event_name=REFUSED), good(2)])
    expected = ("check", f"row 2: event_name {REFUSED!r} is refused by this sandbox", 3, {"1111"})
    assert batched(query(), body, None, {REFUSED}) == per_row(query(), body, None, {REFUSED}) == expected


@pytest.mark.parametrize(
    ("body", "query_app"),
    [
        (b"", ""),
        (b"\xff\xfe", ""),
        ("application_id,profile_id\r\n1111,é".encode("latin-1"), ""),
        (b"\xef\xbb\xbfapplication_id,profile_id\r\n1111,u\r\n", ""),
        (b"\r\n1111,u\r\n", ""),
        (b"application_id,who\r\n1111,u\r\n", ""),
        (b"event_name,event_name\r\na,b\r\n", ""),
        (b"event_name,profile_id\r\n", ""),
        (b"event_name,profile_id\r\na,b\r\nc\r\n", ""),
        (b"event_name,profile_id\r\na,b\r\nc,d,e\r\n", ""),
        (b'event_name,profile_id\r\na,"b\r\n', ""),
        (b'event_name,profile_id\r\na,"b"c\r\n', ""),
        (b"event_name,profile_id\r\na,b\rc\r\n", ""),
        (b"event_name,profile_id\r\na,b\r\n\r\nc,d\r\n", ""),
        (b"application_id,event_name\r\n2222,a\r\n1,\r\n", "1111"),
        ("event_name,profile_id\r\na\u2028b,c\x85d\r\ne\x1cf,g\r\n".encode(), ""),
    ],
)
def test_structure_is_read_as_before(body: bytes, query_app: str) -> None:
    """Malformed or unusual bodies: the same refusal, or the same events, as read_csv_form."""
    assert batched(query(query_app), body, None, ()) == per_row(query(query_app), body, None, ())


def test_query_parameters_are_read_as_before() -> None:
    body = csv_body(HEADER, [good(0)])
    for params in ({"post_api_key": KEY, "event_name": "x"}, [("post_api_key", KEY), ("post_api_key", KEY)]):
        expected = per_row(MultiDict(params), body, None, ())
        assert expected[0] == "read"
        assert batched(MultiDict(params), body, None, ()) == expected


@example(["{}", '{"a": [{}', "{}]}, {}"])  # one object list only when joined
@given(st.lists(st.sampled_from(TRICKY_JSON), min_size=1, max_size=4))
def test_event_json_is_judged_text_by_text(texts: list[str]) -> None:
    body = csv_body(HEADER, [good(seq, event_json=text) for seq, text in enumerate(texts)])
    assert batched(query(), body, None, ()) == per_row(query(), body, None, ())
