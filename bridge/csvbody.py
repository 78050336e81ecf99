"""Rows to the CSV body of one `events.csv` request: a header of the columns in use, then one line per row (RFC 4180).

Rows are encoded to lines where they are made (a transform worker), and a request's body is its header line and
its lines joined: a batch only ever holds lines encoded with one set of columns.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from operator import itemgetter

from bridge.postapi import EVENT_COLUMNS
from bridge.rows import Values

CONTENT_TYPE = "text/csv; charset=UTF-8"


class _Lines(list[str]):
    """A csv.writer target that keeps each row's line apart: the writer makes one write call per row."""

    write = list.append


def columns_in_use(rows: Sequence[Values]) -> tuple[int, ...]:
    """The indexes of the columns some row has a value in: the API reads an absent column as no value."""
    return tuple(i for i, column in enumerate(zip(*rows, strict=True)) if any(column))


def header(columns: Sequence[int]) -> bytes:
    """The header line naming `columns`."""
    return (",".join(EVENT_COLUMNS[i] for i in columns) + "\r\n").encode("utf-8")


def lines(rows: Sequence[Values], columns: Sequence[int]) -> list[bytes]:
    """Each row's CSV line over `columns`: UTF-8, CRLF line ends, quoting only the cells that need it."""
    sink = _Lines()
    # A row always has application_id, event_name and event_timestamp, so itemgetter picks tuples, never one cell.
    csv.writer(sink, lineterminator="\r\n").writerows(map(itemgetter(*columns), rows))
    return [line.encode("utf-8") for line in sink]
