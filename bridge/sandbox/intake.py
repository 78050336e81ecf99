"""Reading an import request of one method into rows, and refusing it with the reason its 400 carries.

The judge is the method as the Post API pages document it (``documented``), never the bridge's own declaration. A
CSV body is judged column by column first (``CsvBatch``, by ``Documented.clears``): a few passes over its columns
clear a whole request. Whatever the column tests cannot clear is read and checked row by row with
``Documented.verdict``, so a refusal names the same row and rule.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Iterable, Iterator, Sequence
from itertools import chain, compress, islice
from typing import Final, Protocol

from multidict import MultiMapping

from bridge.postapi.methods import Method, Window
from bridge.postapi.rules import MAX_BODY_BYTES, MAX_ROWS_PER_REQUEST
from bridge.sandbox.documented import DOCUMENTED, Documented

_CSV_QUERY_PARAMETERS = frozenset({"post_api_key", "application_id"})
_BOM: Final = "\ufeff".encode()
_CHUNK_ROWS: Final = 300
"""Rows read at a time: fewer than the garbage collector's first threshold (700 new containers)."""

# The csv module refuses a cell over 128 KiB by default; the Post API documents no limit below a body's own.
csv.field_size_limit(MAX_BODY_BYTES)


class BadRequestError(Exception):
    """The request breaks a Post API rule; the message is the 400's text."""


class Batch(Protocol):
    """The rows of one import request, judged as a whole."""

    def __len__(self) -> int: ...

    def application_ids(self) -> set[str]:
        """Each row's application_id as received, ``""`` for none: what the key check looks at."""
        ...

    def check(self, window: Window, refused: Collection[str]) -> None:
        """Raise BadRequestError naming the first bad row, as ``check_rows`` does; return if every row is fine.

        ``refused`` holds values of the method's label column (``Method.label``) refused on request.
        """
        ...

    def events(self) -> list[dict[str, str]]:
        """The rows in order, column -> value, empty cells omitted."""
        ...


class EventBatch:
    """Rows already read into dicts, judged row by row."""

    def __init__(self, method: Method, events: list[dict[str, str]], numbered: bool) -> None:
        self._method = method
        self._events = events
        self._numbered = numbered

    def __len__(self) -> int:
        return len(self._events)

    def application_ids(self) -> set[str]:
        """Each event's application_id as received, ``""`` for none."""
        return {event.get("application_id", "") for event in self._events}

    def check(self, window: Window, refused: Collection[str]) -> None:
        """Refuse the batch at its first bad row; see ``check_rows``."""
        check_rows(self._method, self._events, window, refused, self._numbered)

    def events(self) -> list[dict[str, str]]:
        """The events as read."""
        return self._events


class CsvBatch:
    """The rows of a ``<method>.csv`` body that ``read_csv_form`` takes, kept as columns.

    Rows are built only when asked for, or when a column test cannot clear the batch and each row must be
    judged by ``Documented.verdict``.
    """

    def __init__(self, method: Method, header: list[str], columns: dict[str, list[str]], query_app: str) -> None:
        self._method = method
        self._header = header
        self._columns = columns
        self._query_app = query_app
        self._events: list[dict[str, str]] | None = None

    def __len__(self) -> int:
        return len(self._columns[self._header[0]])

    def application_ids(self) -> set[str]:
        """Each row's application_id as received, the query's filling rows that have none."""
        if self._query_app:
            # Reading made every non-empty cell agree with the query.
            return {self._query_app}
        return set(self._columns.get("application_id", [""]))

    def check(self, window: Window, refused: Collection[str]) -> None:
        """Refuse the batch at its first bad row, judged row by row only when the column tests cannot clear it."""
        if not self.cleared(window, refused):
            check_rows(self._method, self.events(), window, refused, numbered=True)

    def events(self) -> list[dict[str, str]]:
        """The events ``read_csv_form`` reads from the same body."""
        if self._events is None:
            events = [_event(self._header, row) for row in zip(*self._columns.values(), strict=True)]
            if self._query_app:
                for event in events:
                    event.setdefault("application_id", self._query_app)
            self._events = events
        return self._events

    def cleared(self, window: Window, refused: Collection[str]) -> bool:
        """The column tests: True only if the method takes every row and no row carries a refused label.

        False says nothing about the rows: ``check`` then judges them one by one.
        """
        columns = self._columns
        if self._query_app:
            given = columns.get("application_id")
            filled = [self._query_app] * len(self) if given is None else [c or self._query_app for c in given]
            columns = {**columns, "application_id": filled}
        labels = columns.get(self._method.label)
        if refused and labels is not None and not set(labels).isdisjoint(refused):
            return False
        return DOCUMENTED[self._method.name].clears(columns, window.now, window.max_future_s)


def read_query_form(method: Method, query: MultiMapping[str], body: bytes) -> list[dict[str, str]]:
    """The one row that ``POST <method>?…`` carries in its query, empty values omitted."""
    if body:
        raise BadRequestError(
            f"the {method.name} method takes its row in query parameters and an empty body; "
            f"send CSV to {method.name}.csv"
        )
    _refuse_repeated(query)
    return [{name: value for name, value in query.items() if value and name != "post_api_key"}]


def read_query_batch(method: Method, query: MultiMapping[str], body: bytes) -> Batch:
    """``read_query_form``'s row as a batch; its refusals name no row."""
    return EventBatch(method, read_query_form(method, query, body), numbered=False)


def read_csv_form(method: Method, query: MultiMapping[str], body: bytes) -> list[dict[str, str]]:
    """The rows of a ``POST <method>.csv`` body (RFC 4180, UTF-8), empty cells omitted.

    A query ``application_id`` fills rows that have none and must agree with rows that have one. This is the
    row-by-row reading: the server answers through ``read_csv_batch``, which must read every body the same way.
    An empty body with the row in the query is the query form, as the pages' own revenue sample posts it.
    """
    if _query_row(query, body):
        return read_query_form(method, query, body)
    body = _tidy(body)
    return _read_events(method, body, _csv_query_app(method, query, body))


def read_csv_batch(method: Method, query: MultiMapping[str], body: bytes) -> Batch:
    """What ``read_csv_form`` reads from the same request, or the same refusal, as a batch to check."""
    if _query_row(query, body):
        return read_query_batch(method, query, body)
    body = _tidy(body)
    query_app = _csv_query_app(method, query, body)
    read = _read_columns(method, body, query_app)
    if read is None:
        return EventBatch(method, _read_events(method, body, query_app), numbered=True)
    return CsvBatch(method, *read, query_app)


def check_rows(
    method: Method, events: Iterable[dict[str, str]], window: Window, refused: Collection[str], numbered: bool
) -> None:
    """Refuse the whole batch at its first bad row; ``numbered`` names rows from 1 after the header.

    A row is bad when the documented method refuses it, or when its label is refused.
    """
    label = method.label
    documented: Documented = DOCUMENTED[method.name]
    for number, event in enumerate(events, 1):
        problem = documented.verdict(event, window.now, window.max_future_s)
        if problem is not None:
            reason = problem
        elif refused and event.get(label) in refused:
            reason = f"{label} {event[label]!r} is refused by this sandbox"
        else:
            continue
        raise BadRequestError(f"row {number}: {reason}" if numbered else reason)


def _query_row(query: MultiMapping[str], body: bytes) -> bool:
    """Whether a ``.csv`` request is the query form: no body, and parameters beyond the key and application."""
    return not body and any(name not in _CSV_QUERY_PARAMETERS for name in query)


def _tidy(body: bytes) -> bytes:
    """The body without a UTF-8 byte order mark and without blank lines at its end, which spreadsheets write."""
    body = body.removeprefix(_BOM)
    stripped = body.rstrip(b"\r\n")
    return stripped + b"\n" if stripped and len(stripped) < len(body) else body


def _refuse_repeated(query: MultiMapping[str]) -> None:
    if len(query) != len(set(query)):
        repeated = sorted({name for name in query if len(query.getall(name)) > 1})
        raise BadRequestError(f"parameter {', '.join(map(repr, repeated))} is given more than once")


def _csv_query_app(method: Method, query: MultiMapping[str], body: bytes) -> str:
    """The query's application_id (``""`` for none), once the query and the body's presence pass."""
    unknown = [name for name in query if name not in _CSV_QUERY_PARAMETERS]
    if unknown:
        raise BadRequestError(
            f"query parameter {', '.join(map(repr, unknown))} is not taken with a CSV body; send it as a column"
        )
    _refuse_repeated(query)
    if not body:
        raise BadRequestError(f"the body is empty; {method.name}.csv takes a header line and one row per record")
    return query.get("application_id", "")


def _read_events(method: Method, body: bytes, query_app: str) -> list[dict[str, str]]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = _header(method, next(reader))
        events = list(_rows(reader, header, query_app))
    except csv.Error as exc:
        raise BadRequestError(f"line {reader.line_num}: malformed CSV: {exc}") from None
    if not events:
        raise BadRequestError("the body has a header line but no rows")
    return events


def _read_columns(method: Method, body: bytes, query_app: str) -> tuple[list[str], dict[str, list[str]]] | None:
    """The header and columns of the rows ``_read_events`` would read from ``body``.

    None wherever it might refuse the body or read it otherwise: the caller then reads it row by row.
    """
    # bytes.splitlines() ends lines where io.StringIO(newline="") does (CR, LF, CRLF), and UTF-8 decodes line by
    # line as it does whole, so the reader gets the very lines _read_events gives it, at a fraction of the cost.
    reader = csv.reader(map(bytes.decode, body.splitlines(keepends=True)), strict=True)
    try:
        header = next(reader, [])
        width = len(header)
        if not (width and DOCUMENTED[method.name].parameters.keys() >= set(header) and len(set(header)) == width):
            return None
        cells: list[str] = []
        widths: set[int] = set()
        rows = 0
        # A few hundred rows at a time into one flat list: a list per row kept to the end would cost the garbage
        # collector and the memory more than the reading.
        while chunk := list(islice(reader, _CHUNK_ROWS)):
            rows += len(chunk)
            if rows > MAX_ROWS_PER_REQUEST:
                return None
            widths.update(map(len, chunk))
            cells.extend(chain.from_iterable(chunk))
    except (csv.Error, UnicodeDecodeError):
        return None
    if widths != {width}:
        return None
    columns = {name: cells[index::width] for index, name in enumerate(header)}
    if query_app and not {"", query_app}.issuperset(columns.get("application_id", [])):
        return None
    return header, columns


def _header(method: Method, names: list[str]) -> list[str]:
    if not names:
        raise BadRequestError("the header line is empty")
    unknown = [name for name in names if name not in DOCUMENTED[method.name].parameters]
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
        event = _event(header, row)
        if query_app:
            row_app = event.setdefault("application_id", query_app)
            if row_app != query_app:
                raise BadRequestError(
                    f"row {number}: application_id {row_app!r} disagrees with the query's application_id {query_app!r}"
                )
        yield event


def _event(header: list[str], row: Sequence[str]) -> dict[str, str]:
    """One row's cells by column, empty ones left out; the row is as wide as the header."""
    # Widths are equal, so zip need not check them; compress() drops empty cells in C.
    return dict(compress(zip(header, row, strict=False), row))
