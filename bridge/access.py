"""Whether Kafka lets the bridge in, asked once at start-up so a refusal is one line naming its cause.

Left to the consumer, a wrong password or an untrusted CA is a stream of librdkafka retries and log lines while
the bridge looks alive. This asks the cluster first, with librdkafka's own logging off, what the bridge will
need: a connection (authentication, TLS), Read on every topic it reads and Write on its dead-letter topic (the
operations the broker's authorizer says the principal may do there), and Describe on its consumer group, which
Read implies (a group's authorized operations are not asked: the group may not exist yet). A refusal raises
StartupError.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import structlog
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AclOperation, AdminClient  # type: ignore[attr-defined]

from bridge.config import KafkaConfig
from bridge.deadletter import StartupError, _client_properties

log = structlog.get_logger("bridge.access")

_REFUSALS = {KafkaError._AUTHENTICATION: "Kafka refused the credentials", KafkaError._SSL: "TLS with Kafka failed"}
_LOADING = {
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
}
_BROKER_PREFIX = re.compile(r"^\S+://\S+?/(?:bootstrap|\d+): ")
_STATE_SUFFIX = re.compile(r" \(after \d+ms in state \w+\)$")


async def check_kafka_access(config: KafkaConfig, topics: Sequence[str], timeout_s: float = 15.0) -> None:
    """Raise StartupError naming the cause when the cluster refuses what the bridge needs to read `topics`.

    A cluster that does not answer within `timeout_s` is only logged: an outage is the pipeline's to wait out.
    """
    cancelled = threading.Event()
    try:
        await asyncio.to_thread(_check, config, topics, timeout_s, cancelled)
    finally:
        # A start-up cut short by SIGTERM must not wait for the check's thread: the process exits only after it.
        cancelled.set()


def _check(config: KafkaConfig, topics: Sequence[str], timeout_s: float, cancelled: threading.Event) -> None:
    errors: list[KafkaError] = []
    conf: dict[str, Any] = {
        **_client_properties(config.properties),
        "bootstrap.servers": config.bootstrap_servers,
        "error_cb": errors.append,
        # The errors come to error_cb and become one line; librdkafka's own log would repeat each per retry.
        "log_level": 0,
    }
    admin = AdminClient(conf)
    deadline = time.monotonic() + timeout_s
    while not cancelled.is_set():
        try:
            admin.list_topics(timeout=1.0)
            break
        except KafkaException as exc:
            admin.poll(0)
            refusal = _refusal(errors)
            if refusal is not None:
                raise StartupError(refusal) from None
            if time.monotonic() > deadline:
                # Down is not refused: the bridge starts, not ready, and consumes once Kafka is back.
                last = _plain(errors[-1]) if errors else str(exc.args[0].str())
                log.warning("Kafka unreachable at start-up; access not checked", error=last)
                return
    if cancelled.is_set():
        return
    _check_topics(admin, config, topics, timeout_s)
    _check_group(admin, config.group_id, deadline, cancelled)


def _check_topics(admin: AdminClient, config: KafkaConfig, topics: Sequence[str], timeout_s: float) -> None:
    """Read on every topic read, Write on the dead-letter topic, as the broker's authorizer reports them."""
    needs: dict[str, set[AclOperation]] = {topic: {AclOperation.READ} for topic in topics}
    if config.dead_letter_topic:
        needs.setdefault(config.dead_letter_topic, set()).add(AclOperation.WRITE)
    described = admin.describe_topics(
        TopicCollection(list(needs)), include_authorized_operations=True, request_timeout=timeout_s
    )
    for topic, future in described.items():
        try:
            allowed = future.result().authorized_operations
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_AUTHORIZATION_FAILED:
                continue  # a missing topic: the dead-letter check names it, a source topic may come later
            allowed = []
        missing = needs[topic] - set(allowed if allowed is not None else needs[topic])
        if missing:
            grant = " and ".join(sorted(op.name.capitalize() for op in missing))
            raise StartupError(f"Kafka denies access to topic {topic!r}: grant the bridge's principal {grant} on it")


def _check_group(admin: AdminClient, group_id: str, deadline: float, cancelled: threading.Event) -> None:
    while not cancelled.is_set():
        try:
            offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group_id)], request_timeout=5)
            offsets[group_id].result()
            return
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
                raise StartupError(
                    f"Kafka denies access to consumer group {group_id!r}: grant the bridge's principal Read on it"
                ) from None
            # A coordinator still loading (a broker just started) answers again a moment later.
            if (error.code() not in _LOADING and not error.retriable()) or time.monotonic() > deadline:
                raise StartupError(f"cannot read consumer group {group_id!r}: {error.str()}") from None
        time.sleep(0.5)


def _refusal(errors: list[KafkaError]) -> str | None:
    for error in errors:
        what = _REFUSALS.get(error.code())
        if what is not None:
            return f"{what}: {_plain(error)}"
    # An untrusted CA can surface as a transport error before the handshake error itself.
    for error in errors:
        if "certificate verify failed" in error.str():
            return f"{_REFUSALS[KafkaError._SSL]}: {_plain(error)}"
    return None


def _plain(error: KafkaError) -> str:
    """The error without the broker address prefix and timing suffix librdkafka adds."""
    return _STATE_SUFFIX.sub("", _BROKER_PREFIX.sub("", error.str()))
