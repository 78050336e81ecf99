"""One value to what its parameter's contract type holds, or `UnconvertibleError` saying why not.

Numbers become integers only when exact, booleans become `true`/`false` text, records and maps become JSON only
where the parameter is JSON, timestamps become integer milliseconds from the unit they are written in. A JSON
number read as a `JsonNumber` is text as written and, as a number, exactly the value of that text; NaN and Infinity
are refused everywhere, JSON included, never written as `null`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal
from uuid import UUID

import orjson

from bridge.decoding.exact_json import JsonNumber, fragment
from bridge.mapping.parameters import Parameter
from bridge.postapi.methods import DECIMAL_SCALE, amount_bytes

Unit = Literal["s", "ms", "us", "ns", "iso8601"]


class UnconvertibleError(Exception):
    """A value the parameter cannot take; the message says why."""


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def to_text(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        if not math.isfinite(value):
            raise UnconvertibleError(f"{value!r} is not a finite number")
        return str(int(value)) if value.is_integer() else repr(value)
    if kind is JsonNumber:
        return value.text  # type: ignore[no-any-return]
    if isinstance(value, Decimal) and value.is_finite():
        return format(value, "f")
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise UnconvertibleError(f"a {_type_name(value)} is not text")


def _type_name(value: Any) -> str:
    if isinstance(value, dict):
        return "record or map"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bytes):
        return "bytes value"
    return type(value).__name__


def _integer(bits: int) -> Callable[[Any], int]:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def to_integer(value: Any) -> int:
        kind = type(value)
        if kind is int:
            number: int = value
        elif _integral(value):
            number = _exact(value)
        else:
            raise UnconvertibleError(f"{show(value)} is not an integer")
        if not low <= number <= high:
            raise UnconvertibleError(f"{number} does not fit a {bits}-bit integer")
        return number

    return to_integer


INTEGER_DIGITS: Final = 40
"""Digits past which a number is refused before it is made an int: far beyond any parameter, and short of the
work an exponent such as `1e999999999` would cost."""


def _exact(value: Any) -> int:
    """`int(value)` of a value `_integral` took; numbers with too many digits are refused, not computed."""
    if type(value) is JsonNumber:
        value = Decimal(value.text)
    if isinstance(value, Decimal) and value.adjusted() >= INTEGER_DIGITS:
        raise UnconvertibleError(f"{show(value)} has too many digits to be an integer")
    try:
        return int(value)
    except ValueError:
        raise UnconvertibleError(f"{show(value)} has too many digits to be an integer") from None


def _integral(value: Any) -> bool:
    """A float, decimal text, JSON number or Decimal that is exactly an integer (not a bool, which is an int too)."""
    kind = type(value)
    if kind is float:
        return bool(value.is_integer())
    if kind is str:
        digits = value.removeprefix("-")
        return bool(digits.isascii() and digits.isdigit())
    if kind is JsonNumber:
        value = Decimal(value.text)
    return isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value()


EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND: Final = timedelta(milliseconds=1)
TO_MILLISECONDS: Final[dict[str, tuple[int, int]]] = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000), "ns": (1, 10**6)}
"""(multiplier, divisor) from each unit to milliseconds; a number with no unit is milliseconds, as in the contract."""


def _timestamp(unit: Unit | None) -> Callable[[Any], int]:
    multiplier, divisor = TO_MILLISECONDS.get(unit or "ms", (1, 1))

    def to_millis(value: Any) -> int:
        kind = type(value)
        if isinstance(value, datetime):
            # An Avro timestamp type, read as it is; a naive (local-timestamp) value is taken as UTC.
            aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
            return int((aware - EPOCH) // MILLISECOND)
        if kind is str and (unit == "iso8601" or (unit is None and not value.isdigit())):
            return _iso_millis(value)
        if unit == "iso8601":
            raise UnconvertibleError(f"{show(value)} is not an ISO 8601 text")
        if kind is str and value.isascii() and value.isdigit():
            return _exact(value) * multiplier // divisor
        if kind is int:
            return int(value) * multiplier // divisor
        if kind is JsonNumber:
            exact = Decimal(value.text)
            if -INTEGER_DIGITS < exact.adjusted() < INTEGER_DIGITS and len(exact.as_tuple().digits) <= INTEGER_DIGITS:
                # A ratio of ints, as Decimal arithmetic would round to its context's 28 digits.
                numerator, denominator = exact.as_integer_ratio()
                return numerator * multiplier // (denominator * divisor)
        if kind is float:
            scaled: float = value * multiplier / divisor
            if math.isfinite(scaled):
                return math.floor(scaled)
        raise UnconvertibleError(f"{show(value)} is not a timestamp in {unit or 'ms'}")

    return to_millis


def _iso_millis(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UnconvertibleError(f"{show(text)} is not an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise UnconvertibleError(f"{show(text)} has no UTC offset")
    return int((moment - EPOCH) // MILLISECOND)


def json_default(value: Any) -> Any:
    if type(value) is JsonNumber:
        return fragment(value)
    if isinstance(value, Decimal) and value.is_finite():
        return format(value, "f")
    raise TypeError(f"a {_type_name(value)} has no JSON form")


def to_json(value: Any) -> str:
    """`value` as JSON text: a string as it is, anything else written; NaN and Infinity refused."""
    if type(value) is str:
        return value
    try:
        text = orjson.dumps(value, default=json_default).decode()
    except TypeError as exc:
        raise UnconvertibleError(f"cannot be written as JSON ({exc})") from None
    refuse_non_finite(text, value)
    return text


def refuse_non_finite(text: str, value: Any) -> None:
    """Raise when `value` holds NaN or Infinity, which orjson wrote as `null` in `text`; JSON has neither."""
    if "null" in text:
        bad = _non_finite(value)
        if bad is not None:
            raise UnconvertibleError(f"{bad!r} is not a finite number: JSON has no NaN or Infinity")


def _non_finite(value: Any) -> float | None:
    kind = type(value)
    if kind is float:
        return None if math.isfinite(value) else float(value)
    if kind is dict:
        value = value.values()
    elif kind is not list and kind is not tuple:
        return None
    for item in value:
        bad = _non_finite(item)
        if bad is not None:
            return bad
    return None


_SCALE: Final = Decimal(1).scaleb(-DECIMAL_SCALE)


def _to_decimal(value: Any) -> bytes:
    """Unscaled two's-complement bytes at scale 8, as Avro's decimal holds them."""
    if type(value) is JsonNumber:
        value = value.text
    if type(value) is bool or not isinstance(value, int | float | str | Decimal):
        raise UnconvertibleError(f"a {_type_name(value)} is not a decimal")
    try:
        number = Decimal(str(value)) if not isinstance(value, Decimal) else value
        scaled = number.quantize(_SCALE)
    except (InvalidOperation, ValueError):
        raise UnconvertibleError(f"{show(value)} is not a decimal") from None
    if scaled != number:
        raise UnconvertibleError(f"{show(value)} has more than 8 decimal places")
    return amount_bytes(format(scaled, "f"))


def _array(item: Callable[[Any], Any]) -> Callable[[Any], list[Any]]:
    def to_array(value: Any) -> list[Any]:
        if not isinstance(value, list | tuple):
            raise UnconvertibleError(f"a {_type_name(value)} is not an array")
        if None in value:
            raise UnconvertibleError("an array item is null")
        return [item(v) for v in value]

    return to_array


def converter(parameter: Parameter, unit: Unit | None) -> Callable[[Any], Any]:
    if parameter.kind == "array":
        assert parameter.item is not None
        return _array(converter(parameter.item, None))
    if parameter.kind == "integer":
        return _integer(parameter.bits)
    if parameter.kind == "timestamp":
        return _timestamp(unit)
    if parameter.kind == "json":
        return to_json
    if parameter.kind == "decimal":
        return _to_decimal
    return to_text
