"""The Post API's limits and the primitives its rules are built of; `bridge.postapi.methods` declares each method
with them.

The sandbox enforces the rules on what it receives and the bridge checks every row against them before upload,
so a row the API would refuse never costs a request (see the README's tables and AppMetrica's Post API pages).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any, Final, Literal

MAX_ROWS_PER_REQUEST: Final = 100_000
"""Events per request, at most."""
MAX_BODY_BYTES: Final = 1 << 30
"""The documented 1 GB per uploaded file, read as GiB."""
MAX_EVENT_AGE_S: Final = 14 * 86400
"""An event is accepted while its timestamp is at most this many seconds before the upload."""
MILLISECONDS_THRESHOLD: Final = 10**11
"""Seconds never get this large before the year 5138, so a bigger timestamp is milliseconds."""

INT64_MAX: Final = (1 << 63) - 1
"""The largest application_id, timestamp, mcc or mnc: the API's integers are signed 64-bit."""
INT64_DIGITS: Final = len(str(INT64_MAX))


@dataclass(frozen=True, slots=True)
class Violation:
    """Why one row breaks a Post API rule.

    ``expired`` is kept apart from ``invalid`` because only time made the row unacceptable: a method's verdict
    reports it only for a row that breaks no other rule.
    """

    reason: Literal["invalid", "expired"]
    detail: str


def bad_decimal(value: str) -> bool:
    """True unless ``value`` is ASCII decimal digits fitting a signed 64-bit integer.

    ``int()`` alone would also take signs, spaces, underscores and non-ASCII digits.
    """
    return not (
        value.isascii()
        and value.isdigit()
        and (len(value) < INT64_DIGITS or (len(value) == INT64_DIGITS and int(value) <= INT64_MAX))
    )


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# One decoder built once: json.loads(s, **kwargs) would build a new one per call.
_JSON_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)
# Its C scanner is called directly by json_objects, as raw_decode() would add a Python call per text; typeshed
# does not declare the attribute, so vars() reaches it.
_scan_json: Final[Callable[[str, int], tuple[object, int]]] = vars(_JSON_DECODER)["scan_once"]
_first: Final = itemgetter(0)
_end: Final = itemgetter(1)


def json_objects(texts: Sequence[str]) -> bool:
    """True only if `json_object_problem` finds no problem in any of `texts` (each non-empty); False names none.

    A column test: it clears many texts with a few C-level passes, and the caller judges them one by one when it
    cannot.
    """
    if not texts:
        return True
    # The scanner reads whatever value starts at 0: a "{" there makes it an object, ending at len() the whole text.
    if set(map(_first, texts)) != {"{"}:
        return False
    try:
        # The parsed objects are dropped at once; only where each one ended is kept.
        ends = list(map(_end, map(_scan_json, texts, repeat(0))))
    except (ValueError, RecursionError):
        return False
    # A text the scanner cannot read raises StopIteration, which ends the map early and leaves fewer ends.
    return ends == list(map(len, texts))


def parse_json(value: str) -> Any:
    """``value`` parsed as JSON, NaN and Infinity refused (ValueError), too deep a nesting too (RecursionError)."""
    return _JSON_DECODER.decode(value)


def json_object_problem(value: str, name: str) -> str | None:
    """Why ``value`` (non-empty), the parameter ``name``, is not the JSON text of an object; None when it is."""
    # raw_decode skips decode()'s whitespace scans; the common unpadded object never needs decode().
    if value[0] == "{" and value[-1] == "}":
        try:
            _, end = _JSON_DECODER.raw_decode(value)
        except (ValueError, RecursionError):
            pass
        else:
            if end == len(value):
                return None
    try:
        parsed = _JSON_DECODER.decode(value)
    except ValueError as exc:  # JSONDecodeError and the NaN/Infinity refusal
        return f"{name} is not valid JSON: {exc}"
    except RecursionError:
        # The scanner recurses once per level and stops at the interpreter's recursion limit.
        return f"{name} is nested too deeply to be read (more levels than the recursion limit allows)"
    if not isinstance(parsed, dict):
        return f"{name} must be a JSON object, got {type(parsed).__name__}"
    return None


def shorten(value: str, limit: int = 40) -> str:
    """A value fit for a reason: quoted, cut at ``limit`` characters."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + "…"
