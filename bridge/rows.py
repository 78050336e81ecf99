"""Decoded records to Post API rows, every documented rule checked before a row may cost a request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NamedTuple

from bridge.postapi import EVENT_COLUMNS, Violation, check_event

Values = tuple[str, ...]
"""One row's cells in `EVENT_COLUMNS` order, `""` where the record has no value."""

_TIMESTAMP: Final = EVENT_COLUMNS.index("event_timestamp")
_APPLICATION: Final = EVENT_COLUMNS.index("application_id")


class Row(NamedTuple):
    application_id: int
    values: Values


def _cell(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


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
        cells = [_cell(record.get(name)) for name in EVENT_COLUMNS]
        millis = record.get("event_timestamp")
        if isinstance(millis, int):
            # Floor, not round: an event never moves later than it happened.
            cells[_TIMESTAMP] = str(millis // 1000)
        application = record.get("application_id")
        if application is None:
            if self._default is None:
                return Violation("invalid", "application_id is missing and post_api.application_id is not set")
            application = self._default
            cells[_APPLICATION] = str(application)
        violation = check_event(dict(zip(EVENT_COLUMNS, cells, strict=True)), now, self._max_future_s)
        if violation is not None:
            return violation
        if not self._has_key(application):
            return Violation("invalid", f"no Post API key is configured for application {application}")
        return Row(application, tuple(cells))
