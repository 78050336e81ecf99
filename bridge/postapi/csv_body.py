"""Rows to the CSV body of one `<method>.csv` request: a header of the columns in use, then one line per row (RFC 4180).

Rows are encoded to lines where they are made (a transform worker), and a request's body is its header line and
its lines joined: a batch only ever holds lines encoded with one set of columns.

Encoding works column by column, as rows are made: a column with no character that needs quoting (most of them)
is joined as it is, and only the cells of the other columns are looked at one by one. The `csv` module writes
row by row and costs about twice as much per row.
"""

from __future__ import annotations

from collections.abc import Sequence

CONTENT_TYPE = "text/csv; charset=UTF-8"


def header(names: Sequence[str], columns: Sequence[int]) -> bytes:
    """The header line naming `columns`, indexes into a method's parameter `names`."""
    return (",".join(names[i] for i in columns) + "\r\n").encode("utf-8")


def lines(columns: Sequence[Sequence[str]]) -> tuple[tuple[int, ...], list[bytes]]:
    """The indexes of the columns some row has a value in, and each row's line over them.

    `columns` holds one sequence of cells per parameter of the method (`Method.names`), `""` for no value: the API
    reads an absent column as no value. Lines are UTF-8 with CRLF ends, quoting only the cells that need it.
    """
    used = tuple(i for i, column in enumerate(columns) if any(column))
    if not used:
        return used, []
    cells = [_quoted(columns[i]) for i in used]
    # The line end rides on the last cell, so each line is one join and one encode.
    cells[-1] = [cell + "\r\n" for cell in cells[-1]]
    return used, list(map(str.encode, map(",".join, zip(*cells, strict=True))))


def _quoted(column: Sequence[str]) -> Sequence[str]:
    joined = "".join(column)
    if '"' in joined or "," in joined or "\n" in joined or "\r" in joined:
        return [
            '"' + cell.replace('"', '""') + '"' if '"' in cell or "," in cell or "\n" in cell or "\r" in cell else cell
            for cell in column
        ]
    return column
