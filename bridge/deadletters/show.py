"""`dead-letters show`: dead letters one by one, with their headers, their detail, the record where it decodes, and
the Post API row the bridge would make of it now (or the rule it breaks now)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.avro import DecodeError, Readers
from bridge.config import BridgeConfig
from bridge.deadletters.records import DeadLetter, when
from bridge.decode import RegistryUnavailableError, make_decoder
from bridge.methods import METHODS, MethodName
from bridge.postapi import Violation
from bridge.rows import RowMaker


@dataclass(frozen=True, slots=True)
class Decoded:
    record: dict[str, Any] | None
    problem: str
    """Why there is no record, or else why there is no row."""
    row: dict[str, str] | None
    """The row's non-empty cells by Post API parameter."""


def decode_all(config: BridgeConfig, letters: Sequence[tuple[str, bytes | None]]) -> list[Decoded]:
    """Each (source topic, value) decoded into its topic's method contract as the bridge would, and made into a row
    under today's rules; a topic no route names now is read as events."""
    avro = config.avro
    try:
        decoder = make_decoder(avro.format, avro.schema_registry_url, avro.schema_file)
        asyncio.run(decoder.prepare(value for _, value in letters))
    except (ValueError, RegistryUnavailableError) as exc:
        return [Decoded(None, f"not decoded: {exc}", None)] * len(letters)
    method_of: dict[str, MethodName] = {t: route.method for route in config.effective_routes for t in route.topics}
    readers = Readers()
    results = []
    for topic, value in letters:
        method = method_of.get(topic, "events")
        decode = readers.decoder(decoder.schemas(method), method)
        # Keys are not checked: the tools may run without them, and a missing key is fixed in the configuration.
        rows = RowMaker(METHODS[method], config.post_api.application_id, lambda _: True, config.post_api.max_future_s)
        if value is None:
            results.append(Decoded(None, "not decoded: the value is null (a tombstone)", None))
            continue
        try:
            record = dict(decode(value))
        except DecodeError as exc:
            results.append(Decoded(None, f"not decoded ({exc.reason}): {exc.detail}", None))
            continue
        made = rows.make(record, time.time())
        if isinstance(made, Violation):
            results.append(Decoded(record, f"breaks a rule now ({made.reason}): {made.detail}", None))
        else:
            names = METHODS[method].names
            results.append(Decoded(record, "", {c: v for c, v in zip(names, made.values, strict=True) if v}))
    return results


def as_text(letter: DeadLetter, decoded: Decoded) -> str:
    lines = [
        f"{letter.coordinates}  {when(letter.timestamp_ms).isoformat(timespec='seconds')}  reason {letter.reason}",
        f"  source   {letter.source_topic}[{letter.source_partition}] offset {letter.source_offset}",
        f"  detail   {letter.detail}",
        f"  key      {_text(letter.key)}",
        "  headers",
        *(f"    {name}: {_text(value)}" for name, value in letter.headers),
    ]
    if decoded.record is not None:
        lines.append("  record   " + json.dumps(decoded.record, ensure_ascii=False, sort_keys=True))
    if decoded.row is not None:
        lines.append("  row now  " + json.dumps(decoded.row, ensure_ascii=False))
    if decoded.problem:
        lines.append(f"  {'row now' if decoded.record is not None else 'record '}  {decoded.problem}")
    return "\n".join(lines) + "\n"


def as_json(letter: DeadLetter, decoded: Decoded) -> dict[str, Any]:
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
        "record": decoded.record,
        "row": decoded.row,
        "problem": decoded.problem or None,
    }


def _text(value: str | bytes | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", "backslashreplace")
