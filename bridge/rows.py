"""Decoded records to Post API rows, every documented rule checked before a row may cost a request.

`bridge.postapi.check_event` is the one judge of the rules, on strings. Records decoded into the contract
already have typed values (longs, ints, strings), so a typed test clears an obviously good record without the
string round trip; any record it does not clear is judged by `check_event`, which names the broken rule.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any, Final, NamedTuple

from bridge.postapi import EVENT_COLUMNS, MAX_EVENT_AGE_S, SESSION_TYPES, Violation, check_event, json_object_problem

Values = tuple[str, ...]
"""One row's cells in `EVENT_COLUMNS` order, `""` where the record has no value."""

_APPLICATION: Final = EVENT_COLUMNS.index("application_id")
_TIMESTAMP: Final = EVENT_COLUMNS.index("event_timestamp")
_MCC: Final = EVENT_COLUMNS.index("mcc")
_MNC: Final = EVENT_COLUMNS.index("mnc")
_fields: Final = itemgetter(*EVENT_COLUMNS)
_INT64_MAX: Final = (1 << 63) - 1


class Row(NamedTuple):
    application_id: int
    values: Values


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
        """The row for one record, or the rule it breaks."""
        fields = _fields(record)
        application = fields[_APPLICATION]
        if application is None:
            if self._default is None:
                return Violation("invalid", "application_id is missing and post_api.application_id is not set")
            application = self._default
        millis = fields[_TIMESTAMP]
        # Floor, not round: an event never moves later than it happened.
        seconds = millis // 1000 if isinstance(millis, int) else None
        cells = ["" if value is None else value for value in fields]
        cells[_APPLICATION] = str(application)
        cells[_TIMESTAMP] = "" if seconds is None else str(seconds)
        mcc, mnc = fields[_MCC], fields[_MNC]
        if mcc is not None:
            cells[_MCC] = str(mcc)
        if mnc is not None:
            cells[_MNC] = str(mnc)
        if not self._plainly_valid(record, application, seconds, now):
            violation = check_event(dict(zip(EVENT_COLUMNS, cells, strict=True)), now, self._max_future_s)
            if violation is not None:
                return violation
        if not self._has_key(application):
            return Violation("invalid", f"no Post API key is configured for application {application}")
        return Row(application, tuple(cells))

    def _plainly_valid(self, record: dict[str, Any], application: Any, seconds: int | None, now: float) -> bool:
        """True only for a record that surely passes `check_event`; False means "let check_event judge"."""
        if seconds is None or seconds < 0 or not 0 < application <= _INT64_MAX:
            return False
        if now - seconds > MAX_EVENT_AGE_S or seconds - now > self._max_future_s:
            return False
        if not record["event_name"]:
            return False
        profile, device = record["profile_id"], record["appmetrica_device_id"]
        if bool(profile) == bool(device) or (device and not (device.isascii() and device.isdigit())):
            return False
        for name in ("mcc", "mnc"):
            value = record[name]
            if value is not None and value < 0:
                return False
        session = record["session_type"]
        if session and session not in SESSION_TYPES:
            return False
        event_json = record["event_json"]
        return not event_json or json_object_problem(event_json) is None
