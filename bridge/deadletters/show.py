"""`dead-letters show`: dead letters one by one, with their key, headers and detail, the record where it decodes (the
raw value where it does not), and the Post API row the bridge would make of it now (or the rule it breaks now).

A letter is read the way `run` reads its source topic: that topic's lane (`bridge.decoding.lanes`: the route's method,
format and mapping, and the registry with its credentials and TLS), judged by the same `transform`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.config.model import Settings
from bridge.deadletters.records import DeadLetter, when
from bridge.decoding.avro import DecodeError, Readers, Record, contract_schema
from bridge.decoding.lanes import Lane, lanes, needs_own_schemas
from bridge.decoding.reading import RecordReaders
from bridge.decoding.registry import Decoder, RegistryUnavailableError, make_decoder, registry_client_conf
from bridge.decoding.transform import Rules, transform
from bridge.kafka.headers import MessageHeaders
from bridge.postapi.methods import MethodName
from bridge.preview import row_or_failure

RAW_LIMIT = 512
"""Bytes of an undecodable value (or a key or header) shown; the rest is counted."""


@dataclass(frozen=True, slots=True)
class Judged:
    record: dict[str, Any] | None
    problem: str
    """Why there is no record, or else why there is no row."""
    row: dict[str, str] | None
    """The row's non-empty cells by Post API parameter."""


class Judge:
    """The run path's reading of each source topic, for letters."""

    def __init__(self, settings: Settings) -> None:
        config = settings.config
        avro = config.avro
        self._rules = Rules(config.post_api.application_id, None, config.post_api.max_future_s)
        """Keys are not checked: the tools run without them, and a missing key is fixed in the configuration."""
        self._problem = ""
        self._lanes: dict[str, Lane] = {}
        try:
            conf = registry_client_conf(avro, settings.registry)
            contract = make_decoder(avro.format, avro.schema_registry_url, avro.schema_file, conf)
            own = None
            if needs_own_schemas(config):
                own = make_decoder(avro.format, avro.schema_registry_url, avro.schema_file, conf, own_schema=True)
        except ValueError as exc:
            self._problem = str(exc)
            return
        self._lanes = dict(lanes(config, contract, own))
        self._unavailable: dict[int, str] = {}

    def judge_all(self, letters: Sequence[DeadLetter]) -> list[Judged]:
        if self._problem:
            return [_undecoded(f"not decoded: {self._problem}")] * len(letters)
        asyncio.run(self._prepare(letters))
        return [self.judge(letter) for letter in letters]

    async def _prepare(self, letters: Sequence[DeadLetter]) -> None:
        """Fetch every writer schema the letters name, each decoder once; a registry that cannot be asked is
        remembered as the reason its letters are not decoded."""
        values: dict[int, tuple[Decoder, list[bytes | None]]] = {}
        for letter in letters:
            lane = self._lanes.get(letter.source_topic)
            if lane is not None and lane.decoder is not None:
                values.setdefault(id(lane.decoder), (lane.decoder, []))[1].append(letter.value)
        for key, (decoder, some) in values.items():
            try:
                await decoder.prepare(some)
            except RegistryUnavailableError as exc:
                self._unavailable[key] = str(exc)

    def judge(self, letter: DeadLetter) -> Judged:
        lane = self._lanes.get(letter.source_topic)
        if lane is None:
            return _undecoded(f"not decoded: no route reads topic {letter.source_topic!r} now")
        if letter.value is None:
            return _undecoded("not decoded: the value is null (a tombstone)")
        unavailable = self._unavailable.get(id(lane.decoder))
        if unavailable is not None:
            return _undecoded(f"not decoded: {unavailable}")
        schemas = lane.schemas()
        headers = MessageHeaders(tuple((name.encode(), _bytes(value)) for name, value in letter.headers))
        result = transform(
            [letter.value],
            time.time(),
            self._rules,
            schemas,
            lane.method,
            lane.reading,
            [letter.key] if lane.reads_keys else None,
            [headers] if lane.reads_headers else None,
        )
        row, failure = row_or_failure(result, 0)
        if failure is not None and failure[0] in ("decode", "schema"):
            return _undecoded(f"not decoded ({failure[0]}): {failure[1]}")
        record = _record(lane, schemas, letter.value)
        if failure is not None:
            return Judged(record, f"breaks a rule now ({failure[0]}): {failure[1]}", None)
        return Judged(record, "", {name: cell for name, cell in (row or {}).items() if cell})


def _record(lane: Lane, schemas: Any, value: bytes) -> dict[str, Any] | None:
    """The record as decoded for the row, for the operator to read: contract decimals as numbers."""
    decode: Callable[[bytes], Record]
    if lane.reading is not None:
        decode = RecordReaders().decoder(lane.reading, schemas)
    else:
        decode = Readers().decoder(schemas, lane.method)
    try:
        record = dict(decode(value))
    except DecodeError:
        return None
    if lane.reading is None:
        for name, scale in _decimal_scales(lane.method).items():
            record[name] = _scaled(record.get(name), scale)
    return record


def _decimal_scales(method: MethodName) -> dict[str, int]:
    """The contract's decimal fields (alone, in a union with null, or as array items) and their scales; the
    contract is read with its logical types left out, so their values arrive as unscaled bytes."""
    scales = {}
    for field in contract_schema(method)["fields"]:
        kinds = field["type"] if isinstance(field["type"], list) else [field["type"]]
        for kind in kinds:
            if isinstance(kind, dict) and kind.get("type") == "array":
                kind = kind["items"]
            if isinstance(kind, dict) and kind.get("logicalType") == "decimal":
                scales[field["name"]] = int(kind.get("scale", 0))
    return scales


def _scaled(value: Any, scale: int) -> Any:
    if isinstance(value, bytes):
        return decimal.Decimal(int.from_bytes(value, "big", signed=True)).scaleb(-scale)
    if isinstance(value, list):
        return [_scaled(item, scale) for item in value]
    return value


def _undecoded(problem: str) -> Judged:
    return Judged(None, problem, None)


def as_text(letter: DeadLetter, judged: Judged) -> str:
    lines = [
        f"{letter.coordinates}  {when(letter.timestamp_ms).isoformat(timespec='seconds')}  reason {letter.reason}",
        f"  source   {letter.source_topic}[{letter.source_partition}] offset {letter.source_offset}",
        f"  detail   {letter.detail}",
        f"  key      {_shown_text(letter.key)}",
    ]
    if letter.headers_readable:
        lines += ["  headers", *(f"    {name}: {_shown_text(_bytes(value))}" for name, value in letter.headers)]
    else:
        lines.append("  headers  (not readable: a header name is not UTF-8 text)")
    if judged.record is not None:
        lines.append("  record   " + _dumps(judged.record, sort_keys=True))
    elif letter.value is not None:
        lines.append(f"  value    {_shown_text(letter.value)}")
    if judged.row is not None:
        lines.append("  row now  " + json.dumps(judged.row, ensure_ascii=False))
    if judged.problem:
        lines.append(f"  {'row now' if judged.record is not None else 'record '}  {judged.problem}")
    return "\n".join(lines) + "\n"


def as_json(letter: DeadLetter, judged: Judged) -> dict[str, Any]:
    shown = {
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "timestamp": when(letter.timestamp_ms).isoformat(),
        "reason": letter.reason,
        "detail": letter.detail,
        "source": {"topic": letter.source_topic, "partition": letter.source_partition, "offset": letter.source_offset},
        **_shown_json("key", letter.key),
        "headers": [[name, _shown_json("value", _bytes(value))] for name, value in letter.headers],
        "headers_readable": letter.headers_readable,
        "record": json.loads(_dumps(judged.record)) if judged.record is not None else None,
        "row": judged.row,
        "problem": judged.problem or None,
    }
    if judged.record is None and letter.value is not None:
        shown |= _shown_json("raw_value", letter.value) | {"value_bytes": len(letter.value)}
    return shown


def _bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def readable(data: bytes) -> str | None:
    """The bytes as text when they are UTF-8 without control characters (but tabs and line breaks), else None."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    return text if all(c.isprintable() or c in "\t\r\n" for c in text) else None


def _cut(data: bytes) -> bytes:
    cut = data[:RAW_LIMIT]
    # A multi-byte character split by the cut would make text look like binary.
    for back in range(4):
        try:
            cut[: len(cut) - back].decode()
            return cut[: len(cut) - back]
        except UnicodeDecodeError:
            continue
    return cut


def _shown_text(data: bytes | None) -> str:
    if data is None:
        return "(none)"
    cut = _cut(data)
    more = f" … ({len(data):,} bytes)" if len(cut) < len(data) else ""
    text = readable(cut)
    if text is not None:
        return json.dumps(text, ensure_ascii=False) + more
    return f"hex {data[:RAW_LIMIT].hex(' ')}" + more


def _shown_json(name: str, data: bytes | None) -> dict[str, Any]:
    """`name` as text, or `name_hex` when it is not text, cut at RAW_LIMIT bytes."""
    if data is None:
        return {name: None}
    text = readable(_cut(data))
    return {name: text} if text is not None else {f"{name}_hex": data[:RAW_LIMIT].hex()}


def _dumps(record: Any, sort_keys: bool = False) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=sort_keys, default=_jsonable)


def _jsonable(value: Any) -> Any:
    """Avro's values that JSON has no type for: decimals as exact text, times as ISO 8601, bytes as text or hex."""
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        text = readable(value)
        return text if text is not None else "hex:" + value.hex()
    raise TypeError(f"{type(value).__name__} is not shown")
