"""A batch of rows to the CSV body of one `events.csv` request: a header of the columns in use, RFC 4180."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from operator import itemgetter

from bridge.postapi import EVENT_COLUMNS
from bridge.rows import Values

CONTENT_TYPE = "text/csv; charset=UTF-8"


def encode(rows: Sequence[Values]) -> bytes:
    """UTF-8 CSV with CRLF line ends, quoting only the cells that need it; empty columns are left out."""
    used = [i for i, column in enumerate(zip(*rows, strict=True)) if any(column)]
    pick = itemgetter(*used)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([EVENT_COLUMNS[i] for i in used])
    writer.writerows(map(pick, rows))
    return buffer.getvalue().encode("utf-8")
