"""What the benchmark moves: the project's contract events, and (with `--mapped`) records the bridge maps.

- `contract`: contract events read into the contract, no mapping (the benchmark's original run);
- `identity`: the same topic through a route whose mapping names every parameter's own field;
- `game-avro`, `game-json`: the issue's `GameEvent` (nested user, microsecond `ts`, a `props` map, a client
  union), through the issue's mapping, as Avro in the Confluent wire format and as JSON.

Each has its own ceiling: one consumer decoding the same values with the least work (fastavro with the parsed
writer schema, or orjson), so every ratio compares a run with the decoding its records need anyway.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from typing import Any, Final, Literal

import fastavro

from bridge.postapi.methods import EVENTS
from devtools.testkit.records import APP

Decoding = Literal["avro", "json"]

GAME_EVENT: Final[dict[str, Any]] = {
    "type": "record",
    "name": "GameEvent",
    "namespace": "com.example.game",
    "fields": [
        {"name": "user", "type": {"type": "record", "name": "User", "fields": [{"name": "id", "type": "string"}]}},
        {"name": "type", "type": "string"},
        {"name": "ts", "type": "long", "doc": "microseconds since the epoch"},
        {"name": "props", "type": {"type": "map", "values": "string"}},
        {"name": "level", "type": "int"},
        {
            "name": "client",
            "type": [
                "null",
                {"type": "record", "name": "Client", "fields": [{"name": "version", "type": "string"}]},
            ],
            "default": None,
        },
        {"name": "app", "type": "string"},
    ],
}
GAME_MAPPING: Final[dict[str, Any]] = {
    "profile_id": "user.id",
    "event_name": "type",
    "event_timestamp": {"path": "ts", "unit": "us"},
    "event_json": {"pack": ["props", "level"]},
    "app_version_name": ["client.version", "app.version"],
    "application_id": {"path": "app", "lookup": {"game": APP, "tv": APP}},
    "session_type": {"value": "foreground"},
    "google_aid": {"key": True},
}
"""The issue's mapping, less the device-id header: these records identify players by profile_id only."""
IDENTITY_MAPPING: Final[dict[str, Any]] = {name: name for name in EVENTS.names}


@dataclass(frozen=True)
class Workload:
    name: str
    topic: str
    decoding: Decoding
    schema: dict[str, Any] | None
    """The writer schema of Avro values (all written in the Confluent wire format)."""
    route: dict[str, Any] | None
    """The bridge's route for the topic; None reads it as `kafka.topics` (the contract, no mapping)."""


def game_event(seq: int, now_us: int) -> dict[str, Any]:
    return {
        "user": {"id": f"player-{seq % 5000}"},
        "type": ("level_up", "purchase", "session_start", "quest_done")[seq % 4],
        "ts": now_us - (seq % 1000) * 1_000_000,
        "props": {"seq": str(seq), "zone": ("north", "south")[seq % 2], "coins": str(seq % 300)},
        "level": seq % 60,
        "client": {"version": f"2.{seq % 9}.0"} if seq % 3 else None,
        "app": "game" if seq % 5 else "tv",
    }


def game_values(count: int, now_us: int, decoding: Decoding, schema_id: int) -> list[bytes]:
    if decoding == "json":
        return [json.dumps(game_event(seq, now_us)).encode() for seq in range(count)]
    parsed = fastavro.parse_schema(GAME_EVENT)
    header = struct.pack(">bI", 0, schema_id)
    values = []
    for seq in range(count):
        body = io.BytesIO()
        fastavro.schemaless_writer(body, parsed, game_event(seq, now_us))
        values.append(header + body.getvalue())
    return values
