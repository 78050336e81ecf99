"""The registry side says what is wrong: unreadable writer schemas are `schema` from the first fetch, refused
credentials and failed TLS are named and make the bridge not ready, unknown ids are remembered boundedly (issue 10)."""

from __future__ import annotations

import datetime
import json
import ssl
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from confluent_kafka.schema_registry import AsyncSchemaRegistryClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bridge.decoding import registry as decode
from bridge.decoding.avro import WIRE_HEADER, WriterSchemas, contract_schema, parse
from bridge.decoding.registry import ConfluentDecoder, RawDecoder, RegistryUnavailableError
from bridge.decoding.transform import FAILED, Rules, transform
from bridge.sandbox.registry import SchemaRegistry
from devtools.testkit.records import event, wire

NOW = time.time()
RULES = Rules(default_application=1111, keyed=None, max_future_s=3600)
READER = parse(contract_schema())


def without(field: str) -> dict[str, Any]:
    schema = contract_schema()
    schema["fields"] = [f for f in schema["fields"] if f["name"] != field]
    return schema


def decoder_for(url: str) -> ConfluentDecoder:
    return ConfluentDecoder(AsyncSchemaRegistryClient({"url": url, "max.retries": 1, "timeout": 10}))


@pytest.mark.parametrize("change", ["removed", "renamed"])
async def test_a_writer_without_a_required_field_is_schema_from_the_first_fetch(
    registry: SchemaRegistry, change: str
) -> None:
    writer = without("event_name")
    if change == "renamed":
        writer["fields"].append({"name": "name", "type": "string"})
    schema_id = registry.register("t-value", json.dumps(writer))
    record = {k: v for k, v in event(1).items() if k != "event_name"}
    if change == "renamed":
        record["name"] = "level_up"
    decoder = decoder_for(registry.url)
    value = wire(schema_id, record, parse(writer))
    await decoder.prepare([value])
    why = decoder.schemas("events").unknown[schema_id]
    assert why.startswith("cannot be read into the contract: ") and "event_name" in why
    values = [value, wire(schema_id, record, parse(writer))]
    result = transform(values, NOW, RULES, decoder.schemas("events"), "events")
    assert list(result.placed) == [FAILED, FAILED]
    assert result.failures[0] == ("schema", f"schema id {schema_id}: {why}")


def test_a_raw_schema_file_without_a_required_field_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "writer.avsc"
    path.write_text(json.dumps(without("event_timestamp")))
    with pytest.raises(ValueError, match=r"cannot be read into the contract: .*event_timestamp"):
        RawDecoder(path)


def test_a_union_branch_the_contract_lacks_is_schema_when_read() -> None:
    """What only a record's value shows (the branch it uses) is a `schema` failure of that record alone."""
    writer = contract_schema()
    for field in writer["fields"]:
        if field["name"] == "mcc":
            field["type"] = ["null", "int", "string"]
    schemas = WriterSchemas(by_id={5: json.dumps(writer)})
    values = [wire(5, event(1, mcc=250), parse(writer)), wire(5, event(2, mcc="250"), parse(writer))]
    result = transform(values, NOW, RULES, schemas, "events")
    assert result.placed[0] != FAILED and result.placed[1] == FAILED
    assert result.failures[1][0] == "schema"


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_named_and_clear_once_accepted(registry: SchemaRegistry, status: int) -> None:
    schema_id = registry.register("t-value", json.dumps(contract_schema()))
    decoder = decoder_for(registry.url)
    registry.refuse_with = status
    with pytest.raises(RegistryUnavailableError, match=f"refuses the bridge's credentials \\(HTTP {status}\\)"):
        await decoder.prepare([wire(schema_id, event(1))])
    assert decoder.problem() is not None and str(status) in decoder.problem()  # type: ignore[operator]
    assert schema_id not in decoder.schemas("events").unknown, (
        "a refusal is not an unknown id: nothing is dead-lettered"
    )
    registry.refuse_with = None
    await decoder.prepare([wire(schema_id, event(1))])
    assert decoder.problem() is None


def _self_signed(directory: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


@pytest.fixture
async def untrusted_registry(tmp_path: Path) -> AsyncIterator[str]:
    """An HTTPS registry whose certificate no one signed."""

    async def schema(_: web.Request) -> web.Response:
        return web.json_response({"schema": json.dumps(contract_schema())})

    app = web.Application()
    app.router.add_get("/schemas/ids/{id}", schema)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=_self_signed(tmp_path))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"https://127.0.0.1:{port}"
    await runner.cleanup()


async def test_a_registry_certificate_that_fails_verification_is_named(untrusted_registry: str) -> None:
    decoder = decoder_for(untrusted_registry)
    with pytest.raises(RegistryUnavailableError, match="TLS with the schema registry failed: certificate verif"):
        await decoder.prepare([wire(1, event(1))])
    assert "self-signed certificate" in (decoder.problem() or "")


async def test_garbage_minting_schema_ids_is_remembered_boundedly(registry: SchemaRegistry) -> None:
    decoder = decoder_for(registry.url)
    minted = decode._UNKNOWN_IDS_KEPT + 300
    garbage = [struct.pack(">bI", 0, 10_000 + n) + b"garbage" for n in range(minted)]
    for start in range(0, minted, 500):
        await decoder.prepare(garbage[start : start + 500])
    unknown = decoder.schemas("events").unknown
    assert len(unknown) == decode._UNKNOWN_IDS_KEPT
    assert 10_000 + minted - 1 in unknown and 10_000 not in unknown, "the oldest are forgotten first"
    result = transform(garbage[:2] + garbage[-2:], NOW, RULES, decoder.schemas("events"), "events")
    assert [reason for reason, _ in result.failures.values()] == ["schema"] * 4, "forgotten or not, still poison"


async def test_whether_a_writer_is_readable_is_asked_per_method(registry: SchemaRegistry) -> None:
    """A revenue writer (under a record name of its own) is readable by revenue's contract and `schema` for events."""
    writer = contract_schema("revenue") | {"name": "Purchase", "namespace": "shop"}
    schema_id = registry.register("purchases-value", json.dumps(writer))
    decoder = decoder_for(registry.url)
    await decoder.prepare([WIRE_HEADER.pack(0, schema_id) + b"body"])
    assert decoder.schemas("revenue").by_id == {schema_id: json.dumps(writer)}
    assert schema_id not in decoder.schemas("revenue").unknown
    why = decoder.schemas("events").unknown[schema_id]
    assert why.startswith("cannot be read into the contract: ") and "event_name" in why
    assert decoder.schemas("revenue") is decoder.schemas("revenue"), "asked once, until a fetch changes what is known"
