"""Decoded records to Post API rows of one method, every declared rule checked before a row may cost a request.

A record is a dict keyed by every one of the method's Post API parameter names (`Method.names`), with the values
its Avro contract decodes to, logical types dropped: timestamp-millis as int milliseconds, a decimal as its
unscaled two's-complement bytes at scale 8, arrays as lists, strings and longs as they are, None for absent.
Contract records are that already; mappings (`routes[].mapping`) build the same.

`RowMaker.table` turns a chunk of records into cells column by column (`Kind.cells`), lets the method's column
tests clear them (`Method.doubtful`), and judges only the rest one by one with `Method.verdict`, which names the
broken rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, Final, NamedTuple

from bridge.postapi.methods import Method, Window
from bridge.postapi.rules import INT64_MAX, Violation

_NO_DEFAULT: Final = "application_id is missing and post_api.application_id is not set"


class Row(NamedTuple):
    application_id: int
    values: tuple[str, ...]
    """The cells in `Method.names` order, `""` where the record has no value."""


class Table(NamedTuple):
    """The rows of a chunk of records, column by column, with the records that broke a rule."""

    applications: list[int | None]
    """Each record's application, or None where it broke a rule."""
    columns: list[list[str]]
    """One list of cells per `Method.names` entry, a cell per record, `""` where there is no value; the cells of a
    record that broke a rule are meaningless."""
    violations: dict[int, Violation]
    """By the record's position."""


class RowMaker:
    """Turns one method's records into rows: timestamps to seconds, amounts to text, the default application filled."""

    def __init__(
        self,
        method: Method,
        default_application_id: int | None,
        has_key: Callable[[int], bool],
        max_future_s: float,
    ) -> None:
        self._method = method
        self._default = default_application_id
        self._has_key = has_key
        self._max_future_s = max_future_s
        self._getters = tuple(map(itemgetter, method.names))
        self._application = method.names.index("application_id")

    def make(self, record: dict[str, Any], now: float) -> Row | Violation:
        """The row of one record, or the rule it breaks."""
        table = self.table([record], now)
        application = table.applications[0]
        if application is None:
            return table.violations[0]
        return Row(application, tuple(column[0] for column in table.columns))

    def table(self, records: Sequence[dict[str, Any]], now: float) -> Table:
        """The rows of `records` in their order; what the column tests cannot clear is judged row by row."""
        return self.table_of([list(map(get, records)) for get in self._getters], now)

    def table_of(self, typed: list[list[Any]], now: float) -> Table:
        """The same from the records' values by column, one list per `Method.names` entry (a mapping's output)."""
        method = self._method
        count = len(typed[0])
        if not count:
            return Table([], [[] for _ in method.names], {})
        window = Window(now, self._max_future_s)
        applications: list[int | None] = typed[self._application]
        if self._default is not None and None in applications:
            default = self._default
            applications = [default if a is None else a for a in applications]
        typed[self._application] = applications
        columns = [column.kind.cells(values) for column, values in zip(method.columns, typed, strict=True)]
        violations: dict[int, Violation] = {}
        for index in method.lossy:
            unencodable = method.columns[index].kind.unencodable
            for position, value in enumerate(typed[index]):
                why = unencodable(value)
                if why is not None:
                    violations.setdefault(position, Violation("invalid", f"{method.names[index]} {why}"))
        doubtful = method.doubtful(dict(zip(method.names, columns, strict=True)), window)
        if doubtful is None:
            doubtful = set(range(count))
        doubtful.difference_update(violations)
        keyed = {a for a in set(applications) if a is not None and 0 < a <= INT64_MAX}
        if not all(map(self._has_key, keyed)):
            doubtful.update(p for p, a in enumerate(applications) if a in keyed and not self._has_key(a))
        for position in sorted(doubtful):
            violation = self._judge(columns, position, window)
            if violation is not None:
                violations[position] = violation
        for position in violations:
            applications[position] = None
        return Table(applications, columns, violations)

    def _judge(self, columns: list[list[str]], position: int, window: Window) -> Violation | None:
        cells = {name: column[position] for name, column in zip(self._method.names, columns, strict=True)}
        if not cells["application_id"]:
            # Only a record that carries none with no default to fill in: named apart, as the fix is the config.
            return Violation("invalid", _NO_DEFAULT)
        violation = self._method.verdict(cells, window)
        if violation is not None:
            return violation
        application = int(cells["application_id"])
        if not self._has_key(application):
            return Violation("invalid", f"no Post API key is configured for application {application}")
        return None
