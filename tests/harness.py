"""Helpers for end-to-end tests: contract events, producing them to the real broker, running the bridge's CLI."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import fastavro
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

# The ACL types are documented in confluent_kafka.admin, which re-exports them without listing them as public.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from bridge.avro import contract_schema, parse
from devtools.kafka_local import LocalKafka
from devtools.tls_local import TlsFiles

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = parse(contract_schema())
KEY = "test-post-api-key-0123456789"
APP = 4242
SUBJECT = "appmetrica.events-value"
"""The registry subject of the contract, as a Confluent serializer names it for topic appmetrica.events."""

TRICKY = [
    'quote " and comma, both',
    "new\nline and\r\ncrlf",
    "Кириллица и emoji 🎮🍿",
    "tab\tand trailing space ",
    "",
]


def event(seq: int, now_ms: int | None = None, **fields: Any) -> dict[str, Any]:
    """A valid contract record whose `event_json` carries `seq`, with awkward text in its strings."""
    now_ms = now_ms or int(time.time() * 1000)
    tricky = TRICKY[seq % len(TRICKY)]
    record: dict[str, Any] = {name["name"]: None for name in contract_schema()["fields"]}
    record.update(
        application_id=APP if seq % 2 else None,
        profile_id=f'user-{seq % 97}, "{tricky}"',
        event_name=f"energy_recovered {tricky}".strip(),
        event_timestamp=now_ms - (seq % 1000) * 1000,
        event_json=json.dumps({"seq": seq, "note": tricky, "nested": {"level": seq % 10}}, ensure_ascii=False),
        session_type="foreground" if seq % 3 else None,
        os_name="android",
        device_model=f"Model {tricky}",
        mcc=250,
        mnc=seq % 100,
    )
    record.update(fields)
    return record


def raw_avro(record: dict[str, Any], schema: Any = CONTRACT) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def wire(schema_id: int, record: dict[str, Any], schema: Any = CONTRACT) -> bytes:
    """The Confluent wire format: magic byte 0, the schema id, the Avro body."""
    return struct.pack(">bI", 0, schema_id) + raw_avro(record, schema)


def produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes | None],
    partitions: int = 4,
    headers: list[tuple[str, str | bytes | None]] | None = None,
) -> None:
    """Write values round-robin over the partitions, keyed by index, and wait for every ack."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    failures: list[str] = []

    def delivered(error: Any, _: Any) -> None:
        if error is not None:
            failures.append(str(error))

    for index, value in enumerate(values):
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=str(index).encode(),
                    partition=index % partitions,
                    headers=headers,
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(60)
    assert remaining == 0 and not failures, f"produce failed: {failures[:3]} ({remaining} unsent)"


def end_offsets(bootstrap: str, topic: str, partitions: int = 4) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "offset-probe"})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, topic: str, partitions: int = 4) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in found}
    finally:
        consumer.close()


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30) -> list[Any]:
    """Every record of a topic from the start, waiting until `expected` arrived or the timeout."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"reader-{time.monotonic_ns()}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            records += [m for m in consumer.consume(500, 0.5) if m.error() is None]
    finally:
        consumer.close()
    return records


@contextlib.asynccontextmanager
async def bridge_command(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m bridge ARGS` with its output piped; killed on the way out if the test left it running."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def sample(metrics: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`; 0 when none is exported yet."""
    total = 0.0
    for line in metrics.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def seqs(events: Iterable[dict[str, str]]) -> list[int]:
    return [json.loads(e["event_json"])["seq"] for e in events]


async def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(interval_s)


def bridge_config(
    bootstrap: str,
    topic: str,
    post_api_url: str,
    *,
    group: str,
    registry_url: str | None = None,
    schema_file: Path | None = None,
    port: int | None = None,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """A bridge configuration for tests; `sections` are merged over the defaults, section by section."""
    avro: dict[str, Any] = (
        {"format": "confluent", "schema_registry_url": registry_url}
        if registry_url
        else {"format": "raw", "schema_file": str(schema_file or ROOT / "schemas" / "appmetrica_event.avsc")}
    )
    config: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": group,
            "topics": [topic],
            "properties": {"session.timeout.ms": 10000, "heartbeat.interval.ms": 1000},
        },
        "avro": avro,
        "post_api": {"url": post_api_url, "application_id": APP},
        "batch": {"max_rows": 1000, "linger_ms": 200},
        "upload": {"max_in_flight": 4, "requests_per_second": 200, "retry_base_s": 0.05, "retry_max_s": 1},
        "server": {"host": "127.0.0.1", "port": port or free_port()},
        "shutdown": {"drain_timeout_s": 10},
        "log": {"progress_interval_s": 2},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


class BridgeProcess:
    """`appmetrica-bridge run` in a child process, its JSON log lines kept in a file."""

    def __init__(
        self,
        config: dict[str, Any],
        workdir: Path,
        name: str = "bridge",
        key: str | None = KEY,
        env: dict[str, str] | None = None,
    ) -> None:
        """`key` is the default Post API key (BRIDGE_POST_API_KEY); None leaves it unset. `env` adds variables."""
        self.config = config
        self._env = env or {}
        self.port: int = config["server"]["port"]
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"{name}.log"
        self._key = key
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, own_process_group: bool = False) -> BridgeProcess:
        """`own_process_group`: the bridge leads a process group of its own (with its transform workers), as under
        a terminal or an init that signals the whole group."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("BRIDGE_POST_API_KEY", None)
        if self._key is not None:
            env["BRIDGE_POST_API_KEY"] = self._key
        env.update(self._env)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                process_group=0 if own_process_group else None,
            )
        return self

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self._process is not None, "not started"
        return self._process

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    async def wait(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"bridge still running {timeout_s:g} s later; log tail:\n{self.tail()}")
            await asyncio.sleep(0.1)
        return self.process.returncode

    async def get(self, path: str) -> tuple[int, str]:
        """GET one of the bridge's HTTP endpoints: status and body."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.port}{path}") as response,
        ):
            return response.status, await response.text()

    async def serving(self, timeout_s: float = 30) -> None:
        """Wait until the bridge's HTTP endpoints answer."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await self.get("/healthz")
                return
            except aiohttp.ClientError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise AssertionError(f"the bridge does not serve HTTP; log tail:\n{self.tail()}") from None
                await asyncio.sleep(0.2)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def logs(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                lines.append({"event": line})
        return lines

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclasses.dataclass(frozen=True)
class SecuredKafka:
    """The session's secured broker: SASL_SSL (SCRAM-SHA-512) and mutual-TLS listeners with ACLs enforced.

    `plain` is its unauthenticated listener, whose principal is a super user: tests create topics and ACLs and
    produce through it, so only the bridge's own connections meet the security under test.
    """

    broker: LocalKafka
    user: str
    password: str

    @property
    def plain(self) -> str:
        return self.broker.bootstrap

    @property
    def tls(self) -> TlsFiles:
        return self.broker.tls

    def sasl_properties(self) -> dict[str, str]:
        """The bridge's properties for the SASL_SSL listener, all but the password (given by the environment)."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": self.user,
            "ssl.ca.location": str(self.tls.ca),
        }

    def mtls_properties(self) -> dict[str, str]:
        return {
            "security.protocol": "SSL",
            "ssl.ca.location": str(self.tls.ca),
            "ssl.certificate.location": str(self.tls.client_cert),
            "ssl.key.location": str(self.tls.client_key),
        }

    def grant(self, principal: str, topics: Sequence[str], group: str, dead_letter_topic: str | None) -> None:
        """Exactly the ACLs docs/operations.md lists: Read on the topics and the group, Write on the DLQ topic."""
        allow = AclPermissionType.ALLOW
        literal = ResourcePatternType.LITERAL
        bindings = [
            AclBinding(ResourceType.TOPIC, t, literal, principal, "*", AclOperation.READ, allow) for t in topics
        ]
        bindings.append(AclBinding(ResourceType.GROUP, group, literal, principal, "*", AclOperation.READ, allow))
        if dead_letter_topic is not None:
            bindings.append(
                AclBinding(ResourceType.TOPIC, dead_letter_topic, literal, principal, "*", AclOperation.WRITE, allow)
            )
        self._create(bindings)

    def grant_describe(self, principal: str, topic: str) -> None:
        """Describe alone on a topic: metadata, but no records."""
        literal, allow = ResourcePatternType.LITERAL, AclPermissionType.ALLOW
        self._create([AclBinding(ResourceType.TOPIC, topic, literal, principal, "*", AclOperation.DESCRIBE, allow)])

    def _create(self, bindings: list[AclBinding]) -> None:
        admin = AdminClient({"bootstrap.servers": self.plain})
        for future in admin.create_acls(bindings).values():
            future.result(timeout=30)
