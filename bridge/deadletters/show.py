"""`dead-letters show`: dead letters one by one, with their headers, their detail and the record where it decodes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from bridge.avro import DecodeError, Readers
from bridge.config import AvroConfig
from bridge.deadletters.records import DeadLetter, when
from bridge.decode import RegistryUnavailableError, make_decoder


def decode_all(avro: AvroConfig, values: Sequence[bytes | None]) -> list[dict[str, Any] | str]:
    """Each value decoded into the contract as the bridge would, or why it cannot be."""
    try:
        decoder = make_decoder(avro.format, avro.schema_registry_url, avro.schema_file)
        asyncio.run(decoder.prepare(values))
    except (ValueError, RegistryUnavailableError) as exc:
        return [f"not decoded: {exc}"] * len(values)
    decode = Readers().decoder(decoder.schemas())
    results: list[dict[str, Any] | str] = []
    for value in values:
        if value is None:
            results.append("not decoded: the value is null (a tombstone)")
            continue
        try:
            results.append(dict(decode(value)))
        except DecodeError as exc:
            results.append(f"not decoded ({exc.reason}): {exc.detail}")
    return results


def as_text(letter: DeadLetter, decoded: dict[str, Any] | str) -> str:
    lines = [
        f"{letter.coordinates}  {when(letter.timestamp_ms).isoformat(timespec='seconds')}  reason {letter.reason}",
        f"  source   {letter.source_topic}[{letter.source_partition}] offset {letter.source_offset}",
        f"  detail   {letter.detail}",
        f"  key      {_text(letter.key)}",
        "  headers",
        *(f"    {name}: {_text(value)}" for name, value in letter.headers),
    ]
    if isinstance(decoded, str):
        lines.append(f"  record   {decoded}")
    else:
        lines.append("  record   " + json.dumps(decoded, ensure_ascii=False, sort_keys=True))
    return "\n".join(lines) + "\n"


def as_json(letter: DeadLetter, decoded: dict[str, Any] | str) -> dict[str, Any]:
    return {
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "timestamp": when(letter.timestamp_ms).isoformat(),
        "reason": letter.reason,
        "detail": letter.detail,
        "source": {"topic": letter.source_topic, "partition": letter.source_partition, "offset": letter.source_offset},
        "key": _text(letter.key),
        "headers": [[name, _text(value)] for name, value in letter.headers],
        "record": decoded if not isinstance(decoded, str) else None,
        "not_decoded": decoded if isinstance(decoded, str) else None,
    }


def _text(value: str | bytes | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", "backslashreplace")
