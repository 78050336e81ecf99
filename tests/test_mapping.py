"""Mappings: the issue's forms give the rows an operator expects, unconvertible values are dead letters naming the
parameter and path, bad mappings are refused by check-config (exit 2, key named), and hostile records never break
a chunk."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from bridge.decoding.avro import WriterSchemas
from bridge.decoding.reading import Reading
from bridge.decoding.transform import FAILED, Rules, Transformed, transform
from bridge.kafka.headers import NO_HEADERS, MessageHeaders
from bridge.mapping import Chunk, CompiledMapping, MappingSpec, check_mapping
from devtools.testkit.bridge_child import run_cli
from devtools.testkit.game import GAME_MAPPING_YAML, GAME_SCHEMA
from devtools.testkit.records import raw_avro

NOW = time.time()
NOW_US = int(NOW * 1_000_000)
KEY = "s3cr3t-post-api-key"
RULES = Rules(default_application=None, keyed=None, max_future_s=3600)

GAME_MAPPING: MappingSpec = TypeAdapter(MappingSpec).validate_python(yaml.safe_load(GAME_MAPPING_YAML))


def game_event(seq: int, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "user": {"id": f"player-{seq}"},
        "type": "level_up",
        "ts": NOW_US - seq * 1_000_003,
        "props": {"coins": str(seq), "zone": "north"},
        "level": seq % 50,
        "client": None if seq % 2 else {"version": f"2.{seq}"},
        "app": {"version": "1.0"},
    }
    # A field named "app" is both the lookup's key and app.version's record: the issue's example, kept as given.
    record["app"] = "game" if seq % 3 else "tv"
    record.update(fields)
    return record


class Rows(NamedTuple):
    """A mapping's output record by record, as dicts of every parameter."""

    records: list[dict[str, Any]]
    positions: list[int]
    failures: dict[int, str]


def mapped(mapping: MappingSpec, records: list[dict[str, Any]], method: str = "events", **chunk: Any) -> Rows:
    check_mapping(method, mapping)
    compiled = CompiledMapping(method, mapping)
    result = compiled.apply(Chunk(records, chunk.get("keys"), chunk.get("headers")))
    rows = [dict(zip(compiled.parameters, row, strict=True)) for row in zip(*result.columns, strict=True)]
    return Rows(rows, result.positions, result.failures)


def spec(text: str) -> MappingSpec:
    return TypeAdapter(MappingSpec).validate_python(yaml.safe_load(text))


def test_the_issue_example_gives_the_rows_computed_by_hand() -> None:
    records = [game_event(seq) for seq in range(6)]
    keys = [f"gaid-{seq}".encode() for seq in range(6)]
    headers = [MessageHeaders(((b"device-id", b"100"), (b"device-id", f"{seq}".encode()))) for seq in range(6)]
    result = mapped(GAME_MAPPING, records, keys=keys, headers=headers)
    assert result.failures == {}
    for seq, row in enumerate(result.records):
        record = records[seq]
        assert row["profile_id"] == f"player-{seq}"
        assert row["event_name"] == "level_up"
        assert row["event_timestamp"] == record["ts"] // 1000
        assert json.loads(row["event_json"]) == {"props": record["props"], "level": seq % 50}
        # app is a string in these records, so app.version is never set: the first one wins or nothing.
        assert row["app_version_name"] == (None if seq % 2 else f"2.{seq}")
        assert row["application_id"] == (3713842 if seq % 3 else 3713855)
        assert row["session_type"] == "foreground"
        assert row["appmetrica_device_id"] == str(seq), "the last header of a name is the one read"
        assert row["google_aid"] == f"gaid-{seq}"
        assert row["ios_ifa"] is None and row["mcc"] is None


@pytest.mark.parametrize(
    ("mapping", "value", "expected"),
    [
        ("event_timestamp: {path: t, unit: s}", 1_700_000_000, 1_700_000_000_000),
        ("event_timestamp: {path: t, unit: s}", 1_700_000_000.5, 1_700_000_000_500),
        ("event_timestamp: {path: t, unit: ms}", "1700000000123", 1_700_000_000_123),
        ("event_timestamp: {path: t, unit: us}", 1_700_000_000_123_999, 1_700_000_000_123),
        ("event_timestamp: {path: t, unit: ns}", 1_700_000_000_123_999_999, 1_700_000_000_123),
        ("event_timestamp: {path: t, unit: iso8601}", "2023-11-14T22:13:20.5Z", 1_700_000_000_500),
        ("event_timestamp: {path: t, unit: iso8601}", "2023-11-15T01:13:20+03:00", 1_700_000_000_000),
        ("event_timestamp: t", datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC), 1_700_000_000_250),
        ("event_timestamp: {path: t, unit: s}", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), 1_700_000_000_000),
        ("mcc: t", 250.0, 250),
        ("mcc: t", "250", 250),
        ("application_id: t", "3713842", 3713842),
        ("profile_id: t", 12345, "12345"),
        ("profile_id: t", 12.0, "12"),
        ("os_version: t", 14.5, "14.5"),
        ("device_type: t", True, "true"),
        ("device_type: t", False, "false"),
        ("event_json: t", {"a": [1, {"b": None}]}, '{"a":[1,{"b":null}]}'),
        ("event_json: t", '{"kept": "as written"}', '{"kept": "as written"}'),
        ("event_json: {pack: {where: t.city}}", {"city": "Oslo"}, '{"where":"Oslo"}'),
        ("application_id: {path: t, lookup: {1: 11, 'true': 22}, default: 33}", 1, 11),
        ("application_id: {path: t, lookup: {1: 11, 'true': 22}, default: 33}", True, 22),
        ("application_id: {path: t, lookup: {1: 11}, default: 33}", "other", 33),
        ("profile_id: [a.b, t]", "second", "second"),
    ],
)
def test_conversions(mapping: str, value: Any, expected: Any) -> None:
    name = mapping.split(":")[0]
    result = mapped(spec(mapping), [{"t": value}])
    assert result.failures == {}
    assert result.records[0][name] == expected


@pytest.mark.parametrize(
    ("mapping", "value", "detail"),
    [
        ("mcc: t", 250.5, "mcc (path t): 250.5 is not an integer"),
        ("mcc: t", True, "mcc (path t): True is not an integer"),
        ("mcc: t", 1 << 40, "mcc (path t): 1099511627776 does not fit a 32-bit integer"),
        ("application_id: t", "12a", "application_id (path t): '12a' is not an integer"),
        ("profile_id: t", {"id": 1}, "profile_id (path t): a record or map is not text"),
        ("profile_id: t", b"\x00", "profile_id (path t): a bytes value is not text"),
        ("profile_id: t", float("nan"), "profile_id (path t): nan is not a finite number"),
        ("event_timestamp: {path: t, unit: us}", "soon", "event_timestamp (path t): 'soon' is not a timestamp in us"),
        ("event_timestamp: {path: t, unit: iso8601}", "2023-11-14T22:13:20", "has no UTC offset"),
        ("event_timestamp: {path: t, unit: iso8601}", 5, "5 is not an ISO 8601 text"),
        (
            "event_json: {pack: [t]}",
            b"raw",
            "event_json (pack): cannot be written as JSON (Type is not JSON serializable: bytes)",
        ),
        (
            "application_id: {path: t, lookup: {game: 1}}",
            "chess",
            "application_id (path t): 'chess' is not in the lookup",
        ),
    ],
)
def test_an_unconvertible_value_names_the_parameter_and_path(mapping: str, value: Any, detail: str) -> None:
    result = mapped(spec(mapping), [{"t": 1}, {"t": value}, {"t": 1}] if "lookup" not in mapping else [{"t": value}])
    position = 0 if "lookup" in mapping else 1
    assert detail in result.failures[position]
    assert position not in result.positions


def test_pack_rest_packs_every_field_the_mapping_does_not_read() -> None:
    mapping = spec("profile_id: user.id\nevent_name: type\nevent_json: {pack: rest}")
    result = mapped(
        mapping, [{"user": {"id": "u"}, "type": "t", "score": 3, "tags": ["a"], "note": None}, {"type": "t"}]
    )
    assert json.loads(result.records[0]["event_json"]) == {"score": 3, "tags": ["a"], "note": None}
    assert result.records[1]["event_json"] is None, "nothing left to pack is no event_json, not an empty object"


def test_a_missing_field_is_absent_and_the_rules_name_it() -> None:
    reading = Reading.of(
        "events", "json", spec("profile_id: who\nevent_name: what\nevent_timestamp: {path: when, unit: s}")
    )
    values = [json.dumps({"who": "u", "what": "e"}).encode(), json.dumps({"who": "u", "when": int(NOW)}).encode()]
    result = transform(values, NOW, Rules(1111, None, 3600), WriterSchemas(), "events", reading)
    assert [result.failures[i] for i in range(2)] == [
        ("invalid", "event_timestamp is missing"),
        ("invalid", "event_name is missing"),
    ]


def rows_of(result: Transformed) -> list[dict[str, str]]:
    rows = []
    for group, line in zip(result.placed, result.lines, strict=True):
        if group != FAILED:
            (row,) = csv.DictReader(io.StringIO((result.groups[group][2] + line).decode(), newline=""))
            rows.append({k: v for k, v in row.items() if v})
    return rows


def test_json_values_plain_and_in_the_confluent_framing_become_rows() -> None:
    reading = Reading.of("events", "json", GAME_MAPPING)
    assert reading is not None and reading.reads_keys and reading.reads_headers
    body = json.dumps(game_event(1)).encode()
    values = [body, b"\x00\x00\x00\x00\x07" + body, b"not json", b"[1, 2]", None]
    result = transform(values, NOW, RULES, WriterSchemas(), "events", reading, [b"k"] * 5, [NO_HEADERS] * 5)
    rows = rows_of(result)
    assert len(rows) == 2 and rows[0] == rows[1]
    assert rows[0]["profile_id"] == "player-1" and rows[0]["event_timestamp"] == str((NOW_US - 1_000_003) // 10**6)
    assert result.failures[2][0] == "decode" and "not valid UTF-8 JSON" in result.failures[2][1]
    assert result.failures[3] == ("decode", "the value is a JSON list, not an object")
    assert result.failures[4][0] == "decode"


def test_a_record_that_makes_the_mapping_raise_is_judged_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Stands for any bug a hostile record could reach in a column function: its neighbours still make rows.
    apply = CompiledMapping.apply

    def raising(self: CompiledMapping, chunk: Chunk) -> Any:
        if any(record.get("type") == "boom" for record in chunk.records):
            raise RuntimeError("a column function broke")
        return apply(self, chunk)

    monkeypatch.setattr(CompiledMapping, "apply", raising)
    reading = Reading.of("events", "json", GAME_MAPPING)
    assert reading is not None
    events = [game_event(1), {**game_event(2), "type": "boom"}, game_event(3)]
    values = [json.dumps(event).encode() for event in events]
    result = transform(values, NOW, RULES, WriterSchemas(), "events", reading, [b"k"] * 3, [NO_HEADERS] * 3)
    assert result.failures == {1: ("invalid", "RuntimeError while mapping it: a column function broke")}
    assert [row["profile_id"] for row in rows_of(result)] == ["player-1", "player-3"]


def test_avro_is_read_with_the_writers_own_schema_and_its_timestamp_type() -> None:
    mapping = spec("profile_id: user.id\nevent_name: type\nevent_timestamp: ts\nevent_json: {pack: rest}\nmcc: price")
    reading = Reading.of("events", "avro", mapping)
    assert reading is not None and not reading.reads_keys
    records = [
        {"user": {"id": 77}, "type": "buy", "ts": NOW_US, "props": {"sku": "x"}, "level": 3, "price": 250.0},
        {"user": {"id": 78}, "type": "buy", "ts": NOW_US, "props": {}, "level": None, "price": 9.99},
    ]
    values = [raw_avro(r, GAME_SCHEMA) for r in records]
    result = transform(
        values, NOW, Rules(1111, None, 3600), WriterSchemas(raw=json.dumps(GAME_SCHEMA)), "events", reading
    )
    (row,) = rows_of(result)
    assert row["profile_id"] == "77" and row["event_timestamp"] == str(NOW_US // 10**6) and row["mcc"] == "250"
    assert json.loads(row["event_json"]) == {"props": {"sku": "x"}, "level": 3}
    assert result.failures[1] == ("invalid", "mcc (path price): 9.99 is not an integer")


CONFIG = """
kafka: {bootstrap_servers: "127.0.0.1:9092"}
avro: {format: confluent, schema_registry_url: "http://127.0.0.1:8081"}
post_api: {application_id: 1111}
routes:
  - topics: [game.events]
    method: events
    mapping:
"""


COMPLETE = {"profile_id": "user.id", "event_name": "type", "event_timestamp": "ts"}
"""What every events mapping needs, so that each case below is the one problem of its file."""


@pytest.mark.parametrize(
    ("mapping", "words"),
    [
        ("user_id: user.id", "routes.0.mapping.user_id: not a parameter of method events"),
        ("event_timestamp: {path: ts, unit: sec}", "routes.0.mapping.event_timestamp.unit: must be 's', 'ms', 'us'"),
        ("event_name: type..name", "routes.0.mapping.event_name: malformed path 'type..name'"),
        ("event_name: {path: 'a b'}", "routes.0.mapping.event_name.path: malformed path 'a b'"),
        ("event_name: {path: type, unit: s}", "routes.0.mapping.event_name.unit: event_name is not a timestamp"),
        ("event_name: {pack: [a]}", "routes.0.mapping.event_name.pack: event_name is not a JSON parameter"),
        ("mcc: {value: lots}", "routes.0.mapping.mcc.value: 'lots' is not an integer"),
        ("event_name: {colour: red}", "routes.0.mapping.event_name: expected a dot path, a list of sources"),
        ("google_aid: {key: false}", "routes.0.mapping.google_aid.key: must be true"),
    ],
)
def test_check_config_refuses_a_bad_mapping_naming_the_key(tmp_path: Path, mapping: str, words: str) -> None:
    path = tmp_path / "bridge.yaml"
    name = mapping.split(":")[0]
    complete = "".join(f"      {key}: {source}\n" for key, source in COMPLETE.items() if key != name)
    path.write_text(CONFIG + complete + f"      {mapping}\n")
    result = run_cli("check-config", "--config", str(path), env={"BRIDGE_POST_API_KEY": KEY})
    assert result.returncode == 2, result.stdout
    assert words in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_check_config_prints_a_good_mapping(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(CONFIG + "".join(f"      {line}\n" for line in GAME_MAPPING_YAML.strip().splitlines()))
    result = run_cli("check-config", "--config", str(path), env={"BRIDGE_POST_API_KEY": KEY})
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)["routes"][0]["mapping"]
    assert printed["event_timestamp"] == {"path": "ts", "unit": "us", "lookup": None, "default": None}
    assert printed["google_aid"] == {"key": True}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.dictionaries(st.sampled_from(["user", "type", "ts", "props", "level", "client", "app"]), json_values))
)
def test_hostile_records_are_rows_or_named_dead_letters(records: list[dict[str, Any]]) -> None:
    keys = [None] * len(records)
    headers = [MessageHeaders(((b"device-id", b"\xff"),)) if i % 2 else None for i in range(len(records))]
    result = mapped(GAME_MAPPING, records, keys=keys, headers=headers)
    assert sorted([*result.positions, *result.failures]) == list(range(len(records)))
    for detail in result.failures.values():
        assert detail.split(" ")[0] in GAME_MAPPING
    for row in result.records:
        assert row["event_timestamp"] is None or type(row["event_timestamp"]) is int
        assert row["application_id"] in (None, 3713842, 3713855)
        assert all(type(row[name]) in (str, type(None)) for name in ("profile_id", "event_name", "event_json"))


def test_other_methods_take_decimals_arrays_and_attributes_from_a_mapping() -> None:
    purchase = {"uid": "u1", "kind": "one_time_purchase", "at": int(NOW), "amount": "19.99", "cur": "usd"}
    revenue = spec(
        "profile_id: uid\nrevenue_event_type: kind\nevent_timestamp: {path: at, unit: s}\nprice: amount\ncurrency: cur"
    )
    reading = Reading.of("revenue", "json", revenue)
    values = [json.dumps(purchase).encode(), json.dumps({**purchase, "amount": "0.123456789"}).encode()]
    result = transform(values, NOW, Rules(1111, None, 3600), WriterSchemas(), "revenue", reading)
    assert rows_of(result) == [
        {
            "application_id": "1111",
            "profile_id": "u1",
            "revenue_event_type": "one_time_purchase",
            "event_timestamp": str(int(NOW)),
            "price": "19.99",
            "currency": "usd",
        }
    ]
    assert result.failures[1] == ("invalid", "price (path amount): '0.123456789' has more than 8 decimal places")

    account = {"user": {"id": "u7"}, "plan": "pro", "seats": 3, "beta": True}
    profiles = spec("profile_id: user.id\nattributes: {pack: rest}")
    result = transform(
        [json.dumps(account).encode()],
        NOW,
        Rules(1111, None, 3600),
        WriterSchemas(),
        "profiles",
        Reading.of("profiles", "json", profiles),
    )
    (row,) = rows_of(result)
    assert row["profile_id"] == "u7" and json.loads(row["attributes"]) == {"plan": "pro", "seats": 3, "beta": True}

    codes = mapped(spec("product_promo_codes: codes"), [{"codes": ["A1", 7]}, {"codes": "A1"}], "ecommerce")
    assert codes.records[0]["product_promo_codes"] == ["A1", "7"]
    assert codes.failures[1] == "product_promo_codes (path codes): a str is not an array"


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.binary(max_size=40)
        | st.builds(
            lambda r: json.dumps(r).encode(), st.dictionaries(st.sampled_from(["ts", "app", "user"]), json_values)
        )
        | st.builds(lambda b: b"\x00\x00\x00\x00\x01" + b, st.binary(max_size=20)),
        max_size=20,
    )
)
def test_hostile_json_values_are_rows_or_named_dead_letters(values: list[bytes]) -> None:
    reading = Reading.of("events", "json", GAME_MAPPING)
    result = transform(
        values, NOW, Rules(1111, None, 3600), WriterSchemas(), "events", reading, values, [None] * len(values)
    )
    for index, group in enumerate(result.placed):
        if group == FAILED:
            reason, detail = result.failures[index]
            assert reason in ("decode", "invalid", "expired") and detail
        else:
            assert result.lines[index]


@pytest.mark.parametrize(
    ("mapping", "value", "detail"),
    [
        ("mcc: t", "1" * 5000, "has too many digits to be an integer"),
        ("event_timestamp: {path: t, unit: s}", "9" * 5000, "has too many digits to be an integer"),
        ("event_timestamp: {path: t, unit: s}", 1e308, "is not a timestamp in s"),
        ("event_timestamp: {path: t, unit: s}", float("inf"), "is not a timestamp in s"),
        ("price: t", "1" * 5000, "is not a decimal"),
    ],
)
def test_values_past_pythons_limits_are_dead_letters_not_errors(mapping: str, value: Any, detail: str) -> None:
    method = "revenue" if mapping.startswith("price") else "events"
    result = mapped(spec(mapping), [{"t": value}], method)
    assert detail in result.failures[0]
