"""Each topic's lane to the transforms: its route's method, how its values are read, and which decoder fetches
the writer schemas they name.

Contract records (no mapping, Avro) are read into the method's contract by the configuration's decoder; mapped
Avro records by a second decoder that reads each writer's own schema (no contract to resolve into); JSON records
need no schemas at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bridge.config.model import BridgeConfig
from bridge.decoding.avro import WriterSchemas
from bridge.decoding.reading import Reading
from bridge.decoding.registry import Decoder
from bridge.postapi.methods import MethodName

_NO_SCHEMAS = WriterSchemas()


@dataclass(frozen=True)
class Lane:
    method: MethodName
    reading: Reading | None
    """None: contract Avro records, read into the method's contract."""
    decoder: Decoder | None
    """None: JSON values, which name no schemas."""

    def schemas(self) -> WriterSchemas:
        return _NO_SCHEMAS if self.decoder is None else self.decoder.schemas(self.method)

    @property
    def reads_keys(self) -> bool:
        return self.reading is not None and self.reading.reads_keys

    @property
    def reads_headers(self) -> bool:
        return self.reading is not None and self.reading.reads_headers


def needs_own_schemas(config: BridgeConfig) -> bool:
    """Whether a route reads Avro records with their writers' own schemas (an Avro route with a mapping)."""
    return any(route.format == "avro" and route.mapping is not None for route in config.effective_routes)


def lanes(config: BridgeConfig, contract: Decoder, own: Decoder | None) -> Mapping[str, Lane]:
    """The lane of every topic the configuration routes; `own` must be given when `needs_own_schemas`."""
    by_topic = {}
    for route in config.effective_routes:
        reading = Reading.of(route.method, route.format, route.mapping)
        decoder: Decoder | None = contract
        if reading is not None:
            decoder = own if reading.format == "avro" else None
            assert reading.format == "json" or own is not None, "an Avro route with a mapping needs own schemas"
        lane = Lane(route.method, reading, decoder)
        by_topic.update(dict.fromkeys(route.topics, lane))
    return by_topic
