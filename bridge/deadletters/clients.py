"""The tools' Kafka clients: the bridge's connection properties, librdkafka's own log kept off the terminal, the
first contact bounded, and headers read without trusting their names to be UTF-8."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException

from bridge.config.model import KafkaConfig
from bridge.kafka.clients import client_properties as shared_properties
from bridge.kafka.headers import read_headers

WAIT_S = 10.0
"""How long a command waits for Kafka to answer at all before it says so and ends."""
_TRY_S = 1.0

Headers = list[tuple[str, bytes | None]]


class KafkaUnreachableError(Exception):
    """Kafka did not answer the first request within WAIT_S: one line for the operator."""


class StopRequestedError(Exception):
    """SIGTERM or Ctrl-C: the command stops at the next point where nothing is half done."""


def client_properties(config: KafkaConfig) -> dict[str, Any]:
    """The bridge's connection properties for a tool's consumer, producer or admin client.

    librdkafka logs every failed connection attempt to stderr, several a second while Kafka does not answer;
    the tools say once that Kafka does not answer instead (`reach`), so its log is off unless the operator sets
    `log_level` among the properties.
    """
    return {"log_level": 0, **shared_properties(config.properties), "bootstrap.servers": config.bootstrap_servers}


def reach(client: Any, topic: str, bootstrap: str, stop: Callable[[], bool], wait_s: float = WAIT_S) -> Any:
    """The metadata of `topic` (None when Kafka does not have it), asked in short tries so that a signal or an
    unreachable Kafka ends the wait within about a second of either."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.list_topics(topic, timeout=_TRY_S).topics.get(topic)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else exc
            why = error.str() if hasattr(error, "str") else str(error)
        if stop():
            raise StopRequestedError
        if time.monotonic() >= deadline:
            raise KafkaUnreachableError(f"Kafka at {bootstrap} does not answer (waited {wait_s:g} s): {why}")


def headers_of(message: Any) -> tuple[Headers, bool]:
    """A message's headers with UTF-8 names, and whether every header could be read so.

    Kafka allows any bytes in a header name (Go or kcat producers write them) and confluent-kafka cannot read such a
    name; `bridge.kafka.headers.read_headers`, the run path's reader, salvages what it can without crashing. A letter
    whose
    headers are not all readable is shown without the unreadable ones and says so, rather than ending the command.
    """
    read = read_headers(message)
    headers: Headers = []
    for name, value in read.items:
        try:
            headers.append((name.decode(), value))
        except UnicodeDecodeError:
            return headers, False
    return headers, read.failure is None and not read.lost
