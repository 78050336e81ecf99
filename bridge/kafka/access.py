"""Whether Kafka lets the bridge in, asked at start-up so a refusal is one line naming its cause.

Left to the consumer, a wrong password or an untrusted CA is a stream of librdkafka retries and log lines while
the bridge looks alive. This asks the cluster first, with librdkafka's own logging off, what the bridge will
need: a connection (authentication, TLS), every topic it reads and its dead-letter topic to exist, Read on every
topic it reads and Write on its dead-letter topic (the operations the broker's authorizer says the principal may
do there), and Describe on its consumer group, which Read implies. A refusal raises StartupError.

A cluster that does not answer is not a refusal: the check waits for it (the bridge alive, not ready, one log
line saying what it waits for), and so it does for a group coordinator still loading. The group is described,
never its offsets listed: librdkafka 2.x crashes the process (SIGSEGV) when an admin client's offset listing is
answered NOT_COORDINATOR, as a broker still loading its groups answers (librdkafka issue #5040).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AclOperation, AdminClient  # type: ignore[attr-defined]

from bridge.config.model import KafkaConfig
from bridge.errors import StartupError
from bridge.kafka.clients import client_properties
from bridge.kafka.logs import REPEATS, client_conf
from bridge.runtime.threads import in_daemon_thread

log = structlog.get_logger("bridge.access")

WAITING_FOR_KAFKA = "Kafka unreachable at start-up; waiting for it"
WAITING_FOR_COORDINATOR = "group coordinator not answering at start-up; waiting for it"
GRACE_S = 3.0
"""How long Kafka may stay silent before start-up says it waits: a refusal (credentials, TLS) comes sooner."""
REQUEST_TIMEOUT_S = 5.0
"""One admin request's time; the check itself waits as long as Kafka takes, until cancelled."""
RETRY_S = 0.5

_REFUSALS = {KafkaError._AUTHENTICATION: "Kafka refused the credentials", KafkaError._SSL: "TLS with Kafka failed"}
COORDINATOR_MOVING = frozenset(
    {KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR}
)
"""A group's coordinator still loading or moving: a broker starting or restarting answers this for a while, and
librdkafka does not mark it retriable when a call (committed offsets, say) gets it."""
_NOT_ANSWERING = {
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.LEADER_NOT_AVAILABLE,
    *COORDINATOR_MOVING,
}
_BROKER_PREFIX = re.compile(r"^\S+://\S+?/(?:bootstrap|\d+): ")
_STATE_SUFFIX = re.compile(r" \(after \d+ms in state \w+\)$")

Waiting = Callable[[str | None], None]
"""Told what start-up waits for (a readiness reason), or None once it waits no more."""


class _NotAnsweringError(Exception):
    """Kafka (or the group's coordinator) did not answer a request: ask again."""


async def check_kafka_access(config: KafkaConfig, topics: Sequence[str], waiting: Waiting = lambda _: None) -> None:
    """Raise StartupError naming the cause when the cluster refuses what the bridge needs to read `topics`.

    Returns once the cluster answered every question; waits (telling `waiting`) while it does not answer.
    """
    cancelled = threading.Event()
    try:
        await in_daemon_thread(_Check(config, topics, waiting, cancelled).run)
    finally:
        cancelled.set()


class _Check:
    def __init__(self, config: KafkaConfig, topics: Sequence[str], waiting: Waiting, cancelled: threading.Event):
        self._config = config
        self._topics = list(topics)
        self._waiting = waiting
        self._cancelled = cancelled
        # Only the latest few: a cluster that stays down for hours keeps calling back.
        self._errors: deque[KafkaError] = deque(maxlen=50)
        conf: dict[str, Any] = {
            **client_properties(config.properties),
            **client_conf(),
            "bootstrap.servers": config.bootstrap_servers,
            "error_cb": self._errors.append,
            # The errors come to error_cb and become one line; librdkafka's own log would repeat each per retry.
            "log_level": 0,
        }
        self._admin = AdminClient(conf)
        self._started = time.monotonic()

    def run(self) -> None:
        while not self._cancelled.is_set():
            try:
                self._answer_metadata()
                if self._cancelled.is_set():
                    return
                self._check_topics()
                self._check_group()
                return
            except _NotAnsweringError as exc:
                self._wait(WAITING_FOR_KAFKA, f"waiting for Kafka at {self._config.bootstrap_servers}", str(exc))
        REPEATS.ended(WAITING_FOR_KAFKA)
        REPEATS.ended(WAITING_FOR_COORDINATOR)

    def _answer_metadata(self) -> None:
        while not self._cancelled.is_set():
            try:
                self._admin.list_topics(timeout=1.0)
            except KafkaException as exc:
                self._admin.poll(0)
                refusal = _refusal(self._errors)
                if refusal is not None:
                    raise StartupError(refusal) from None
                last = _plain(self._errors[-1]) if self._errors else _plain(exc.args[0])
                self._wait(WAITING_FOR_KAFKA, f"waiting for Kafka at {self._config.bootstrap_servers}", last)
                continue
            self._answered(WAITING_FOR_KAFKA)
            return

    def _wait(self, condition: str, reason: str, error: str) -> None:
        if time.monotonic() - self._started < GRACE_S:
            time.sleep(RETRY_S)
            return
        self._waiting(reason)
        REPEATS.seen(
            condition,
            bootstrap=self._config.bootstrap_servers,
            awaiting=f"{reason}; start-up goes on once it answers (alive, not ready meanwhile)",
            error=error,
        )
        time.sleep(RETRY_S)

    def _answered(self, condition: str) -> None:
        REPEATS.ended(condition, bootstrap=self._config.bootstrap_servers)
        self._waiting(None)

    def _check_topics(self) -> None:
        """Each topic exists; Read on every topic read, Write on the dead-letter topic, as the authorizer says."""
        dead_letter_topic = self._config.dead_letter_topic
        needs: dict[str, set[AclOperation]] = {topic: {AclOperation.READ} for topic in self._topics}
        if dead_letter_topic:
            needs.setdefault(dead_letter_topic, set()).add(AclOperation.WRITE)
        described = self._admin.describe_topics(
            TopicCollection(list(needs)), include_authorized_operations=True, request_timeout=REQUEST_TIMEOUT_S
        )
        missing_sources = []
        for topic, future in described.items():
            try:
                allowed = future.result().authorized_operations
            except KafkaException as exc:
                code = exc.args[0].code()
                if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    if topic == dead_letter_topic:
                        raise StartupError(
                            f"dead-letter topic {topic!r} does not exist; create it, or unset kafka.dead_letter_topic"
                            " to have poison records stop their partition instead"
                        ) from None
                    missing_sources.append(topic)
                    continue
                if code != KafkaError.TOPIC_AUTHORIZATION_FAILED:
                    raise _NotAnsweringError(_plain(exc.args[0])) from None
                allowed = []
            missing = needs[topic] - set(allowed if allowed is not None else needs[topic])
            if missing:
                grant = " and ".join(sorted(op.name.capitalize() for op in missing))
                raise StartupError(
                    f"Kafka denies access to topic {topic!r}: grant the bridge's principal {grant} on it"
                )
        if missing_sources:
            names = ", ".join(repr(topic) for topic in sorted(missing_sources))
            raise StartupError(
                f"source topic {names} does not exist; create it, or remove it from the configured topics"
                if len(missing_sources) == 1
                else f"source topics {names} do not exist; create them, or remove them from the configured topics"
            )

    def _check_group(self) -> None:
        group = self._config.group_id
        while not self._cancelled.is_set():
            try:
                described = self._admin.describe_consumer_groups([group], request_timeout=REQUEST_TIMEOUT_S)
                described[group].result()
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
                    raise StartupError(
                        f"Kafka denies access to consumer group {group!r}: grant the bridge's principal Read on it"
                    ) from None
                if error.code() not in _NOT_ANSWERING and not error.retriable():
                    # Not a refusal the bridge knows: the consumer's own join will say more, if anything.
                    log.warning("consumer group not checked", group=group, error=_plain(error))
                    return
                awaited = f"waiting for the coordinator of consumer group {group!r}"
                self._wait(WAITING_FOR_COORDINATOR, awaited, f"{error.name()}: {_plain(error)}")
                continue
            self._answered(WAITING_FOR_COORDINATOR)
            return


def _refusal(errors: Sequence[KafkaError]) -> str | None:
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
