"""Judging records alone: a chunk's work tried whole, and one record at a time only when the whole raised.

The stages run column-wise over a chunk, so one hostile record would otherwise fail its neighbours too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from bridge.decoding.avro import DecodeError, ReasonClass

T = TypeVar("T")
R = TypeVar("R")

DETAIL_TEXT: Final = 200
"""Characters of an unexpected exception's text a detail keeps: some exceptions quote the whole value."""


def alone(work: Callable[[Sequence[T]], R], items: Sequence[T]) -> tuple[R, Sequence[int], dict[int, Exception]]:
    """`work` over `items`, or, when that raises, over the items that do not raise when tried one by one.

    Returns what `work` gave, the positions of the items it was given, and the exception of each item left out.
    The try costs nothing while no item raises, so the column-wise path keeps its pace. Items that pass alone but
    raise together would be a bug of the chunk, not of a record: that raises, and the bridge fails loudly.
    """
    try:
        return work(items), range(len(items)), {}
    except Exception:
        failed: dict[int, Exception] = {}
    for position, item in enumerate(items):
        try:
            work([item])
        except Exception as exc:
            failed[position] = exc
    kept = [position for position in range(len(items)) if position not in failed]
    return work([items[position] for position in kept]), kept, failed


def unexpected(doing: str, exc: Exception) -> str:
    """A failure no rule names, as a dead-letter detail: the exception's type and the start of its text."""
    text = str(exc)
    return f"{type(exc).__name__} while {doing}" + (f": {text[:DETAIL_TEXT]}" if text else "")


def decode_each(
    values: Sequence[bytes | None], decode: Callable[[bytes], Any]
) -> tuple[list[Any], list[int], dict[int, tuple[ReasonClass, str]]]:
    """Each value decoded alone: the records, each one's index among `values`, and why the others did not decode."""
    failures: dict[int, tuple[ReasonClass, str]] = {}
    records = []
    indexes = []
    for index, value in enumerate(values):
        if value is None:
            failures[index] = ("decode", "null value (a tombstone): there is no row to upload")
            continue
        try:
            records.append(decode(value))
        except DecodeError as failure:
            failures[index] = (failure.reason, failure.detail)
            continue
        except Exception as exc:
            failures[index] = ("decode", unexpected("decoding it", exc))
            continue
        indexes.append(index)
    return records, indexes, failures
