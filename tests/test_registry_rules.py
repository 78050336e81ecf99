"""The registry stand-in where producers depend on it, driven by confluent-kafka's own client and serializers:
basic auth, TLS, compatibility rules, /config, deletes, schema references and JSON errors."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from bridge.config.model import load_config
from bridge.decoding.avro import Readers, contract_schema, parse
from bridge.decoding.registry import ConfluentDecoder, RegistryUnavailableError, make_decoder, registry_client_conf
from bridge.sandbox import SchemaRegistry
from bridge.sandbox.serving import server_tls
from devtools.testkit.bridge_child import bridge_command
from devtools.testkit.records import event, wire
from devtools.tls_local import TlsFiles, make_tls_files

SUBJECT = "appmetrica.events-value"
USER, PASSWORD = "producer", "p@ss:wörd"
V1 = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]}
V2_OPTIONAL = {**V1, "fields": [*V1["fields"], {"name": "b", "type": ["null", "string"], "default": None}]}
V2_REQUIRED = {**V1, "fields": [*V1["fields"], {"name": "b", "type": "string"}]}
DEVICE = {"type": "record", "name": "Device", "namespace": "shared", "fields": [{"name": "model", "type": "string"}]}


def with_device() -> dict[str, Any]:
    """The contract with two extra fields of a type another subject defines, as teams share common records."""
    schema = contract_schema()
    schema["fields"] = [
        *schema["fields"],
        {"name": "device", "type": "shared.Device"},
        {"name": "previous_device", "type": ["null", "shared.Device"], "default": None},
    ]
    return schema


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def secured_registry(tls_files: TlsFiles) -> AsyncIterator[SchemaRegistry]:
    registry = SchemaRegistry(basic_auth=(USER, PASSWORD))
    await registry.start(tls=server_tls(tls_files.server_cert, tls_files.server_key))
    yield registry
    await registry.stop()


@pytest.fixture
async def registry() -> AsyncIterator[SchemaRegistry]:
    async with SchemaRegistry() as running:
        yield running


async def call(function: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(function, *args, **kwargs)


def avro(schema: dict[str, Any], references: list[SchemaReference] | None = None) -> Schema:
    return Schema(json.dumps(schema), "AVRO", references or [])


async def test_basic_auth_over_tls_with_the_confluent_client(
    secured_registry: SchemaRegistry, tls_files: TlsFiles
) -> None:
    conf = {"url": secured_registry.url, "ssl.ca.location": str(tls_files.ca)}
    assert secured_registry.url.startswith("https://127.0.0.1:")
    authed = SchemaRegistryClient({**conf, "basic.auth.user.info": f"{USER}:{PASSWORD}"})
    schema_id = await call(authed.register_schema, SUBJECT, avro(V1))
    for user_info in (None, f"{USER}:wrong", f"other:{PASSWORD}"):
        client = SchemaRegistryClient({**conf, **({"basic.auth.user.info": user_info} if user_info else {})})
        with pytest.raises(SchemaRegistryError) as refused:
            await call(client.get_schema, schema_id)
        assert (refused.value.http_status_code, refused.value.error_code) == (401, 401)
    untrusting = SchemaRegistryClient({"url": secured_registry.url, "basic.auth.user.info": f"{USER}:{PASSWORD}"})
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        await call(untrusting.get_schema, schema_id)


async def test_a_producer_serializes_through_the_secured_registry(
    secured_registry: SchemaRegistry, tls_files: TlsFiles
) -> None:
    client = SchemaRegistryClient(
        {
            "url": secured_registry.url,
            "ssl.ca.location": str(tls_files.ca),
            "basic.auth.user.info": f"{USER}:{PASSWORD}",
        }
    )
    context = SerializationContext("t", MessageField.VALUE)
    payload = await call(AvroSerializer(client, json.dumps(V1)), {"a": 7}, context)
    assert await call(AvroDeserializer(client), payload, context) == {"a": 7}


async def test_backward_is_the_default_and_an_incompatible_schema_is_refused_with_409(registry: SchemaRegistry) -> None:
    client = SchemaRegistryClient({"url": registry.url})
    await call(client.register_schema, SUBJECT, avro(V1))
    assert await call(client.get_compatibility) == "BACKWARD"
    assert await call(client.test_compatibility, SUBJECT, avro(V2_REQUIRED)) is False
    assert await call(client.test_compatibility, SUBJECT, avro(V2_OPTIONAL), "latest") is True
    with pytest.raises(SchemaRegistryError) as refused:
        await call(client.register_schema, SUBJECT, avro(V2_REQUIRED))
    assert (refused.value.http_status_code, refused.value.error_code) == (409, 409)
    assert await call(client.register_schema, SUBJECT, avro(V2_OPTIONAL)) > 0
    assert await call(client.get_versions, SUBJECT) == [1, 2]


async def test_config_per_subject_and_globally(registry: SchemaRegistry) -> None:
    client = SchemaRegistryClient({"url": registry.url})
    await call(client.register_schema, SUBJECT, avro(V1))
    with pytest.raises(SchemaRegistryError) as unset:
        await call(client.get_compatibility, SUBJECT)
    assert unset.value.error_code == 40408
    assert await call(client.set_compatibility, SUBJECT, "NONE") == {"compatibility": "NONE"}
    assert await call(client.get_compatibility, SUBJECT) == "NONE"
    await call(client.register_schema, SUBJECT, avro(V2_REQUIRED))  # anything goes under NONE
    await call(client.set_compatibility, None, "FORWARD")
    assert await call(client.get_compatibility) == "FORWARD"
    # FORWARD: the old reader must read the new writer; dropping field a breaks that, adding one does not.
    await call(client.register_schema, "other-value", avro(V1))
    dropped = {"type": "record", "name": "R", "fields": [{"name": "c", "type": "long"}]}
    assert await call(client.test_compatibility, "other-value", avro(dropped)) is False
    assert await call(client.test_compatibility, "other-value", avro(V2_REQUIRED)) is True
    with pytest.raises(SchemaRegistryError) as invalid:
        await call(client.set_compatibility, None, "SIDEWAYS")
    assert invalid.value.error_code == 42203


async def test_deletes_of_versions_and_subjects(registry: SchemaRegistry) -> None:
    client = SchemaRegistryClient({"url": registry.url})
    await call(client.register_schema, SUBJECT, avro(V1))
    await call(client.register_schema, SUBJECT, avro(V2_OPTIONAL))
    assert await call(client.delete_version, SUBJECT, 1) == 1
    assert await call(client.get_versions, SUBJECT) == [2]
    with pytest.raises(SchemaRegistryError) as gone:
        await call(client.get_version, SUBJECT, 1)
    assert gone.value.error_code == 40402
    assert await call(client.delete_subject, SUBJECT) == [2]
    assert await call(client.get_subjects) == []
    with pytest.raises(SchemaRegistryError) as missing:
        await call(client.delete_subject, SUBJECT)
    assert missing.value.error_code == 40401


async def test_every_error_is_a_json_body(registry: SchemaRegistry) -> None:
    async with aiohttp.ClientSession() as http:
        for method, path, status in [("GET", "/no/such/route", 404), ("PATCH", "/subjects", 405)]:
            async with http.request(method, registry.url + path) as response:
                assert response.status == status
                body = await response.json(content_type=None)
                assert body["error_code"] == status and body["message"], body


async def register_with_reference(client: Any) -> tuple[int, SerializationContext, Any]:
    """Device under its own subject; the topic's schema referencing it; a producer serializing with it."""
    await call(client.register_schema, "shared.Device", avro(DEVICE))
    reference = SchemaReference("shared.Device", "shared.Device", 1)
    schema_id = await call(client.register_schema, SUBJECT, avro(with_device(), [reference]))
    # Built off the loop: with references the serializer asks the registry (served by this loop) at once.
    serializer = await call(
        AvroSerializer,
        client,
        avro(with_device(), [reference]),
        conf={"auto.register.schemas": False, "use.latest.version": True},
    )
    return schema_id, SerializationContext("appmetrica.events", MessageField.VALUE), serializer


async def test_schema_references_are_served_as_the_confluent_client_reads_them(registry: SchemaRegistry) -> None:
    client = SchemaRegistryClient({"url": registry.url})
    schema_id, context, serializer = await register_with_reference(client)
    fetched = await call(client.get_schema, schema_id)
    assert [(r.name, r.subject, r.version) for r in fetched.references] == [("shared.Device", "shared.Device", 1)]
    record = {**event(1), "device": {"model": "Pixel 9"}, "previous_device": {"model": "Pixel 8"}}
    payload = await call(serializer, record, context)
    decoded = await call(AvroDeserializer(client), payload, context)
    assert decoded["device"] == {"model": "Pixel 9"}
    with pytest.raises(SchemaRegistryError) as broken:
        await call(
            client.register_schema, "x-value", avro(with_device(), [SchemaReference("shared.Device", "nope", 1)])
        )
    assert broken.value.error_code == 42201


async def test_the_bridge_decodes_a_writer_schema_with_references(registry: SchemaRegistry) -> None:
    client = SchemaRegistryClient({"url": registry.url})
    schema_id, context, serializer = await register_with_reference(client)
    record = {**event(3), "device": {"model": "Pixel 9"}, "previous_device": None}
    payload: bytes = await call(serializer, record, context)
    decoder = make_decoder("confluent", registry.url, None)
    assert isinstance(decoder, ConfluentDecoder)
    await decoder.prepare([payload])
    schemas = decoder.schemas("events")
    assert schema_id in schemas.by_id, schemas.unknown
    decoded = Readers().decoder(schemas, "events")(payload)
    assert decoded == {k: v for k, v in record.items() if k not in ("device", "previous_device")}
    parse(json.loads(schemas.by_id[schema_id]))  # self-contained: parses with no named types given


async def test_cli_basic_auth_and_tls_flags(tls_files: TlsFiles, tmp_path: Path) -> None:
    args = ("registry", "--port", "0", "--basic-auth", f"{USER}:{PASSWORD}")
    async with bridge_command(
        *args, "--tls-cert", str(tls_files.server_cert), "--tls-key", str(tls_files.server_key)
    ) as process:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line.startswith("Schema Registry listening on https://127.0.0.1:"), line
        url = line.split()[-1]
        conf = {"url": url, "ssl.ca.location": str(tls_files.ca)}
        with pytest.raises(SchemaRegistryError) as refused:
            await call(SchemaRegistryClient(conf).get_subjects)
        assert refused.value.http_status_code == 401
        authed = SchemaRegistryClient({**conf, "basic.auth.user.info": f"{USER}:{PASSWORD}"})
        assert await call(authed.get_subjects) == []
        process.send_signal(signal.SIGINT)
        _, errors = await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == 0, errors
        assert PASSWORD.encode() not in errors


async def test_a_bearer_token_from_the_environment_reaches_the_registry(tmp_path: Path) -> None:
    token = "tok+en/=="
    registry = SchemaRegistry(bearer_token=token)
    await registry.start()
    try:
        schema_id = registry.register(SUBJECT, json.dumps(contract_schema()))
        config = tmp_path / "bridge.yaml"
        avro_section = {
            "format": "confluent",
            "schema_registry_url": registry.url,
            "schema_registry_properties": {
                "bearer.auth.logical.cluster": "lsrc-1",
                "bearer.auth.identity.pool.id": "p",
            },
        }
        config.write_text(
            yaml.safe_dump({"kafka": {"bootstrap_servers": "x:1", "topics": ["t"]}, "avro": avro_section})
        )
        for given, fetched in [(token, True), ("wrong", False)]:
            settings = load_config(
                config, {"BRIDGE_POST_API_KEY": "k" * 16, "BRIDGE_SCHEMA_REGISTRY_BEARER_TOKEN": given}
            )
            conf = registry_client_conf(settings.config.avro, settings.registry)
            decoder = make_decoder("confluent", registry.url, None, conf)
            payload = wire(schema_id, event(1))
            if fetched:
                await decoder.prepare([payload])
                assert schema_id in decoder.schemas("events").by_id
            else:
                with pytest.raises(RegistryUnavailableError, match="401"):
                    await decoder.prepare([payload])
        assert registry.refused_logins == 1
    finally:
        await registry.stop()


async def test_registry_client_certificates_from_the_properties(tls_files: TlsFiles, tmp_path: Path) -> None:
    """The operator contract's example: CA, client certificate and key in avro.schema_registry_properties."""
    registry = SchemaRegistry()
    await registry.start(tls=server_tls(tls_files.server_cert, tls_files.server_key, client_ca=tls_files.ca))
    try:
        schema_id = registry.register(SUBJECT, json.dumps(contract_schema()))
        payload = wire(schema_id, event(1))
        trusted = {"ssl.ca.location": str(tls_files.ca)}
        client_cert = {
            "ssl.certificate.location": str(tls_files.client_cert),
            "ssl.key.location": str(tls_files.client_key),
        }
        decoder = make_decoder("confluent", registry.url, None, {**trusted, **client_cert})
        await decoder.prepare([payload])
        assert schema_id in decoder.schemas("events").by_id
        without_certificate = make_decoder("confluent", registry.url, None, trusted)
        with pytest.raises(RegistryUnavailableError) as refused:
            await without_certificate.prepare([payload])
        assert "schema registry" in str(refused.value)
    finally:
        await registry.stop()
