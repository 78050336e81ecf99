"""A private CA and certificates made on the spot for the local secured servers (Kafka, registry, sandbox).

Nothing here is ever committed: each test session or `kafka_local start --secure` makes a new CA in a directory of
its own. `trustme` issues the certificates; the broker's keystore is PKCS12 because that is what Java reads.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import load_pem_x509_certificate

SERVER_NAMES = ("127.0.0.1", "localhost")
CLIENT_NAME = "bridge-mtls"
"""The common name of the client certificate, which the broker maps to the principal `User:bridge-mtls`."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Paths of one CA's PEM files, and the broker's keystore with its password."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    keystore: Path
    keystore_password: str


def make_tls_files(directory: Path) -> TlsFiles:
    """Write a new CA, a server certificate for loopback and a client certificate into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="appmetrica-bridge local CA")
    server = ca.issue_cert(*SERVER_NAMES, common_name="localhost")
    client = ca.issue_cert(CLIENT_NAME, common_name=CLIENT_NAME)
    files = TlsFiles(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        keystore=directory / "broker.p12",
        keystore_password=secrets.token_urlsafe(16),
    )
    ca.cert_pem.write_to_path(str(files.ca))
    server.cert_chain_pems[0].write_to_path(str(files.server_cert))
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(str(files.server_cert), append=True)
    server.private_key_pem.write_to_path(str(files.server_key))
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    client.private_key_pem.write_to_path(str(files.client_key))
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    chain = [load_pem_x509_certificate(pem.bytes()) for pem in server.cert_chain_pems]
    files.keystore.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"broker",
            key,  # type: ignore[arg-type]
            chain[0],
            chain[1:] or None,
            serialization.BestAvailableEncryption(files.keystore_password.encode()),
        )
    )
    for path in (files.server_key, files.client_key, files.keystore):
        path.chmod(0o600)
    return files
