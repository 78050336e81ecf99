"""The Post API's five upload methods, each declared once: its parameters in documented order, their kinds, what
is required and which identity it takes (see AppMetrica's Post API pages, and the README's tables printed from here).

Everything else reads this declaration: `Method.verdict` judges one row's cells and names the rule broken,
`Method.doubtful` clears a chunk of rows column by column (the bridge before upload, the sandbox on receipt),
`Method.schema` is the method's Avro input contract and each `Kind.cells` turns the contract's decoded values into
CSV cells. A new rule is a new `Kind` or a new column line here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from operator import xor
from typing import Any, Final, Literal

import pycountry

from bridge.postapi.rules import (
    INT64_DIGITS,
    MAX_EVENT_AGE_S,
    MILLISECONDS_THRESHOLD,
    Violation,
    bad_decimal,
    json_object_problem,
    json_objects,
    parse_json,
    shorten,
)

MethodName = Literal["events", "revenue", "adrevenue", "ecommerce", "profiles"]
"""The Post API's upload methods, as their paths and the configuration name them."""

DECIMAL_SCALE: Final = 8
DECIMAL_PRECISION: Final = 18
"""decimal(10.8): 10 digits before the point and 8 after, so 18 digits in all."""
EXCLUDED_CURRENCIES: Final = frozenset(
    [
        "BOV",
        "CHE",
        "CHW",
        "COU",
        "MRU",
        "MXV",
        "SSP",
        "STN",
        "USN",
        "USS",
        "UYI",
        "VES",
        "XAL",
        "XBA",
        "XBB",
        "XBC",
        "XBD",
        "XCP",
        "XFU",
        "XPD",
        "XPT",
        "XSU",
        "XUA",
    ]
)
"""ISO 4217 codes the docs say AppMetrica does not support."""
CURRENCIES: Final = frozenset(c.alpha_3 for c in pycountry.currencies) - EXCLUDED_CURRENCIES
"""Accepted in any letter case: the docs' samples write ``usd``."""
ARRAY_DELIMITERS: Final = ",[]"
"""The docs' one sample writes an array cell as ``[promo_code_1,promo_code_2]``: no item can hold these."""


@dataclass(frozen=True, slots=True)
class Window:
    """When a row is judged: ``now`` in Unix seconds, and how far ahead a timestamp may be (None: no bound)."""

    now: float
    max_future_s: float | None = None


class Kind:
    """What one parameter's value must be, as a CSV cell, and how the Avro contract's value becomes that cell."""

    avro: Any = "string"
    """The contract's Avro type of a present value."""
    lossy = False
    """Whether `unencodable` can find anything: only then is it asked, value by value."""

    def problem(self, name: str, cell: str, window: Window) -> Violation | None:
        """Why a non-empty ``cell`` breaks this kind's rule, or None."""
        return None

    def describe(self) -> str:
        """The rule in words, for the README's tables of each method."""
        return "as is"

    def clear(self, cells: Sequence[str], window: Window) -> bool:
        """True only if no cell has a problem (empty cells are absent values); False says nothing.

        A column test for many cells at a time; kinds override it with fewer C-level passes than one judgement each.
        """
        return all(self.problem("", cell, window) is None for cell in set(cells) if cell)

    def cells(self, values: list[Any]) -> list[str]:
        """The contract's decoded values (logical types dropped, None for absent) as cells, ``""`` for absent."""
        nones = values.count(None)
        if not nones:
            return values
        # Most optional columns are empty in every record of a chunk: one C-level count and one multiplication.
        return [""] * nones if nones == len(values) else ["" if value is None else value for value in values]

    def unencodable(self, value: Any) -> str | None:
        """Why a decoded value cannot become a cell faithfully, or None; only a cell's kind can lose information."""
        return None


class Text(Kind):
    """Any string."""

    def describe(self) -> str:
        return "as is"

    def clear(self, cells: Sequence[str], window: Window) -> bool:
        return True


def _invalid(detail: str) -> Violation:
    return Violation("invalid", detail)


class Integer(Kind):
    """ASCII decimal digits of a signed 64-bit integer, at least ``minimum``; ``avro`` long unless said otherwise."""

    def __init__(self, minimum: int = 0, avro: str = "long") -> None:
        self.minimum = minimum
        self.avro = avro

    def problem(self, name: str, cell: str, window: Window) -> Violation | None:
        if bad_decimal(cell) or int(cell) < self.minimum:
            what = "positive" if self.minimum == 1 else "non-negative"
            return _invalid(f"{name} {shorten(cell)} is not a {what} integer")
        return None

    def describe(self) -> str:
        return "a positive 64-bit integer" if self.minimum == 1 else "a non-negative 64-bit integer"

    def clear(self, cells: Sequence[str], window: Window) -> bool:
        distinct = set(cells) - {""}
        if len(distinct) > 8:
            digits = "".join(distinct)
            # Fewer digits than the largest int64 fit whatever they are; only 0 can fall below a minimum of 1.
            return (
                digits.isascii()
                and digits.isdigit()
                and max(map(len, distinct)) < INT64_DIGITS
                and (self.minimum == 0 or min(map(int, distinct)) >= self.minimum)
            )
        return all(self.problem("", cell, window) is None for cell in distinct)

    def cells(self, values: list[Any]) -> list[str]:
        nones = values.count(None)
        if not nones:
            return list(map(str, values))
        return [""] * nones if nones == len(values) else ["" if value is None else str(value) for value in values]


class DeviceId(Kind):
    """The SDK's device-ID hash: decimal digits, possibly beyond a signed 64-bit integer, so a string."""

    def problem(self, name: str, cell: str, window: Window) -> Violation | None:
        if not (cell.isascii() and cell.isdigit()):
            return _invalid(f"{name} {shorten(cell)} is not a non-negative decimal integer")
        return None

    def describe(self) -> str:
        return "decimal digits (may exceed a signed 64-bit long)"

    def clear(self, cells: Sequence[str], window: Window) -> bool:
        digits = "".join(cells)
        return not digits or (digits.isascii() and digits.isdigit())


class Timestamp(Kind):
    """Unix seconds within the 14-day window and at most ``max_future_s`` ahead; the contract writes milliseconds."""

    avro = {"type": "long", "logicalType": "timestamp-millis"}

    def describe(self) -> str:
        return (
            "Unix milliseconds, sent as seconds floored; at most 14 days old (else `expired`) and at most "
            "`post_api.max_future_s` ahead"
        )

    def problem(self, name: str, cell: str, window: Window) -> Violation | None:
        if bad_decimal(cell):
            return _invalid(f"{name} {shorten(cell)} is not a non-negative integer of Unix seconds")
        timestamp = int(cell)
        if timestamp > MILLISECONDS_THRESHOLD:
            return _invalid(f"{name} {timestamp} looks like milliseconds; the Post API takes seconds")
        ahead = timestamp - window.now
        if window.max_future_s is not None and ahead > window.max_future_s:
            return _invalid(
                f"{name} {timestamp} is {ahead:.0f} s in the future; at most {window.max_future_s:g} s is allowed"
            )
        age = -ahead
        if age > MAX_EVENT_AGE_S:
            return Violation(
                "expired",
                f"{name} {timestamp} is {age:.0f} s ({age / 86400:.1f} days) old; "
                f"the Post API takes events at most {MAX_EVENT_AGE_S} s (14 days) old",
            )
        return None

    def clear(self, cells: Sequence[str], window: Window) -> bool:
        stamps = set(cells)
        digits = "".join(stamps)
        lengths = set(map(len, stamps))
        if "" in stamps or not (digits.isascii() and digits.isdigit()) or max(lengths) >= INT64_DIGITS:
            return False
        # Each of problem()'s comparisons is monotonic in the timestamp, so the extremes decide for all. Digit
        # strings of one length order as their numbers do, so the usual column needs only two int() calls.
        if len(lengths) == 1:
            newest, oldest = int(max(stamps)), int(min(stamps))
        else:
            seconds = list(map(int, stamps))
            newest, oldest = max(seconds), min(seconds)
        too_late = window.max_future_s is not None and newest - window.now > window.max_future_s
        if newest > MILLISECONDS_THRESHOLD or too_late:
            return False
        return window.now - oldest <= MAX_EVENT_AGE_S

    def cells(self, values: list[Any]) -> list[str]:
        # Floor, not round: an event never moves later than it happened.
        return ["" if millis is None else str(millis // 1000) for millis in values]


class Amount(Kind):
    """decimal(10.8) as plain text: optional sign (where ``signed``), 1-10 digits, optionally a point and 1-8 more.

    The contract's Avro decimal decodes, logical type dropped, to its unscaled two's-complement big-endian bytes;
    `text` is the one conversion to a cell.
    """

    avro = {"type": "bytes", "logicalType": "decimal", "precision": DECIMAL_PRECISION, "scale": DECIMAL_SCALE}

    def __init__(self, signed: bool = False) -> None:
        self.signed = signed
        self._pattern = re.compile(r"-?\d{1,10}(?:\.\d{1,8})?" if signed else r"\d{1,10}(?:\.\d{1,8})?", re.ASCII)

    def problem(self, name: str, cell: str, window: Window) -> Violation | None:
        if self._pattern.fullmatch(cell) is None:
            sign = "" if self.signed else "non-negative "
            return _invalid(
                f"{name} {shorten(cell)} is not a {sign}decimal(10.8): at most 10 digits before the point and 8 after"
            )
        return None

    def describe(self) -> str:
        sign = "may be negative" if self.signed else "not negative"
        return f"decimal(10.8): at most 10 digits before the point and 8 after, {sign}; sent as plain decimal text"

    def clear(self, cells: Sequence[str], window: Window) -> bool:
        match = self._pattern.fullmatch
        return all(map(match, filter(None, cells)))

    def cells(self, values: list[Any]) -> list[str]:
        return ["" if value is None else amount_text(value) for value in values]


def amount_text(unscaled: bytes) -> str:
    """An Avro decimal's bytes at scale 8 as plain decimal text, without exponent or trailing zeros: ``-0.5``."""
    amount = Decimal(int.from_bytes(unscaled, "big", signed=True)).scaleb(-DECIMAL_SCALE)
    return format(amount.normalize(), "f")


def amount_bytes(text: str) -> bytes:
    """Decimal text as an Avro decimal's bytes at scale 8: what a producer writes (tests, the demo)."""
    unscaled = int(Decimal(text).scaleb(DECIMAL_SCALE))
    return unscaled.to_bytes((unscaled.bit_length() + 8) // 8 or 1, "big", signed=True)


class Currency(Kind):
    """A three-letter ISO 4217 code AppMetrica supports, in either case."""

    def problem(self, name: str, cell: str, window: Window) -> Violation | None:
        if cell.upper() not in CURRENCIES:
            return _invalid(f"{name} {shorten(cell)} is not an ISO 4217 currency code AppMetrica supports")
        return None

    def describe(self) -> str:
        return "a three-letter ISO 4217 code in either case, not one the docs exclude (`BOV`, `VES`, `XUA`, …)"


class Choice(Kind):
    """One of a documented enumeration, exactly as written."""

    def __init__(self, *values: str) -> None:
        self.values = frozenset(values)
        self._listed = ", ".join(sorted(values))

    def problem(self, name: str, cell: str, window: Window) -> Violation | None:
        if cell not in self.values:
            return _invalid(f"{name} {shorten(cell)} is not one of {self._listed}")
        return None

    def describe(self) -> str:
        return "one of " + ", ".join(f"`{value}`" for value in sorted(self.values))

    def clear(self, cells: Sequence[str], window: Window) -> bool:
        return self.values.issuperset(cells) or (self.values | {""}).issuperset(cells)


class JsonObject(Kind):
    """JSON text of an object, which may nest."""

    def problem(self, name: str, cell: str, window: Window) -> Violation | None:
        problem = json_object_problem(cell, name)
        return None if problem is None else _invalid(problem)

    def describe(self) -> str:
        return "JSON text of an object (may nest; no `NaN` or `Infinity`)"

    def clear(self, cells: Sequence[str], window: Window) -> bool:
        return json_objects([cell for cell in cells if cell])


class Attributes(Kind):
    """JSON text of a flat object whose values are strings, numbers or booleans (a counter is a number)."""

    def describe(self) -> str:
        return "JSON text of a flat object whose values are strings, numbers (counters too) or bools"

    def problem(self, name: str, cell: str, window: Window) -> Violation | None:
        problem = json_object_problem(cell, name)
        if problem is not None:
            return _invalid(problem)
        for key, value in parse_json(cell).items():
            if value is None or isinstance(value, dict | list):
                kind = "null" if value is None else type(value).__name__
                return _invalid(f"{name} {key!r} is {kind}; an attribute is a string, a number or a bool")
        return None


class ArrayOf(Kind):
    """An array of ``item`` values, written ``[a,b]`` as the docs' one sample does (see `ARRAY_DELIMITERS`)."""

    def __init__(self, item: Kind) -> None:
        self.item = item
        self.avro = {"type": "array", "items": item.avro}
        self.lossy = True

    def problem(self, name: str, cell: str, window: Window) -> Violation | None:
        if not (cell.startswith("[") and cell.endswith("]")):
            return _invalid(f"{name} {shorten(cell)} is not an array written [a,b]")
        inner = cell[1:-1]
        for item in inner.split(",") if inner else ():
            if not item or "[" in item or "]" in item:
                return _invalid(f"{name} {shorten(cell)} holds an empty or bracketed item")
            violation = self.item.problem(f"{name} item", item, window)
            if violation is not None:
                return violation
        return None

    def describe(self) -> str:
        return f"an array, sent as `[a,b]`, no item empty or holding `,` `[` `]`; each item {self.item.describe()}"

    def cells(self, values: list[Any]) -> list[str]:
        return ["" if items is None else "[" + ",".join(self.item.cells(list(items))) + "]" for items in values]

    def unencodable(self, value: Any) -> str | None:
        if value is not None:
            for item in self.item.cells(list(value)):
                if not item or any(c in item for c in ARRAY_DELIMITERS):
                    return f"item {shorten(item)} is empty or holds one of {ARRAY_DELIMITERS!r}: no array cell can"
        return None


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: Kind = field(default_factory=Text)
    required: bool = False
    filled: bool = False
    """The bridge can fill it (post_api.application_id), so the contract makes it optional even when required."""


Identity = Literal["one", "profile"]
"""``one``: exactly one of profile_id and appmetrica_device_id; ``profile``: profile_id only."""


class Method:
    """One upload method: its parameters and the rules a row of them obeys."""

    def __init__(
        self, name: MethodName, record: str, identity: Identity, label: str, columns: Sequence[Column], doc: str
    ) -> None:
        self.name = name
        self.record = record
        """The Avro record name of the method's input contract."""
        self.contract_file = f"appmetrica_{record.lower() if name == 'events' else name}.avsc"
        """The contract's file in ``schemas/`` (and the package's ``bridge/schemas/``)."""
        self.doc = doc
        self.identity = identity
        self.label = label
        """The column naming what a row is about; the sandbox refuses rows by it on request."""
        self.columns = tuple(columns)
        self.names = tuple(column.name for column in self.columns)
        """The parameters in documented order; ``post_api_key`` travels only in the query."""
        self.path = f"/logs/v1/import/{name}"
        """One row in query parameters, empty body."""
        self.csv_path = f"{self.path}.csv"
        """A CSV body: a header line of parameter names, then one row per record."""
        self._known = frozenset(self.names)
        self._required = tuple(c.name for c in self.columns if c.required)
        self._judged = tuple((c.name, c.kind) for c in self.columns if not isinstance(c.kind, Text))
        self.lossy = tuple(index for index, c in enumerate(self.columns) if c.kind.lossy)
        """Indexes of the columns whose decoded values may not become cells faithfully."""

    def verdict(self, params: Mapping[str, str], window: Window) -> Violation | None:
        """The first rule one row's cells break (``""`` meaning absent), or None when the row is acceptable.

        ``expired`` is reported only for a row that breaks no other rule: only time made it unacceptable.
        """
        if not self._known.issuperset(params):
            unknown = sorted(name for name in params if name not in self._known)
            return _invalid(f"unknown parameter {', '.join(map(repr, unknown))}")
        missing = [name for name in self._required if not params.get(name)]
        if missing:
            return _invalid(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
        identity = self._identity_problem(params.get("profile_id", ""), params.get("appmetrica_device_id", ""))
        if identity is not None:
            return _invalid(identity)
        expired = None
        for name, kind in self._judged:
            cell = params.get(name)
            if cell:
                violation = kind.problem(name, cell, window)
                if violation is not None:
                    if violation.reason != "expired":
                        return violation
                    expired = violation
        return expired

    def _identity_problem(self, profile_id: str, device_id: str) -> str | None:
        if self.identity == "profile":
            return None if profile_id else "profile_id is missing; the profiles method takes profile_id only"
        if profile_id and device_id:
            return "both profile_id and appmetrica_device_id are set; the Post API takes exactly one identity"
        if not (profile_id or device_id):
            return "neither profile_id nor appmetrica_device_id is set; the Post API takes exactly one identity"
        return None

    def doubtful(self, columns: Mapping[str, Sequence[str]], window: Window) -> set[int] | None:
        """Positions of the rows a column test cannot clear; None when none can be (the caller judges each).

        ``columns`` holds cells by parameter, ``""`` for no value; a parameter missing from it has no values.
        """
        doubtful: set[int] = set()
        for name in self._required:
            cells = columns.get(name)
            if cells is None:
                return None
            if not all(cells):
                doubtful.update(p for p, cell in enumerate(cells) if not cell)
        if self.identity == "one":
            profiles, devices = columns.get("profile_id"), columns.get("appmetrica_device_id")
            if profiles is None or devices is None:
                present = profiles if devices is None else devices
                if present is None:
                    return None
                if not all(present):
                    doubtful.update(p for p, cell in enumerate(present) if not cell)
            elif not all(map(xor, map(bool, profiles), map(bool, devices))):
                pairs = enumerate(zip(profiles, devices, strict=True))
                doubtful.update(p for p, (profile, device) in pairs if bool(profile) == bool(device))
        for name, kind in self._judged:
            cells = columns.get(name)
            if cells is not None and not kind.clear(cells, window):
                problem = kind.problem
                doubtful.update(p for p, cell in enumerate(cells) if cell and problem(name, cell, window) is not None)
        return doubtful

    def schema(self) -> dict[str, Any]:
        """The method's Avro input contract: required parameters plain, the others nullable with a null default."""
        fields = []
        for column in self.columns:
            if column.required and not column.filled:
                fields.append({"name": column.name, "type": column.kind.avro})
            else:
                fields.append({"name": column.name, "type": ["null", column.kind.avro], "default": None})
        return {
            "type": "record",
            "name": self.record,
            "namespace": "appmetrica.postapi",
            "doc": self.doc,
            "fields": fields,
        }


def _device_columns(small: str = "long") -> list[Column]:
    """session_type and the device parameters every timestamped method takes after its own.

    The docs type mcc and mnc ``<int>``, a long in the contracts; the events contract, older, made them Avro ints.
    """
    texts = [
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
    ]
    return [
        Column("session_type", SESSION),
        *(Column(name) for name in texts),
        Column("mcc", Integer(avro=small)),
        Column("mnc", Integer(avro=small)),
        Column("device_ipv6"),
    ]


SESSION: Final = Choice("foreground", "background")
"""The API assumes background when it is absent."""
_APPLICATION: Final = Column("application_id", Integer(minimum=1), required=True, filled=True)
_IDENTITIES: Final = (Column("profile_id"), Column("appmetrica_device_id", DeviceId()))
_TIMESTAMP: Final = Column("event_timestamp", Timestamp(), required=True)
_ECOMMERCE_PATHS: Final = range(1, 11)

EVENTS: Final = Method(
    "events",
    "Event",
    "one",
    "event_name",
    [
        _APPLICATION,
        *_IDENTITIES,
        Column("event_name", required=True),
        _TIMESTAMP,
        Column("event_json", JsonObject()),
        *_device_columns("int"),
    ],
    "One AppMetrica Post API event, as upstream producers write it to Kafka.",
)
REVENUE: Final = Method(
    "revenue",
    "Revenue",
    "one",
    "product_id",
    [
        _APPLICATION,
        *_IDENTITIES,
        Column(
            "revenue_event_type",
            Choice(
                "one_time_purchase",
                "trial_started",
                "intro_started",
                "promo_started",
                "subscription_converted",
                "subscription_started",
                "subscription_renewed",
                "cancellation",
                "uncancellation",
                "expired",
                "billing_issues",
                "refund",
            ),
            required=True,
        ),
        _TIMESTAMP,
        Column("price", Amount(signed=True), required=True),
        # Starred nowhere and unbracketed in the request format: optional, so a row the API would take is never
        # refused here (README, "where the docs disagree").
        Column("currency", Currency()),
        Column("product_id"),
        Column("quantity", Integer()),
        Column("payload"),
        Column("transaction_id", Integer()),
        Column("order_id", Integer()),
        *_device_columns(),
    ],
    "One AppMetrica Post API In-App Revenue event (the revenue method), as upstream producers write it to Kafka.",
)
ADREVENUE: Final = Method(
    "adrevenue",
    "AdRevenue",
    "one",
    "ad_unit_name",
    [
        _APPLICATION,
        *_IDENTITIES,
        _TIMESTAMP,
        Column("revenue", Amount(), required=True),
        Column("currency", Currency(), required=True),
        Column("ad_type", Choice("native", "banner", "rewarded", "interstitial", "mrec", "other"), required=True),
        Column("ad_network"),
        Column("ad_unit_id", Integer()),
        Column("ad_unit_name"),
        Column("ad_placement_id", Integer()),
        Column("ad_placement_name"),
        Column("precision"),
        Column("payload"),
        *_device_columns(),
    ],
    "One AppMetrica Post API Ad Revenue event (the adrevenue method), as upstream producers write it to Kafka.",
)
_INTERNAL_CURRENCIES: Final = ArrayOf(Text())
"""Internal currencies are the app's own names (the docs' sample: ``some_currency``), not ISO codes."""
ECOMMERCE: Final = Method(
    "ecommerce",
    "Ecommerce",
    "one",
    "product_name",
    [
        _APPLICATION,
        *_IDENTITIES,
        _TIMESTAMP,
        Column(
            "ecom_event_type",
            Choice(
                "SHOW_SCREEN",
                "SHOW_PRODUCT_CARD",
                "SHOW_PRODUCT_DETAILS",
                "ADD_TO_CART",
                "REMOVE_FROM_CART",
                "BEGIN_CHECKOUT",
                "PURCHASE",
            ),
            required=True,
        ),
        Column("order_id", required=True),
        Column("product_name", required=True),
        Column("cart_item_quantity", Integer(), required=True),
        Column("cart_item_price_currency", Currency()),
        Column("cart_item_price_value", Amount()),
        Column("cart_item_price_internal_currency", _INTERNAL_CURRENCIES),
        Column("cart_item_price_internal_value", ArrayOf(Amount())),
        Column("actual_price_currency", Currency()),
        Column("actual_price_value", Amount()),
        Column("actual_price_internal_currency", _INTERNAL_CURRENCIES),
        Column("actual_price_internal_value", ArrayOf(Amount())),
        Column("payload"),
        *(Column(f"product_category_path_{level}") for level in _ECOMMERCE_PATHS),
        Column("original_price_currency", Currency(), required=True),
        Column("original_price_value", Amount(), required=True),
        Column("original_price_internal_currency", _INTERNAL_CURRENCIES),
        Column("original_price_internal_value", ArrayOf(Amount())),
        Column("product_payload"),
        Column("product_promo_codes", ArrayOf(Text())),
        Column("product_sku"),
        *(Column(f"screen_category_path_{level}") for level in _ECOMMERCE_PATHS),
        Column("screen_name"),
        Column("screen_payload"),
        *_device_columns(),
    ],
    "One AppMetrica Post API E-commerce event (the ecommerce method), as upstream producers write it to Kafka.",
)
PROFILES: Final = Method(
    "profiles",
    "Profile",
    "profile",
    "profile_id",
    [_APPLICATION, Column("profile_id", required=True), Column("attributes", Attributes(), required=True)],
    "One AppMetrica Post API profile update (the profiles method), as upstream producers write it to Kafka.",
)

METHODS: Final[Mapping[MethodName, Method]] = {m.name: m for m in (EVENTS, REVENUE, ADREVENUE, ECOMMERCE, PROFILES)}
