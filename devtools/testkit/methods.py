"""Helpers shared by more than one test module."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, NamedTuple

from devtools.testkit.records import APP

STRING, LONG = ["null", "string"], ["null", "long"]
TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}


DECIMAL = {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 8}


PRODUCER_FIELDS: dict[str, list[tuple[str, Any]]] = {
    "events": [
        ("event_name", "string"),
        ("event_timestamp", TIMESTAMP),
        ("profile_id", STRING),
        ("event_json", STRING),
        ("mcc", ["null", "int"]),
    ],
    "revenue": [
        ("price", DECIMAL),
        ("revenue_event_type", "string"),
        ("event_timestamp", TIMESTAMP),
        ("appmetrica_device_id", STRING),
        ("currency", STRING),
        ("quantity", LONG),
        ("transaction_id", LONG),
        ("payload", STRING),
        ("application_id", LONG),
    ],
    "adrevenue": [
        ("event_timestamp", TIMESTAMP),
        ("revenue", DECIMAL),
        ("currency", "string"),
        ("ad_type", "string"),
        ("profile_id", STRING),
        ("ad_unit_id", LONG),
        ("ad_network", STRING),
    ],
    "ecommerce": [
        ("event_timestamp", TIMESTAMP),
        ("ecom_event_type", "string"),
        ("order_id", "string"),
        ("product_name", "string"),
        ("cart_item_quantity", "long"),
        ("original_price_currency", "string"),
        ("original_price_value", DECIMAL),
        ("actual_price_value", ["null", DECIMAL]),
        ("product_promo_codes", ["null", {"type": "array", "items": "string"}]),
        ("profile_id", STRING),
    ],
    "profiles": [("profile_id", "string"), ("attributes", "string")],
}


RECORD_NAMES = {"events": "Event", "revenue": "Revenue", "adrevenue": "AdRevenue", "profiles": "Profile"}


AMOUNTS = {"price", "revenue", "original_price_value", "actual_price_value"}


def producer_schema(method: str) -> dict[str, Any]:
    fields = [
        {"name": name, "type": kind, **({"default": None} if isinstance(kind, list) else {})}
        for name, kind in PRODUCER_FIELDS[method]
    ]
    fields.append({"name": "producer_only", "type": STRING, "default": None})
    if method == "ecommerce":
        return {"type": "record", "name": "Order", "namespace": "shop", "fields": fields}
    return {"type": "record", "name": RECORD_NAMES[method], "namespace": "appmetrica.postapi", "fields": fields}


def unscaled(amount: Decimal) -> bytes:
    value = int(amount * 100_000_000)
    return value.to_bytes(16, "big", signed=True)


class Made(NamedTuple):
    record: dict[str, Any]
    row: dict[str, str]
    """What the Post API must receive: the record's cells as the producer means them, the default application."""


def made(method: str, seq: int, now_ms: int) -> Made:
    """A valid record of `method` labelled by `seq`, and the row it must become."""
    ms = now_ms - seq * 1000
    seconds = str(ms // 1000)
    amount = Decimal(seq) + Decimal("0.12345678")
    if method == "events":
        note = json.dumps({"seq": seq, "text": 'a "quoted", value'})
        record = {"event_name": f"level {seq}", "event_timestamp": ms, "profile_id": f"u{seq}", "event_json": note}
        row = {"event_name": f"level {seq}", "event_timestamp": seconds, "profile_id": f"u{seq}", "event_json": note}
        record["mcc"], row["mcc"] = 250, "250"
    elif method == "revenue":
        refund = seq % 5 == 0
        price = -amount if refund else amount
        record = {
            "price": unscaled(price),
            "revenue_event_type": "refund" if refund else "one_time_purchase",
            "event_timestamp": ms,
            "appmetrica_device_id": str(2**64 + seq),
            "currency": "usd",
            "quantity": seq % 3,
            "transaction_id": 10**12 + seq,
            "payload": f"order, {seq}",
            "application_id": None,
        }
        row = {k: str(v) for k, v in record.items() if v is not None and k not in ("price", "event_timestamp")}
        row |= {"price": str(price), "event_timestamp": seconds}
    elif method == "adrevenue":
        record = {
            "event_timestamp": ms,
            "revenue": unscaled(Decimal(seq) / 100_000_000),
            "currency": "EUR",
            "ad_type": "rewarded",
            "profile_id": f"viewer-{seq}",
            "ad_unit_id": seq,
            "ad_network": None,
        }
        row = {"event_timestamp": seconds, "revenue": str(Decimal(seq) / 100_000_000), "currency": "EUR"}
        row |= {"ad_type": "rewarded", "profile_id": f"viewer-{seq}", "ad_unit_id": str(seq)}
    elif method == "ecommerce":
        record = {
            "event_timestamp": ms,
            "ecom_event_type": "PURCHASE",
            "order_id": f"order-{seq}",
            "product_name": f"Книга {seq}",
            "cart_item_quantity": 1 + seq % 4,
            "original_price_currency": "RUB",
            "original_price_value": unscaled(Decimal("9999999999.99999999")),
            "actual_price_value": unscaled(amount) if seq % 2 else None,
            "product_promo_codes": ["spring", f"p{seq}"],
            "profile_id": f"buyer-{seq}",
        }
        row = {
            "event_timestamp": seconds,
            "ecom_event_type": "PURCHASE",
            "order_id": f"order-{seq}",
            "product_name": f"Книга {seq}",
            "cart_item_quantity": str(1 + seq % 4),
            "original_price_currency": "RUB",
            "original_price_value": "9999999999.99999999",
            "product_promo_codes": f"[spring,p{seq}]",
            "profile_id": f"buyer-{seq}",
        }
        if seq % 2:
            row["actual_price_value"] = str(amount)
    else:
        attributes = json.dumps({"seq": seq, "vip": seq % 2 == 0, "name": f"n{seq}", "counter": -1})
        record = {"profile_id": f"profile-{seq}", "attributes": attributes}
        row = {"profile_id": f"profile-{seq}", "attributes": attributes}
    return Made(record | {"producer_only": "x"}, row | {"application_id": str(APP)})


def same_row(got: dict[str, str], want: dict[str, str]) -> bool:
    if got.keys() != want.keys():
        return False
    for name, value in want.items():
        if name in AMOUNTS:
            if "e" in got[name].lower() or Decimal(got[name]) != Decimal(value):
                return False
        elif got[name] != value:
            return False
    return True
