"""Contract events with awkward text, their encodings, and the row the Post API must receive for one."""

from __future__ import annotations

import io
import json
import struct
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import fastavro

from bridge.decoding.avro import contract_schema, parse

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = parse(contract_schema())
KEY = "test-post-api-key-0123456789"
APP = 4242
SUBJECT = "appmetrica.events-value"
"""The registry subject of the contract, as a Confluent serializer names it for topic appmetrica.events."""

TRICKY = [
    'quote " and comma, both',
    "new\nline and\r\ncrlf",
    "Кириллица и emoji 🎮🍿",
    "tab\tand trailing space ",
    "",
]


_FIELDS = tuple(field["name"] for field in contract_schema()["fields"])
"""Read once: producing tens of thousands of events spent most of its time reading the contract again each time."""


def event(seq: int, now_ms: int | None = None, **fields: Any) -> dict[str, Any]:
    """A valid contract record whose `event_json` carries `seq`, with awkward text in its strings."""
    now_ms = now_ms or int(time.time() * 1000)
    tricky = TRICKY[seq % len(TRICKY)]
    record: dict[str, Any] = dict.fromkeys(_FIELDS)
    record.update(
        application_id=APP if seq % 2 else None,
        profile_id=f'user-{seq % 97}, "{tricky}"',
        event_name=f"energy_recovered {tricky}".strip(),
        event_timestamp=now_ms - (seq % 1000) * 1000,
        event_json=json.dumps({"seq": seq, "note": tricky, "nested": {"level": seq % 10}}, ensure_ascii=False),
        session_type="foreground" if seq % 3 else None,
        os_name="android",
        device_model=f"Model {tricky}",
        mcc=250,
        mnc=seq % 100,
    )
    record.update(fields)
    return record


def expected_row(record: Mapping[str, Any], application_id: int = APP) -> dict[str, str]:
    """What the contract says the Post API receives for `record`: its set cells as text (an empty string is no
    cell), `event_timestamp` in whole seconds (floored), and the record's application or the default one."""
    row = {name: str(value) for name, value in record.items() if value not in (None, "")}
    row["event_timestamp"] = str(record["event_timestamp"] // 1000)
    row["application_id"] = str(record.get("application_id") or application_id)
    return row


def raw_avro(record: dict[str, Any], schema: Any = CONTRACT) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def wire(schema_id: int, record: dict[str, Any], schema: Any = CONTRACT) -> bytes:
    """The Confluent wire format: magic byte 0, the schema id, the Avro body."""
    return struct.pack(">bI", 0, schema_id) + raw_avro(record, schema)


def seqs(events: Iterable[Mapping[str, str]]) -> list[int]:
    """The `seq` each delivered event's `event_json` carries, in arrival order."""
    return [json.loads(e["event_json"])["seq"] for e in events]
