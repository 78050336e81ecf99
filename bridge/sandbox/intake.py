"""Reading an import request into events, and refusing it with the reason its 400 carries."""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Iterable, Iterator
from itertools import compress

from multidict import MultiMapping

from bridge.postapi import EVENT_COLUMNS, MAX_ROWS_PER_REQUEST, check_event

_COLUMNS = frozenset(EVENT_COLUMNS)
_CSV_QUERY_PARAMETERS = frozenset({"post_api_key", "application_id"})


class BadRequestError(Exception):
    """The request breaks a Post API rule; the message is the 400's text."""


def read_query_form(query: MultiMapping[str], body: bytes) -> list[dict[str, str]]:
    """The one event that ``POST events?…`` carries in its query, empty values omitted."""
    if body:
        raise BadRequestError(
            "the events method takes its event in query parameters and an empty body; send CSV to events.csv"
        )
    _refuse_repeated(query)
    return [{name: value for name, value in query.items() if value and name != "post_api_key"}]


def read_csv_form(query: MultiMapping[str], body: bytes) -> list[dict[str, str]]:
    """The events of a ``POST events.csv`` body (RFC 4180, UTF-8), empty cells omitted.

    A query ``application_id`` fills rows that have none and must agree with rows that have one.
    """
    unknown = [name for name in query if name not in _CSV_QUERY_PARAMETERS]
    if unknown:
        raise BadRequestError(
            f"query parameter {', '.join(map(repr, unknown))} is not taken with a CSV body; send it as a column"
        )
    _refuse_repeated(query)
    if not body:
        raise BadRequestError("the body is empty; events.csv takes a header line and one row per event")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = _header(next(reader))
        events = list(_rows(reader, header, query.get("application_id", "")))
    except csv.Error as exc:
        raise BadRequestError(f"line {reader.line_num}: malformed CSV: {exc}") from None
    if not events:
        raise BadRequestError("the body has a header line but no rows")
    return events


def check_rows(
    events: Iterable[dict[str, str]],
    now: float,
    max_future_s: float | None,
    refused_names: Collection[str],
    numbered: bool,
) -> None:
    """Refuse the whole batch at its first bad row; ``numbered`` names rows from 1 after the header."""
    for number, event in enumerate(events, 1):
        violation = check_event(event, now, max_future_s)
        if violation is not None:
            reason = violation.detail
        elif refused_names and event["event_name"] in refused_names:
            reason = f"event_name {event['event_name']!r} is refused by this sandbox"
        else:
            continue
        raise BadRequestError(f"row {number}: {reason}" if numbered else reason)


def _refuse_repeated(query: MultiMapping[str]) -> None:
    if len(query) != len(set(query)):
        repeated = sorted({name for name in query if len(query.getall(name)) > 1})
        raise BadRequestError(f"parameter {', '.join(map(repr, repeated))} is given more than once")


def _header(names: list[str]) -> list[str]:
    if not names:
        raise BadRequestError("the header line is empty")
    unknown = [name for name in names if name not in _COLUMNS]
    if unknown:
        raise BadRequestError(f"unknown column {', '.join(map(repr, unknown))} in the header")
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise BadRequestError(f"column {', '.join(map(repr, repeated))} appears more than once in the header")
    return names


def _rows(reader: Iterable[list[str]], header: list[str], query_app: str) -> Iterator[dict[str, str]]:
    width = len(header)
    for number, row in enumerate(reader, 1):
        if len(row) != width:
            raise BadRequestError(f"row {number} has {len(row)} cells; the header names {width} columns")
        if number > MAX_ROWS_PER_REQUEST:
            raise BadRequestError(
                f"more than {MAX_ROWS_PER_REQUEST} rows; the Post API takes at most {MAX_ROWS_PER_REQUEST} per request"
            )
        # Widths were compared above, so zip need not check them; compress() drops empty cells in C.
        event = dict(compress(zip(header, row, strict=False), row))
        if query_app:
            row_app = event.setdefault("application_id", query_app)
            if row_app != query_app:
                raise BadRequestError(
                    f"row {number}: application_id {row_app!r} disagrees with the query's application_id {query_app!r}"
                )
        yield event
