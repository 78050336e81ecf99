"""The work past fetching, as one pure function over a chunk of record values: decode, make rows, encode CSV lines.

The pipeline runs it in worker processes (`transform.workers`), or calls it in its own process when that is 0.
Arguments and answer cross a process boundary, so both stay small to pickle: values in; CSV lines as bytes and
small ints out, never the decoded records or rows.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import threading
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Final, Literal, NamedTuple

from bridge.decoding.alone import alone, decode_each, unexpected
from bridge.decoding.avro import Readers, ReasonClass, WriterSchemas
from bridge.decoding.reading import Reading, RecordReaders
from bridge.mapping import Headers
from bridge.postapi import csv_body as csvbody
from bridge.postapi.methods import METHODS, MethodName
from bridge.postapi.rows import RowMaker, Table

Failure = tuple[ReasonClass | Literal["invalid", "expired"], str]
"""A record's dead-letter reason class and a readable detail."""

FAILED: Final = -1
"""The group index of a record that made no row."""

_READERS: Final = Readers()
"""Parsed schemas live as long as the process, so a worker parses each writer schema once."""
_RECORD_READERS: Final = RecordReaders()
"""The same for routes with their own records: writer schemas and compiled mappings."""


@dataclass(frozen=True, slots=True)
class Rules:
    """What making rows needs besides the records; picklable, so it travels with every chunk."""

    default_application: int | None
    keyed: frozenset[int] | None
    """Applications with a Post API key; None when a default key serves every application."""
    max_future_s: float

    def has_key(self, application: int) -> bool:
        return self.keyed is None or application in self.keyed


class Transformed(NamedTuple):
    """A chunk's outcome, record by record in the chunk's order."""

    groups: list[tuple[MethodName, int, bytes]]
    """(method, application_id, CSV header line) of each group: the rows of one application, encoded over the
    columns any of them uses; the batch key of its lines."""
    placed: array[int]
    """Each record's group index, or FAILED."""
    lines: list[bytes]
    """Each record's CSV line; empty for a failed record."""
    failures: dict[int, Failure]
    """By the record's index in the chunk."""


def transform(
    values: Sequence[bytes | None],
    now: float,
    rules: Rules,
    schemas: WriterSchemas,
    method_name: MethodName,
    reading: Reading | None = None,
    keys: Sequence[bytes | None] | None = None,
    headers: Sequence[Headers | None] | None = None,
) -> Transformed:
    """Decode each value into `method_name`'s contract, make its row (or name the rule it breaks), and encode the
    rows to CSV lines.

    A route's `reading` (its format and mapping) turns values into the contract's values instead; the Kafka keys
    and headers are passed only for a reading that uses them.

    A record is judged alone: whatever one record makes the reader, the mapping, the row maker or the encoder raise
    fails that record, with the exception named, and never its neighbours or the chunk.
    """
    method = METHODS[method_name]
    maker = RowMaker(method, rules.default_application, rules.has_key, rules.max_future_s)
    if reading is not None:
        read = _RECORD_READERS.read(reading, values, schemas, keys, headers)
        failures: dict[int, Failure] = dict(read.failures)
        mapped = read.columns
        count = len(read.indexes)
        table, kept, unmade = alone(
            lambda some: maker.table_of(mapped if len(some) == count else _pick(mapped, some), now), range(count)
        )
        indexes = read.indexes
    else:
        table, indexes, kept, unmade, failures = _contract_table(values, schemas, method_name, maker, now)
    for position, why in unmade.items():
        failures[indexes[position]] = ("invalid", unexpected("making its row", why))
    indexes = [indexes[position] for position in kept]
    records = len(kept)
    for position, violation in table.violations.items():
        failures[indexes[position]] = (violation.reason, violation.detail)
    by_application: dict[int, list[int]] = {}
    for position, application in enumerate(table.applications):
        if application is not None:
            by_application.setdefault(application, []).append(position)
    groups: list[tuple[MethodName, int, bytes]] = []
    placed = array("i", [FAILED]) * len(values)
    lines = [b""] * len(values)
    columns = table.columns
    for application, positions in by_application.items():
        encoded, kept, unencoded = alone(
            lambda some: csvbody.lines(columns if len(some) == records else _pick(columns, some)), positions
        )
        for at, why in unencoded.items():
            failures[indexes[positions[at]]] = ("invalid", unexpected("encoding it as CSV", why))
        used, group_lines = encoded
        group = len(groups)
        groups.append((method_name, application, csvbody.header(method.names, used)))
        for at, line in zip(kept, group_lines, strict=True):
            index = indexes[positions[at]]
            placed[index] = group
            lines[index] = line
    return Transformed(groups, placed, lines, failures)


def _contract_table(
    values: Sequence[bytes | None], schemas: WriterSchemas, method_name: MethodName, maker: RowMaker, now: float
) -> tuple[Table, list[int], Sequence[int], dict[int, Exception], dict[int, Failure]]:
    """The values decoded into the method's contract and made into rows, each record judged alone: the table,
    each decoded record's index in the chunk, which of them the table holds, why the rest made no row, and the
    failures of the values that did not decode."""
    decoded, indexes, decode_failures = decode_each(values, _READERS.values_decoder(schemas, method_name))
    failures: dict[int, Failure] = dict(decode_failures)
    width = len(METHODS[method_name].names)
    # Each record's values come in the order of the method's parameters: transposed, they are the table's columns.
    table, kept, unmade = alone(lambda records: maker.table_of(_columns(records, width), now), decoded)
    return table, indexes, kept, unmade, failures


def _columns(records: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Records' values as columns."""
    if not records:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*records, strict=True)]


def _pick(columns: list[list[Any]], positions: Sequence[int]) -> list[list[Any]]:
    """The cells at `positions` of every column."""
    return [[column[p] for p in positions] for column in columns]


GC_THRESHOLDS: Final = (20_000, 20, 20)
"""Young collections every 20,000 allocations instead of 700; older generations as rarely, relative to them."""


def collect_rarely() -> None:
    """Freeze what start-up built (never garbage, so no collection walks it again) and collect cycles rarely.

    The hot path allocates several containers per record and makes no cycles: reference counting frees them. At
    the default thresholds the cycle collector ran every 700 of them, about a tenth of a transform's time.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def start_worker() -> None:
    """A worker's initializer: leave shutdown to the bridge, end with the bridge even when it is killed, collect rarely.

    A terminal's Ctrl-C, or an init that forwards SIGTERM to the process group, reaches the workers too; one that
    died of it mid-chunk would break the pool and fail the bridge instead of letting it drain. So both are ignored
    here: the bridge drains, then shuts the pool down and kills the workers still running (SIGKILL). A pool's
    workers wait for work forever, so a bridge killed with SIGKILL would leave them behind: the parent-watch
    thread ends a worker whose bridge is gone.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    collect_rarely()
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_after, args=(parent.sentinel,), name="parent-watch", daemon=True).start()


def _exit_after(sentinel: int) -> None:
    wait([sentinel])
    os._exit(1)
