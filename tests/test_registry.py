"""The local Schema Registry, driven by confluent-kafka's own clients and serializers."""

from __future__ import annotations

import asyncio
import json
import signal
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from confluent_kafka.schema_registry import AsyncSchemaRegistryClient, Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from bridge.sandbox import SchemaRegistry
from devtools.testkit.bridge_child import bridge_command

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = (ROOT / "schemas" / "appmetrica_event.avsc").read_text()
SUBJECT = "appmetrica.events-value"
SMALL = json.dumps({"type": "record", "name": "Small", "fields": [{"name": "a", "type": "long"}]})
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


@pytest.fixture
async def registry() -> AsyncIterator[SchemaRegistry]:
    async with SchemaRegistry() as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def client(registry: SchemaRegistry) -> Any:
    return SchemaRegistryClient({"url": registry.url})


async def call(function: Any, *args: Any) -> Any:
    """Run a blocking client call off the loop that serves the registry."""
    return await asyncio.to_thread(function, *args)


async def test_register_is_idempotent_and_ids_are_global(registry: SchemaRegistry) -> None:
    first, second = client(registry), client(registry)  # two clients: no cache hides a second request
    await call(first.set_compatibility, SUBJECT, "NONE")  # SMALL follows the contract, which BACKWARD forbids
    schema_id = await call(first.register_schema, SUBJECT, Schema(CONTRACT, "AVRO"))
    reformatted = json.dumps(json.loads(CONTRACT), indent=None, separators=(", ", ": "))
    assert await call(second.register_schema, SUBJECT, Schema(reformatted, "AVRO")) == schema_id
    assert await call(second.register_schema, "other-value", Schema(CONTRACT, "AVRO")) == schema_id
    small_id = await call(second.register_schema, SUBJECT, Schema(SMALL, "AVRO"))
    assert small_id != schema_id
    assert await call(second.get_subjects) == [SUBJECT, "other-value"]
    assert await call(second.get_versions, SUBJECT) == [1, 2]


async def test_fetch_by_id_version_and_lookup(registry: SchemaRegistry) -> None:
    await call(client(registry).set_compatibility, SUBJECT, "NONE")
    schema_id = await call(client(registry).register_schema, SUBJECT, Schema(CONTRACT, "AVRO"))
    await call(client(registry).register_schema, SUBJECT, Schema(SMALL, "AVRO"))
    fetched = await call(client(registry).get_schema, schema_id)
    assert json.loads(fetched.schema_str) == json.loads(CONTRACT)
    assert fetched.schema_type == "AVRO"
    latest = await call(client(registry).get_latest_version, SUBJECT)
    assert (latest.version, json.loads(latest.schema.schema_str)) == (2, json.loads(SMALL))
    first = await call(client(registry).get_version, SUBJECT, 1)
    assert (first.schema_id, first.subject) == (schema_id, SUBJECT)
    found = await call(client(registry).lookup_schema, SUBJECT, Schema(CONTRACT, "AVRO"))
    assert (found.schema_id, found.version) == (schema_id, 1)


async def test_unknown_things_carry_confluent_error_codes(registry: SchemaRegistry) -> None:
    await call(client(registry).register_schema, SUBJECT, Schema(SMALL, "AVRO"))
    cases: list[tuple[Any, tuple[Any, ...], int, int]] = [
        (client(registry).get_schema, (99,), 404, 40403),
        (client(registry).get_latest_version, ("nobody-value",), 404, 40401),
        (client(registry).get_version, (SUBJECT, 5), 404, 40402),
        (client(registry).lookup_schema, (SUBJECT, Schema(CONTRACT, "AVRO")), 404, 40403),
        (client(registry).lookup_schema, ("nobody-value", Schema(SMALL, "AVRO")), 404, 40401),
        (client(registry).register_schema, (SUBJECT, Schema('{"type": "nonsense"}', "AVRO")), 422, 42201),
        (client(registry).register_schema, (SUBJECT, Schema('{"type": "object"}', "JSON")), 422, 42201),
    ]
    for function, args, status, code in cases:
        with pytest.raises(SchemaRegistryError) as raised:
            await call(function, *args)
        assert (raised.value.http_status_code, raised.value.error_code) == (status, code), function


async def test_avro_serializer_and_deserializer_round_trip(registry: SchemaRegistry) -> None:
    record = {field["name"]: None for field in json.loads(CONTRACT)["fields"]} | {
        "application_id": 1111,
        "profile_id": "user-1",
        "event_name": "purchase",
        "event_timestamp": 1_700_000_000_000,
    }
    serializer = AvroSerializer(client(registry), CONTRACT, conf={"auto.register.schemas": True})
    context = SerializationContext("appmetrica.events", MessageField.VALUE)
    payload: bytes = await call(serializer, record, context)
    magic, schema_id = struct.unpack(">bI", payload[:5])
    assert magic == 0
    latest = await call(client(registry).get_latest_version, SUBJECT)  # the topic's default value subject
    assert schema_id == latest.schema_id
    decoded = await call(AvroDeserializer(client(registry)), payload, context)
    assert decoded["event_name"] == "purchase"
    assert decoded["profile_id"] == "user-1"


def test_in_process_register_refuses_what_is_not_avro() -> None:
    registry = SchemaRegistry()
    with pytest.raises(ValueError, match="Invalid schema"):
        registry.register(SUBJECT, "{")
    with pytest.raises(ValueError, match="Invalid schema"):
        registry.register(SUBJECT, '{"type": "enum", "name": "E", "symbols": [1]}')
    assert registry.register(SUBJECT, SMALL) == 1


async def test_async_client_fetches_by_id(registry: SchemaRegistry) -> None:
    """bridge.decoding.registry reads schemas with the async client."""
    schema_id = registry.register(SUBJECT, CONTRACT)
    async_client = AsyncSchemaRegistryClient({"url": registry.url})
    fetched = await async_client.get_schema(schema_id)
    assert fetched.schema_str is not None
    assert json.loads(fetched.schema_str) == json.loads(CONTRACT)
    with pytest.raises(SchemaRegistryError) as raised:
        await async_client.get_schema(schema_id + 1)
    assert raised.value.error_code == 40403


async def test_raw_http_answers(registry: SchemaRegistry, http: aiohttp.ClientSession) -> None:
    url = registry.url
    async with http.post(f"{url}/subjects/s/versions", json={"schema": SMALL}) as response:
        assert response.status == 200
        assert response.content_type == CONTENT_TYPE
        assert await response.json(content_type=None) == {"id": 1}
    async with http.get(f"{url}/subjects/s/versions/latest") as response:
        assert await response.json(content_type=None) == {"subject": "s", "version": 1, "id": 1, "schema": SMALL}
    async with http.get(f"{url}/schemas/ids/1") as response:
        assert await response.json(content_type=None) == {"schema": SMALL}
    for path, status, code in [
        ("/schemas/ids/0", 404, 40403),
        ("/schemas/ids/x", 404, 40403),
        ("/subjects/s/versions/0", 422, 42202),
        ("/subjects/s/versions/two", 422, 42202),
        ("/subjects/nobody/versions", 404, 40401),
    ]:
        async with http.get(url + path) as response:
            assert response.status == status, path
            assert (await response.json(content_type=None))["error_code"] == code, path
    for body, code in [(b"not json", 400), (b'{"schema": 1}', 42201), (b'{"schema": "x", "references": [{}]}', 42201)]:
        async with http.post(f"{url}/subjects/s/versions", data=body) as response:
            assert (await response.json(content_type=None))["error_code"] == code, body


async def test_cli_serves_until_sigint(http: aiohttp.ClientSession) -> None:
    async with bridge_command("registry", "--port", "0") as process:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line.startswith("Schema Registry listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        async with http.post(f"{url}/subjects/s/versions", json={"schema": SMALL}) as response:
            assert response.status == 200
        process.send_signal(signal.SIGINT)
        _, errors = await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == 0, errors
