"""Decoded records to Post API rows, every documented rule checked before a row may cost a request.

`bridge.postapi.check_event` is the one judge of the rules, on strings. Records decoded into the contract
already have typed values (longs, ints, strings), so `RowMaker.table` clears a chunk of records column by column
with C-level built-ins (min, max, all, set inclusion); only records a column test cannot clear are judged one by
one by `check_event`, which names the broken rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter, xor
from typing import Any, Final, NamedTuple, cast

from bridge.postapi import (
    EVENT_COLUMNS,
    INT64_MAX,
    MAX_EVENT_AGE_S,
    MILLISECONDS_THRESHOLD,
    SESSION_TYPES,
    Violation,
    check_event,
    json_object_problem,
    json_objects,
)

Values = tuple[str, ...]
"""One row's cells in `EVENT_COLUMNS` order, `""` where the record has no value."""

_APPLICATION: Final = EVENT_COLUMNS.index("application_id")
_PROFILE: Final = EVENT_COLUMNS.index("profile_id")
_DEVICE: Final = EVENT_COLUMNS.index("appmetrica_device_id")
_NAME: Final = EVENT_COLUMNS.index("event_name")
_TIMESTAMP: Final = EVENT_COLUMNS.index("event_timestamp")
_JSON: Final = EVENT_COLUMNS.index("event_json")
_SESSION: Final = EVENT_COLUMNS.index("session_type")
_MCC: Final = EVENT_COLUMNS.index("mcc")
_MNC: Final = EVENT_COLUMNS.index("mnc")
_NUMBERS: Final = frozenset({_APPLICATION, _TIMESTAMP, _MCC, _MNC})
"""Columns the contract types as numbers; every other one is a string."""
_fields: Final = itemgetter(*EVENT_COLUMNS)
_getters: Final = tuple(map(itemgetter, EVENT_COLUMNS))
_SESSION_CELLS: Final = frozenset({None, "", *SESSION_TYPES})


class Row(NamedTuple):
    application_id: int
    values: Values


class Table(NamedTuple):
    """The rows of a chunk of records, column by column, with the records that broke a rule."""

    applications: list[int | None]
    """Each record's application, or None where it broke a rule."""
    columns: list[list[str]]
    """One list of cells per `EVENT_COLUMNS` entry, a cell per record, `""` where there is no value; the cells of
    a record that broke a rule are meaningless."""
    violations: dict[int, Violation]
    """By the record's position."""


class RowMaker:
    """Turns contract records into rows: timestamps to seconds, the default application filled in."""

    def __init__(
        self,
        default_application_id: int | None,
        has_key: Callable[[int], bool],
        max_future_s: float,
    ) -> None:
        self._default = default_application_id
        self._has_key = has_key
        self._max_future_s = max_future_s

    def make(self, record: dict[str, Any], now: float) -> Row | Violation:
        """The row for one record, or the rule it breaks, judged by `check_event`."""
        fields = _fields(record)
        application = fields[_APPLICATION]
        if application is None:
            if self._default is None:
                return Violation("invalid", "application_id is missing and post_api.application_id is not set")
            application = self._default
        millis = fields[_TIMESTAMP]
        cells = ["" if value is None else str(value) for value in fields]
        cells[_APPLICATION] = str(application)
        # Floor, not round: an event never moves later than it happened.
        cells[_TIMESTAMP] = str(millis // 1000) if isinstance(millis, int) else ""
        violation = check_event(dict(zip(EVENT_COLUMNS, cells, strict=True)), now, self._max_future_s)
        if violation is not None:
            return violation
        if not self._has_key(application):
            return Violation("invalid", f"no Post API key is configured for application {application}")
        return Row(application, tuple(cells))

    def table(self, records: Sequence[dict[str, Any]], now: float) -> Table:
        """The rows of `records` in their order; what a column test cannot clear goes through `make`."""
        count = len(records)
        if not count:
            return Table([], [[] for _ in EVENT_COLUMNS], {})
        typed = [list(map(get, records)) for get in _getters]
        applications: list[int | None] = typed[_APPLICATION]
        if self._default is not None and None in applications:
            default = self._default
            applications = [default if a is None else a for a in applications]
        stamps = typed[_TIMESTAMP]
        # Contract records always have one; a mapped record may not, and -1 leaves it to `make` to name.
        seconds = [-1 if m is None else m // 1000 for m in stamps] if None in stamps else [m // 1000 for m in stamps]
        doubtful = self._doubtful(typed, applications, seconds, now)
        typed[_APPLICATION], typed[_TIMESTAMP] = applications, seconds
        columns = [_cells(column, index in _NUMBERS, count) for index, column in enumerate(typed)]
        violations: dict[int, Violation] = {}
        for position in sorted(doubtful):
            made = self.make(records[position], now)
            if isinstance(made, Violation):
                violations[position] = made
                applications[position] = None
                continue
            applications[position] = made.application_id
            for column, cell in zip(columns, made.values, strict=True):
                column[position] = cell
        return Table(applications, columns, violations)

    def _doubtful(
        self, typed: list[list[Any]], applications: list[int | None], seconds: list[int], now: float
    ) -> set[int]:
        """Positions of the records a column test cannot clear; each test looks record by record only on failure."""
        doubtful: set[int] = set()
        if None in applications:
            doubtful.update(_where(applications, lambda a: a is None or not 0 < a <= INT64_MAX))
        else:
            known = cast(list[int], applications)
            if min(known) <= 0 or max(known) > INT64_MAX:
                doubtful.update(_where(known, lambda a: not 0 < a <= INT64_MAX))
        if not all(self._has_key(a) for a in set(applications) if a is not None):
            doubtful.update(_where(applications, lambda a: a is not None and not self._has_key(a)))
        oldest, newest = max(0, now - MAX_EVENT_AGE_S), min(now + self._max_future_s, MILLISECONDS_THRESHOLD)
        if min(seconds) < oldest or max(seconds) > newest:
            doubtful.update(_where(seconds, lambda s: not oldest <= s <= newest))
        if not all(typed[_NAME]):
            doubtful.update(_where(typed[_NAME], lambda name: not name))
        profiles, devices = typed[_PROFILE], typed[_DEVICE]
        if not all(map(xor, map(bool, profiles), map(bool, devices))):
            doubtful.update(_where(zip(profiles, devices, strict=True), lambda pair: bool(pair[0]) == bool(pair[1])))
        if any(devices) and not all(map(_decimal, filter(None, devices))):
            doubtful.update(_where(devices, lambda device: bool(device) and not _decimal(device)))
        for index in (_MCC, _MNC):
            column = typed[index]
            if column.count(None) != len(column) and min(v for v in column if v is not None) < 0:
                doubtful.update(_where(column, lambda v: v is not None and v < 0))
        if not _SESSION_CELLS.issuperset(typed[_SESSION]):
            doubtful.update(_where(typed[_SESSION], lambda session: session not in _SESSION_CELLS))
        texts = typed[_JSON]
        if any(texts) and not json_objects([text for text in texts if text]):
            doubtful.update(p for p, text in enumerate(texts) if text and json_object_problem(text) is not None)
        return doubtful


def _cells(column: list[Any], numbers: bool, count: int) -> list[str]:
    """A typed column as cells: `""` for no value, decimal text for numbers."""
    nones = column.count(None)
    if nones == count:
        return [""] * count
    if numbers:
        return ["" if value is None else str(value) for value in column] if nones else list(map(str, column))
    return ["" if value is None else value for value in column] if nones else column


def _decimal(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _where(values: Any, broken: Callable[[Any], bool]) -> list[int]:
    return [position for position, value in enumerate(values) if broken(value)]
