"""The AppMetrica Post API rules for the ``events`` method, in one place.

The sandbox enforces these on what it receives and the bridge checks every row against them before
upload, so a row the API would refuse never costs a request (see ``shared/postapi.md``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Final, Literal

EVENTS_PATH: Final = "/logs/v1/import/events"
"""One event in query parameters, empty body."""
EVENTS_CSV_PATH: Final = "/logs/v1/import/events.csv"
"""A CSV body: a header line of parameter names, then one row per event."""
METHOD: Final = "events"
"""The Post API method the bridge uploads to; the `method` label of the upload metrics."""

EVENT_COLUMNS: Final[tuple[str, ...]] = (
    "application_id",
    "profile_id",
    "appmetrica_device_id",
    "event_name",
    "event_timestamp",
    "event_json",
    "session_type",
    "ios_ifa",
    "ios_ifv",
    "google_aid",
    "windows_aid",
    "os_name",
    "os_version",
    "device_manufacturer",
    "device_model",
    "device_type",
    "device_locale",
    "app_version_name",
    "app_package_name",
    "connection_type",
    "operator_name",
    "mcc",
    "mnc",
    "device_ipv6",
)
"""The events method's parameters in documented order; ``post_api_key`` travels only in the query."""

MAX_ROWS_PER_REQUEST: Final = 100_000
"""Events per request, at most."""
MAX_BODY_BYTES: Final = 1 << 30
"""The documented 1 GB per uploaded file, read as GiB."""
MAX_EVENT_AGE_S: Final = 14 * 86400
"""An event is accepted while its timestamp is at most this many seconds before the upload."""
MILLISECONDS_THRESHOLD: Final = 10**11
"""Seconds never get this large before the year 5138, so a bigger timestamp is milliseconds."""
SESSION_TYPES: Final = frozenset({"foreground", "background"})
"""Allowed session_type values; the API assumes background when it is absent."""
REQUIRED_COLUMNS: Final[tuple[str, ...]] = ("application_id", "event_name", "event_timestamp")
"""Required besides post_api_key and exactly one of profile_id / appmetrica_device_id."""

INT64_MAX: Final = (1 << 63) - 1
"""The largest application_id, timestamp, mcc or mnc: the API's integers are signed 64-bit."""
INT64_DIGITS: Final = len(str(INT64_MAX))
_COLUMN_SET: Final = frozenset(EVENT_COLUMNS)
_OPTIONAL_INT_COLUMNS: Final = ("mcc", "mnc")


@dataclass(frozen=True, slots=True)
class Violation:
    """Why one event breaks a Post API rule.

    ``expired`` is kept apart from ``invalid`` because only time made the event unacceptable:
    ``check_event`` reports it only for an event that breaks no other rule.
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


def json_object_problem(value: str) -> str | None:
    """Why `value` (non-empty) is not a JSON object, or None when it is."""
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
        return f"event_json is not valid JSON: {exc}"
    except RecursionError:
        # The scanner recurses once per level and stops at the interpreter's recursion limit.
        return "event_json is nested too deeply to be read (more levels than the recursion limit allows)"
    if not isinstance(parsed, dict):
        return f"event_json must be a JSON object, got {type(parsed).__name__}"
    return None


def _shorten(value: str, limit: int = 40) -> str:
    return repr(value) if len(value) <= limit else repr(value[:limit]) + "…"


def check_event(params: Mapping[str, str], now: float, max_future_s: float | None = None) -> Violation | None:
    """Check one event's parameters (strings, ``""`` meaning absent) against the events method's rules.

    ``now`` is Unix time in seconds; ``max_future_s``, when given, bounds how far ahead of ``now`` the
    event_timestamp may be. Returns the first rule broken, or None when the event is acceptable.
    """
    if not _COLUMN_SET.issuperset(params):
        unknown = sorted(name for name in params if name not in _COLUMN_SET)
        return Violation("invalid", f"unknown parameter {', '.join(map(repr, unknown))}")

    # Indexing and `in` tests cost less than .get() calls, and this runs for every row.
    try:
        application_id = params["application_id"]
        event_name = params["event_name"]
        event_timestamp = params["event_timestamp"]
    except KeyError:
        application_id = event_name = event_timestamp = ""
    if not (application_id and event_name and event_timestamp):
        missing = [name for name in REQUIRED_COLUMNS if not params.get(name)]
        return Violation("invalid", f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")

    profile_id = params.get("profile_id", "")
    device_id = params.get("appmetrica_device_id", "")
    if profile_id and device_id:
        return Violation(
            "invalid",
            "both profile_id and appmetrica_device_id are set; the Post API takes exactly one identity",
        )
    if not (profile_id or device_id):
        return Violation(
            "invalid",
            "neither profile_id nor appmetrica_device_id is set; the Post API takes exactly one identity",
        )
    if device_id and not (device_id.isascii() and device_id.isdigit()):
        return Violation("invalid", f"appmetrica_device_id {_shorten(device_id)} is not a non-negative decimal integer")

    if bad_decimal(application_id) or int(application_id) == 0:
        return Violation("invalid", f"application_id {_shorten(application_id)} is not a positive integer")
    if bad_decimal(event_timestamp):
        return Violation(
            "invalid",
            f"event_timestamp {_shorten(event_timestamp)} is not a non-negative integer of Unix seconds",
        )
    timestamp = int(event_timestamp)
    if timestamp > MILLISECONDS_THRESHOLD:
        return Violation("invalid", f"event_timestamp {timestamp} looks like milliseconds; the Post API takes seconds")
    if max_future_s is not None and timestamp - now > max_future_s:
        return Violation(
            "invalid",
            f"event_timestamp {timestamp} is {timestamp - now:.0f} s in the future; "
            f"at most {max_future_s:g} s is allowed",
        )

    for name in _OPTIONAL_INT_COLUMNS:
        if name in params:
            value = params[name]
            if value and bad_decimal(value):
                return Violation("invalid", f"{name} {_shorten(value)} is not a non-negative integer")

    event_json = params.get("event_json")
    if event_json:
        problem = json_object_problem(event_json)
        if problem is not None:
            return Violation("invalid", problem)

    if "session_type" in params:
        session_type = params["session_type"]
        if session_type and session_type not in SESSION_TYPES:
            return Violation("invalid", f"session_type {_shorten(session_type)} is not one of background, foreground")

    age = now - timestamp
    if age > MAX_EVENT_AGE_S:
        return Violation(
            "expired",
            f"event_timestamp {timestamp} is {age:.0f} s ({age / 86400:.1f} days) old; "
            f"the Post API takes events at most {MAX_EVENT_AGE_S} s (14 days) old",
        )
    return None
