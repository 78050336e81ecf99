"""A game's own event schema and the mapping that turns its records into Post API rows."""

from __future__ import annotations

from typing import Any

GAME_MAPPING_YAML = """
profile_id: user.id
event_name: type
event_timestamp: {path: ts, unit: us}
event_json: {pack: [props, level]}
app_version_name: [client.version, app.version]
application_id: {path: app, lookup: {game: 3713842, tv: 3713855}}
session_type: {value: foreground}
appmetrica_device_id: {header: device-id}
google_aid: {key: true}
"""

GAME_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "GameEvent",
    "namespace": "com.example.game",
    "fields": [
        {"name": "user", "type": {"type": "record", "name": "User", "fields": [{"name": "id", "type": "long"}]}},
        {"name": "type", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "props", "type": {"type": "map", "values": "string"}},
        {"name": "level", "type": ["null", "int"], "default": None},
        {"name": "price", "type": ["null", "double"], "default": None},
    ],
}
