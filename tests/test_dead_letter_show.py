"""`dead-letters show` reads every letter the way `run` reads its source topic, on the real broker: each of the five
methods, Avro and JSON, contract and mapped routes, through an open and a TLS registry that demands basic auth.
It shows the record and the row it would make now, the raw value when it cannot be decoded, and the key."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
import yaml
from confluent_kafka import Producer

from bridge.kafka.dead_letter_producer import (
    HEADER_DETAIL,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_TOPIC,
)
from bridge.postapi.methods import METHODS
from bridge.sandbox.registry import SchemaRegistry
from bridge.sandbox.serving import server_tls
from devtools.testkit.bridge_child import bridge_command
from devtools.testkit.kafka import TopicFactory
from devtools.testkit.methods import AMOUNTS, PRODUCER_FIELDS, made, producer_schema, same_row
from devtools.testkit.raw_headers import produce_raw
from devtools.testkit.records import APP, KEY, wire
from devtools.tls_local import make_tls_files

USER, PASSWORD = "dlq-reader", "s3cret:pass/wörd"
KINDS = ("avro", "avro-mapped", "json", "json-mapped")
UNREADABLE = 40
KEYS: list[bytes | None] = [None, b"user-42", b"\xff\x00\x01binary"]


def route_topic(method: str, kind: str) -> str:
    return f"src.{method}.{kind}"


def as_json_record(record: dict[str, Any]) -> dict[str, Any]:
    """A contract record as a JSON producer writes it: amounts as decimal text."""
    return {
        name: str(Decimal(int.from_bytes(value, "big", signed=True)).scaleb(-8)) if name in AMOUNTS and value else value
        for name, value in record.items()
    }


def letter_headers(topic: str, offset: int, reason: str = "invalid") -> list[tuple[str, str | bytes | None]]:
    return [
        ("producer-header", b"kept"),
        (HEADER_REASON, reason.encode()),
        (HEADER_DETAIL, b"as the bridge wrote it"),
        (HEADER_TOPIC, topic.encode()),
        (HEADER_PARTITION, b"0"),
        (HEADER_OFFSET, str(offset).encode()),
    ]


@pytest.fixture(params=["open", "secured"])
async def any_registry(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[SchemaRegistry, dict[str, Any], dict[str, str]]]:
    """A registry, the `avro` settings that reach it, and the environment with its credentials."""
    if request.param == "open":
        registry = SchemaRegistry()
        await registry.start()
        yield registry, {}, {}
    else:
        files = make_tls_files(tmp_path / "tls")
        registry = SchemaRegistry(basic_auth=(USER, PASSWORD))
        await registry.start(tls=server_tls(files.server_cert, files.server_key))
        properties = {"schema_registry_properties": {"ssl.ca.location": str(files.ca)}}
        yield registry, properties, {"BRIDGE_SCHEMA_REGISTRY_USER_INFO": f"{USER}:{PASSWORD}"}
    await registry.stop()


async def show(config: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    async with bridge_command("dead-letters", "show", "--config", str(config), *args, env=env) as process:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    text = out.decode() + err.decode()
    assert PASSWORD not in text and KEY not in text, "no secret is printed"
    return process.returncode, out.decode(), err.decode()


async def test_show_reads_every_method_format_and_route_kind_as_run_does(
    kafka_bootstrap: str,
    new_topic: TopicFactory,
    any_registry: tuple[SchemaRegistry, dict[str, Any], dict[str, str]],
    tmp_path: Path,
) -> None:
    registry, avro, env = any_registry
    dlq = new_topic(1)
    now_ms = int(time.time() * 1000)
    routes = []
    values: list[bytes | None] = []
    headers = []
    expected: list[tuple[str, dict[str, str]]] = []
    for method in METHODS:
        fields = [name for name, _ in PRODUCER_FIELDS[method]]
        schema = producer_schema(method)
        schema_id = registry.register(f"{method}-value", json.dumps(schema))
        for kind in KINDS:
            topic = route_topic(method, kind)
            mapping = {name: name for name in fields} if kind.endswith("mapped") else None
            routes.append({"topics": [topic], "method": method, "format": kind.split("-")[0], "mapping": mapping})
            for seq in (1, 2):
                sample = made(method, seq, now_ms)
                if kind.startswith("avro"):
                    value = wire(schema_id, sample.record, fastavro.parse_schema(schema))
                else:
                    value = json.dumps(as_json_record(sample.record), ensure_ascii=False).encode()
                headers.append(letter_headers(topic, len(values)))
                values.append(value)
                expected.append((topic, sample.row))
    broken_rule = made("revenue", 3, now_ms).record | {"revenue_event_type": "gift"}
    poison: list[tuple[str, bytes | None]] = [
        (route_topic("events", "avro"), b"\x01\x02\xff\xfe binary"),
        (route_topic("profiles", "json"), b'{"broken json'),
        (route_topic("revenue", "json"), json.dumps(as_json_record(broken_rule)).encode()),
        (route_topic("adrevenue", "avro"), None),
        ("a.topic.no.route.reads", b"anything"),
    ]
    for topic, poisoned in poison:
        headers.append(letter_headers(topic, len(values)))
        values.append(poisoned)
    produce_letters(
        kafka_bootstrap,
        dlq,
        [(KEYS[i % len(KEYS)], v, h) for i, (v, h) in enumerate(zip(values, headers, strict=True))],
    )
    # Kafka allows any bytes in a header name; the client cannot read such a name. Enough of them that the
    # interpreter specialises the call site that reads headers.
    bad_name = [(b"ok", b"1"), (b"\xff\xfe-name", b"x"), (HEADER_REASON.encode(), b"decode")]
    produce_raw(kafka_bootstrap, dlq, [(None, b"v", bad_name)] * UNREADABLE)
    config = {
        "kafka": {"bootstrap_servers": kafka_bootstrap, "group_id": "g", "dead_letter_topic": dlq},
        "avro": {"format": "confluent", "schema_registry_url": registry.url, **avro},
        "post_api": {"url": "http://127.0.0.1:9", "application_id": APP},
        "routes": routes,
    }
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))

    # The same letters as JSON and as text: both at once.
    (code, out, err), (text_code, text, text_err) = await asyncio.gather(
        show(path, env, "--json", "--limit", "1000"), show(path, env, "--limit", "1000")
    )
    assert code == 0, err
    shown = [json.loads(line) for line in out.splitlines()]
    assert len(shown) == len(values) + UNREADABLE
    assert [letter.get("key") for letter in shown[:3]] == [None, "user-42", None]
    assert shown[2]["key_hex"] == KEYS[2].hex()  # type: ignore[union-attr]
    assert shown[0]["headers"][0] == ["producer-header", {"value": "kept"}]
    for unreadable in shown[len(values) :]:
        # What the client can read is shown (the headers named in UTF-8); that some were not is said.
        assert unreadable["headers_readable"] is False and ["ok", {"value": "1"}] in unreadable["headers"]
        assert unreadable["raw_value"] == "v"
    del shown[len(values) :]
    for letter, (topic, row) in zip(shown, expected, strict=False):
        assert letter["source"]["topic"] == topic
        assert letter["problem"] is None, (topic, letter["problem"])
        assert letter["record"] is not None
        assert same_row(letter["row"], row), (topic, letter["row"], row)
    undecodable, broken_json, breaks, tombstone, unrouted = shown[len(expected) :]
    assert undecodable["record"] is None and undecodable["raw_value_hex"] == poison[0][1].hex()  # type: ignore[union-attr]
    assert "not decoded (decode)" in undecodable["problem"]
    assert broken_json["raw_value"] == '{"broken json' and broken_json["value_bytes"] == 13
    assert breaks["record"]["revenue_event_type"] == "gift" and breaks["row"] is None
    assert breaks["problem"].startswith("breaks a rule now (invalid): revenue_event_type")
    assert tombstone["problem"] == "not decoded: the value is null (a tombstone)"
    assert unrouted["problem"] == "not decoded: no route reads topic 'a.topic.no.route.reads' now"
    assert unrouted["raw_value"] == "anything"

    assert text_code == 0, text_err
    assert text.count("  row now  {") == len(expected)
    assert '"price": "1.12345678"' in text, "a contract decimal is shown as its amount"
    assert "  value    hex 01 02 ff fe" in text and '  value    "{\\"broken json"' in text
    assert "  key      (none)" in text and "key      None" not in text
    assert text.count("headers  (not readable: a header name is not UTF-8 text)") == UNREADABLE


def produce_letters(
    bootstrap: str, topic: str, letters: list[tuple[bytes | None, bytes | None, list[tuple[str, str | bytes | None]]]]
) -> None:
    """Write (key, value, headers) letters in order to partition 0."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for key, value, headers in letters:
        producer.produce(topic, value=value, key=key, headers=headers, partition=0)
    assert producer.flush(30) == 0
