"""The transform stage: every failure reason, column sets per application, CSV that round-trips, the same answer
from a worker process as from the bridge's own."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import pickle
import struct
import time
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import AsyncSchemaRegistryClient

from bridge.decoding.avro import WriterSchemas, contract_schema, parse
from bridge.decoding.registry import ConfluentDecoder, RawDecoder, RegistryUnavailableError
from bridge.decoding.transform import FAILED, Rules, Transformed, start_worker, transform
from bridge.postapi.methods import EVENTS
from bridge.sandbox.registry import SchemaRegistry
from devtools.testkit.records import ROOT, TRICKY, event, expected_row, raw_avro, wire

NOW = time.time()
NOW_MS = int(NOW * 1000)
SCHEMA_ID = 7
CONTRACT_TEXT = json.dumps(contract_schema())
WIRE = WriterSchemas(by_id={SCHEMA_ID: CONTRACT_TEXT}, unknown={8: "the registry knows no such id"})
RAW = WriterSchemas(raw=CONTRACT_TEXT)
RULES = Rules(default_application=1111, keyed=None, max_future_s=3600)


def minimal(**fields: Any) -> dict[str, Any]:
    """A valid contract record with only the required cells and an identity."""
    record: dict[str, Any] = {name: None for name in EVENTS.names}
    record.update(event_name="level_up", event_timestamp=NOW_MS - 5000, profile_id="user-1")
    record.update(fields)
    return record


def failures_of(result: Transformed) -> list[tuple[str, str]]:
    return [result.failures[i] for i, group in enumerate(result.placed) if group == FAILED]


def parsed(result: Transformed) -> list[dict[str, str]]:
    """Every row as the Post API reads it: each line under its group's header, empty cells left out."""
    rows = []
    for group, line in zip(result.placed, result.lines, strict=True):
        if group == FAILED:
            continue
        (row,) = csv.DictReader(io.StringIO((result.groups[group][2] + line).decode("utf-8"), newline=""))
        rows.append({k: v for k, v in row.items() if v})
    return rows


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (None, "decode", "null value (a tombstone): there is no row to upload"),
        (b"\x00\x00\x00", "decode", "3 bytes is too short for the Confluent wire format"),
        (
            b"\x01" + struct.pack(">I", SCHEMA_ID) + raw_avro(minimal()),
            "decode",
            "magic byte 1: not the Confluent wire format (version 0)",
        ),
        (wire(SCHEMA_ID, minimal()) + b"\x00\x00", "decode", "2 bytes left after the record"),
        (wire(8, minimal()), "schema", "schema id 8: the registry knows no such id"),
        (wire(9, minimal()), "schema", "schema id 9: not fetched from the registry"),
        (
            wire(SCHEMA_ID, minimal(appmetrica_device_id="123")),
            "invalid",
            "both profile_id and appmetrica_device_id are set; the Post API takes exactly one identity",
        ),
        (
            wire(SCHEMA_ID, minimal(event_json="[1]")),
            "invalid",
            "event_json must be a JSON object, got list",
        ),
        (
            wire(SCHEMA_ID, minimal(event_timestamp=1_700_000_000_000)),
            "expired",
            "the Post API takes events at most 1209600 s (14 days) old",
        ),
    ],
    # Named by what they expect: the values hold the time of collection, which parallel workers must agree on.
    ids=lambda param: param if isinstance(param, str) else type(param).__name__,
)
def test_each_failure_names_its_reason_class_and_detail(value: bytes | None, reason: str, detail: str) -> None:
    result = transform([value], NOW, RULES, WIRE, "events")
    assert list(result.placed) == [FAILED]
    assert result.lines == [b""]
    assert result.groups == []
    ((got_reason, got_detail),) = failures_of(result)
    assert got_reason == reason
    assert detail in got_detail


def test_bytes_that_are_not_avro_are_a_decode_failure() -> None:
    (failure,) = failures_of(transform([wire(SCHEMA_ID, minimal())[:12]], NOW, RULES, WIRE, "events"))
    assert failure[0] == "decode"
    assert failure[1].startswith("not a valid Avro record for its schema: ")
    (failure,) = failures_of(transform([b"this is not avro at all"], NOW, RULES, RAW, "events"))
    assert failure[0] == "decode"


def test_applications_without_a_key_or_a_default_are_invalid() -> None:
    keyed = Rules(default_application=None, keyed=frozenset({1111}), max_future_s=3600)
    values = [wire(SCHEMA_ID, minimal()), wire(SCHEMA_ID, minimal(application_id=3333))]
    assert failures_of(transform(values, NOW, keyed, WIRE, "events")) == [
        ("invalid", "application_id is missing and post_api.application_id is not set"),
        ("invalid", "no Post API key is configured for application 3333"),
    ]
    assert not failures_of(transform([wire(SCHEMA_ID, minimal(application_id=1111))], NOW, keyed, WIRE, "events"))


def test_rows_are_grouped_per_application_with_the_columns_they_use() -> None:
    values = [
        wire(SCHEMA_ID, minimal()),
        wire(SCHEMA_ID, minimal(application_id=2222, os_name="android")),
        b"poison",
        wire(SCHEMA_ID, minimal(session_type="foreground")),
        wire(SCHEMA_ID, minimal(application_id=2222, mcc=250)),
    ]
    result = transform(values, NOW, RULES, WIRE, "events")
    assert list(result.placed) == [0, 1, FAILED, 0, 1]
    assert [(method, app) for method, app, _ in result.groups] == [("events", 1111), ("events", 2222)]
    headers = [header.decode() for _, _, header in result.groups]
    assert headers == [
        "application_id,profile_id,event_name,event_timestamp,session_type\r\n",
        "application_id,profile_id,event_name,event_timestamp,os_name,mcc\r\n",
    ], "each group names only the columns its rows use, in the documented order"
    assert parsed(result) == [
        {
            "application_id": "1111",
            "profile_id": "user-1",
            "event_name": "level_up",
            "event_timestamp": str(NOW_MS // 1000 - 5),
        },
        {
            "application_id": "2222",
            "profile_id": "user-1",
            "event_name": "level_up",
            "event_timestamp": str(NOW_MS // 1000 - 5),
            "os_name": "android",
        },
        {
            "application_id": "1111",
            "profile_id": "user-1",
            "event_name": "level_up",
            "event_timestamp": str(NOW_MS // 1000 - 5),
            "session_type": "foreground",
        },
        {
            "application_id": "2222",
            "profile_id": "user-1",
            "event_name": "level_up",
            "event_timestamp": str(NOW_MS // 1000 - 5),
            "mcc": "250",
        },
    ]


def test_csv_lines_round_trip_quotes_commas_newlines_and_non_ascii() -> None:
    tricky = [*TRICKY[:-1], 'a "quoted", value', "line one\nline two\r\nthree", "Привет, мир 🎮"]
    records = [event(seq, NOW_MS, event_name=f"name {text}", device_model=text) for seq, text in enumerate(tricky)]
    result = transform([wire(SCHEMA_ID, r) for r in records], NOW, RULES, WIRE, "events")
    assert FAILED not in result.placed
    assert parsed(result) == [expected_row(record, 1111) for record in records]
    # A request's body is its header and its lines joined: the lines of one group read back as one CSV.
    body = result.groups[0][2] + b"".join(line for g, line in zip(result.placed, result.lines, strict=True) if g == 0)
    reread = list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))
    assert [r["device_model"] for r in reread] == [r["device_model"] for r in records if r["application_id"] is None]


def test_raw_values_decode_with_the_one_writer_schema() -> None:
    result = transform([raw_avro(minimal())], NOW, RULES, RAW, "events")
    assert list(result.placed) == [0] and parsed(result)[0]["event_name"] == "level_up"


def test_a_newer_writer_is_read_into_the_contract() -> None:
    newer = contract_schema()
    newer["fields"] = [*newer["fields"], {"name": "ab_group", "type": ["null", "string"], "default": None}]
    schemas = WriterSchemas(by_id={SCHEMA_ID: CONTRACT_TEXT, 10: json.dumps(newer)})
    result = transform([wire(10, {**minimal(), "ab_group": "B"}, parse(newer))], NOW, RULES, schemas, "events")
    assert "ab_group" not in parsed(result)[0]


def test_one_id_in_two_registries_is_read_with_each_ones_schema() -> None:
    other = contract_schema()
    other["fields"] = [{"name": "extra", "type": "int"}, *other["fields"]]
    other_parsed = parse(other)
    value = wire(SCHEMA_ID, {**minimal(), "extra": 5}, other_parsed)
    assert parsed(transform([value], NOW, RULES, WriterSchemas(by_id={SCHEMA_ID: json.dumps(other)}), "events"))
    assert failures_of(transform([value], NOW, RULES, WIRE, "events"))[0][0] == "decode"


def test_a_worker_process_gives_the_same_answer() -> None:
    values = [wire(SCHEMA_ID, event(seq, NOW_MS)) for seq in range(50)] + [None, b"poison"]
    here = transform(values, NOW, RULES, WIRE, "events")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context, initializer=start_worker) as pool:
        there = pool.submit(transform, values, NOW, RULES, WIRE, "events").result(timeout=60)
    assert there == here
    # What crosses the process boundary is lines and small ints: a few bytes past the CSV itself.
    csv_bytes = sum(map(len, here.lines)) + sum(len(h) for _, _, h in here.groups)
    assert len(pickle.dumps(here)) < csv_bytes + 2 * len(values) * 4 + 1000


async def test_the_confluent_decoder_hands_fetched_and_unknown_ids_to_the_transform(registry: SchemaRegistry) -> None:
    schema_id = registry.register("t-value", CONTRACT_TEXT)
    decoder = ConfluentDecoder(AsyncSchemaRegistryClient({"url": registry.url}))
    values = [wire(schema_id, minimal()), wire(schema_id + 1000, minimal()), b"\x05short", None]
    await decoder.prepare(values)
    schemas = decoder.schemas("events")
    assert dict(schemas.by_id) == {schema_id: CONTRACT_TEXT}
    assert dict(schemas.unknown) == {schema_id + 1000: "the registry knows no such id"}
    assert decoder.schemas("events") is schemas, "rebuilt only when a fetch changed it"
    result = transform(values, NOW, RULES, schemas, "events")
    assert result.placed[0] == 0
    assert failures_of(result)[0] == ("schema", f"schema id {schema_id + 1000}: the registry knows no such id")

    await registry.stop()
    with pytest.raises(RegistryUnavailableError):
        await decoder.prepare([wire(schema_id + 1, minimal())])


def test_a_raw_schema_file_that_is_not_a_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "writer.avsc"
    path.write_text(json.dumps({"type": "record", "name": "Other", "fields": [{"name": "x", "type": "no-such"}]}))
    with pytest.raises(ValueError, match="cannot be read into the contract"):
        RawDecoder(path)
    schemas = RawDecoder(ROOT / "schemas" / "appmetrica_event.avsc").schemas("events")
    assert schemas.raw is not None and json.loads(schemas.raw) == contract_schema()


def test_a_producer_s_own_copy_of_a_contract_under_another_name_reads_into_the_method_s_contract() -> None:
    """Field names and types as the contract's, its own order, a field of its own, a record name of its own."""
    own = {
        "type": "record",
        "name": "Purchase",
        "namespace": "shop",
        "fields": [
            {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 8}},
            {"name": "note", "type": "string"},
            {"name": "revenue_event_type", "type": "string"},
            {"name": "event_timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "profile_id", "type": ["null", "string"], "default": None},
        ],
    }
    record = {
        "price": Decimal("-0.00000001"),
        "note": "x",
        "revenue_event_type": "refund",
        "event_timestamp": NOW_MS,
        "profile_id": "p",
    }
    value = raw_avro(record, fastavro.parse_schema(own))
    result = transform([value], NOW, RULES, WriterSchemas(raw=json.dumps(own)), "revenue")
    assert result.failures == {}
    (row,) = csv.DictReader(io.StringIO((result.groups[0][2] + result.lines[0]).decode(), newline=""))
    assert row == {
        "application_id": "1111",
        "profile_id": "p",
        "revenue_event_type": "refund",
        "event_timestamp": str(NOW_MS // 1000),
        "price": "-0.00000001",
    }
