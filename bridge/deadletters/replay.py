"""`dead-letters replay`: chosen dead letters back to their source topic, each exactly once.

Each chunk of sends and the replay's progress (the dead-letter offsets it got past, committed in a consumer group
of its own) go into one Kafka transaction, so a replay killed at any point resumes where the last committed chunk
ended: what an aborted chunk wrote is never read by a read_committed consumer (the bridge's default), and is
written again by the next run. The group's name comes from the filters (bridge/deadletters/progress.py), so the
same command resumes, and another choice of records skips what earlier replays already sent.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from bridge.config.model import KafkaConfig
from bridge.deadletters.clients import client_properties, reach
from bridge.deadletters.progress import EarlierReplay, earlier_replays, group_name
from bridge.deadletters.reading import consumer, read, stretch
from bridge.deadletters.records import DeadLetter, Filters
from bridge.kafka.access import COORDINATOR_MOVING

CHUNK = 500
"""Dead letters per transaction: a killed replay re-reads at most this many."""
_TIMEOUT_S = 60.0

T = TypeVar("T")


class ReplayError(Exception):
    """The replay stopped; everything before the chunk it names was sent and committed, nothing after it."""


@dataclass
class ReplayTotals:
    read: int = 0
    sent: int = 0
    skipped_loop: int = 0
    """Replayed before and dead-lettered again: left alone without --force."""
    skipped_unknown_source: int = 0
    skipped_value_dropped: int = 0
    """Held without their value (too large for the dead-letter topic): nothing to send back."""
    skipped_sent: int = 0
    """Sent by an earlier replay with other filters."""
    unsendable: int = 0
    """Their source topic or partition is gone (or Kafka refused them): named one by one, left in the topic."""
    by_topic: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    """Stopped by `stop` before the end: what was read is settled, the same command resumes after it."""


class Replay:
    """Reads the dead-letter topic from the replay's committed progress to its current end and sends the chosen
    records (or, without `send`, only says which it would send)."""

    def __init__(
        self,
        config: KafkaConfig,
        topic: str,
        filters: Filters,
        *,
        force: bool,
        say: Callable[[str], None],
        progress: Callable[[int, int], None],
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self._config = config
        self._topic = topic
        self._filters = filters
        self._force = force
        self._say = say
        self._progress = progress
        self._stop = stop
        self.group = group_name(config, topic, filters, force)
        """The consumer group (and transactional id) this replay keeps its progress under."""
        self._earlier: list[EarlierReplay] = []
        self._targets: _Targets
        self._named: set[str] = set()
        self._refused: dict[str, str] = {}
        """Why Kafka refused a letter it had taken, by the letter's coordinates."""
        self._sender: Producer | None = None
        """The transactional producer of a replay that sends; renewed after each aborted transaction."""
        """The letters named as not sent."""

    def run(self, send: bool) -> ReplayTotals:
        client = consumer(self._config, self.group)
        try:
            # Kafka answers before anything waits on it for long (a transaction's start waits a minute).
            reach(client, self._topic, self._config.bootstrap_servers, self._stop)
            self._sender = self._producer() if send else None
            self._targets = _Targets(client)
            starts = self._progress_so_far(client)
            self._earlier = earlier_replays(self._config, self._topic, sorted(starts), self.group)
            span = stretch(client, self._topic, self._filters, starts, bootstrap=self._config.bootstrap_servers)
            totals = ReplayTotals()
            chunk: list[DeadLetter] = []
            for letter in read(client, span, self._progress):
                totals.read += 1
                chunk.append(letter)
                if len(chunk) >= CHUNK:
                    self._settle(chunk, client, totals)
                    chunk = []
                if self._stop():
                    totals.interrupted = True
                    break
            if chunk:
                self._settle(chunk, client, totals)
            return totals
        finally:
            client.close()
            if self._sender is not None:
                self._sender.flush(_TIMEOUT_S)

    def _producer(self) -> Producer:
        producer = Producer(
            {
                **client_properties(self._config),
                "transactional.id": self.group,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 20,
            }
        )
        try:
            # Fences an earlier run of the same replay that was killed, and aborts its open transaction.
            producer.init_transactions(_TIMEOUT_S)
        except KafkaException as exc:
            raise ReplayError(f"cannot start a Kafka transaction (does the cluster allow them?): {exc}") from None
        return producer

    def _delivered(self, letter: DeadLetter) -> Callable[[KafkaError | None, Any], None]:
        """Keeps why Kafka refused the letter, which its transaction's failure does not say."""

        def report(error: KafkaError | None, _: Any) -> None:
            if error is not None:
                self._refused[letter.coordinates] = error.str()

        return report

    def _abort(self) -> None:
        """Abort the open transaction and start over with a new producer of the same transactional id: after a
        record the broker refused, the old one fails the next transaction too ("skipped sequence numbers")."""
        assert self._sender is not None
        self._sender.poll(0)  # the delivery reports of the aborted records
        _abort(self._sender)
        self._sender = self._producer()

    def _progress_so_far(self, client: Consumer) -> dict[int, int]:
        try:
            metadata = client.list_topics(self._topic, timeout=_TIMEOUT_S).topics.get(self._topic)
            if metadata is None or metadata.error is not None:
                return {}
            asked = [TopicPartition(self._topic, p) for p in metadata.partitions]
            committed = retrying(lambda: client.committed(asked, timeout=_TIMEOUT_S))
            return {tp.partition: tp.offset for tp in committed}
        except KafkaException as exc:
            raise ReplayError(f"cannot read the progress of {self.group}: {exc}") from None

    def _chosen(self, letter: DeadLetter, totals: ReplayTotals) -> bool:
        if not self._filters.matches(letter):
            return False
        if letter.replayed_before and not self._force:
            totals.skipped_loop += 1
            return False
        if not letter.source_topic:
            totals.skipped_unknown_source += 1
            return False
        if letter.value_dropped:
            totals.skipped_value_dropped += 1
            return False
        if any(earlier.sent(letter) for earlier in self._earlier):
            totals.skipped_sent += 1
            return False
        why = self._targets.missing(letter)
        if why is not None:
            self._cannot_send(letter, why, totals)
            return False
        return True

    def _cannot_send(self, letter: DeadLetter, why: str, totals: ReplayTotals) -> None:
        if letter.coordinates in self._named:
            return  # refused at once again while its chunk was sent one letter a transaction
        self._named.add(letter.coordinates)
        totals.unsendable += 1
        self._say(_line("cannot send", letter) + f"\n  not sent: {why}; it stays in {self._topic}")

    def _settle(self, chunk: list[DeadLetter], client: Consumer, totals: ReplayTotals) -> None:
        chosen = [letter for letter in chunk if self._chosen(letter, totals)]
        if self._sender is None:
            for letter in chosen:
                self._say(_line("would send", letter))
            self._count(chosen, totals)
            return
        try:
            self._transaction(chunk, chosen, client, totals)
        except KafkaException as exc:
            self._abort()
            if _fatal(exc) or not chosen:
                first = chunk[0].coordinates
                raise ReplayError(f"the chunk from {first} was not sent (its transaction was aborted): {exc}") from None
            # One record Kafka refuses fails its whole transaction: send the chunk one letter a transaction.
            for letter in chunk:
                self._alone(letter, letter in chosen, client, totals)
        self._say(f"sent {totals.sent:,} so far; progress committed up to {chunk[-1].coordinates}")

    def _transaction(
        self,
        chunk: list[DeadLetter],
        chosen: list[DeadLetter],
        client: Consumer,
        totals: ReplayTotals,
    ) -> None:
        """Send `chosen` and commit the progress past `chunk` in one transaction; count what was sent."""
        producer = self._sender
        assert producer is not None
        positions: dict[int, int] = {}
        for letter in chunk:
            positions[letter.partition] = letter.offset + 1
        producer.begin_transaction()
        sent = []
        for letter in chosen:
            why = _produce(producer, letter, self._delivered(letter))
            if why is None:
                sent.append(letter)
            else:
                self._cannot_send(letter, why, totals)
        offsets = [TopicPartition(self._topic, p, o) for p, o in positions.items()]
        retrying(lambda: producer.send_offsets_to_transaction(offsets, client.consumer_group_metadata(), _TIMEOUT_S))
        retrying(lambda: producer.commit_transaction(_TIMEOUT_S))
        self._count(sent, totals)

    def _alone(self, letter: DeadLetter, chosen: bool, client: Consumer, totals: ReplayTotals) -> None:
        try:
            self._transaction([letter], [letter] if chosen else [], client, totals)
            return
        except KafkaException as exc:
            self._abort()
            why = self._refused.pop(letter.coordinates, _why(exc))
            if _fatal(exc) or not chosen:
                raise ReplayError(f"{letter.coordinates} was not sent (its transaction was aborted): {exc}") from None
            self._cannot_send(letter, why, totals)
        try:
            # Past the letter Kafka refuses, without it, so that the replay goes on and a rerun does not retry it.
            self._transaction([letter], [], client, totals)
        except KafkaException as exc:
            self._abort()
            raise ReplayError(f"the progress past {letter.coordinates} was not committed: {exc}") from None

    @staticmethod
    def _count(chosen: list[DeadLetter], totals: ReplayTotals) -> None:
        totals.sent += len(chosen)
        for letter in chosen:
            totals.by_topic[letter.source_topic] = totals.by_topic.get(letter.source_topic, 0) + 1


def _produce(producer: Producer, letter: DeadLetter, delivered: Callable[[KafkaError | None, Any], None]) -> str | None:
    """Hand one letter to the producer; why it refuses it at once (an unknown partition, say), or None."""
    extra: dict[str, Any] = {"partition": letter.source_partition} if letter.source_partition >= 0 else {}
    while True:
        try:
            producer.produce(
                letter.source_topic,
                value=letter.value,
                key=letter.key,
                headers=letter.replay_headers(),
                on_delivery=delivered,
                **extra,
            )
            break
        except BufferError:
            producer.poll(0.1)
        except KafkaException as exc:
            return str(exc.args[0].str() if exc.args else exc)
    producer.poll(0)
    return None


class _Targets:
    """The source topics' partitions, asked once per topic and run: a letter whose partition no longer exists
    would fail its whole transaction, and with it every chunk, run after run."""

    def __init__(self, client: Consumer) -> None:
        self._client = client
        self._partitions: dict[str, frozenset[int] | None] = {}

    def missing(self, letter: DeadLetter) -> str | None:
        topic = letter.source_topic
        if topic not in self._partitions:
            try:
                metadata = self._client.list_topics(topic, timeout=_TIMEOUT_S).topics.get(topic)
            except KafkaException as exc:
                raise ReplayError(f"cannot read the metadata of {topic!r}: {exc}") from None
            known = metadata is not None and metadata.error is None
            self._partitions[topic] = frozenset(metadata.partitions) if known else None
        partitions = self._partitions[topic]
        if partitions is None:
            return f"topic {topic!r} does not exist"
        if letter.source_partition >= 0 and letter.source_partition not in partitions:
            return f"partition {letter.source_partition} of {topic!r} does not exist (it has {len(partitions)})"
        return None


def retrying(call: Callable[[], T]) -> T:
    """`call`, again while Kafka's error is retriable or the group's coordinator is moving (right after an abort
    the transaction's may not be known yet; a broker just started answers NOT_COORDINATOR for a while)."""
    deadline = time.monotonic() + _TIMEOUT_S
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if (
                not isinstance(error, KafkaError)
                or not (error.retriable() or error.code() in COORDINATOR_MOVING)
                or time.monotonic() > deadline
            ):
                raise
        time.sleep(0.1)


def _fatal(exc: KafkaException) -> bool:
    """Whether the producer can go on after aborting (any error but a fenced or otherwise fatal one)."""
    error = exc.args[0] if exc.args else None
    return error is None or not isinstance(error, KafkaError) or error.fatal()


def _why(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else exc
    return error.str() if isinstance(error, KafkaError) else str(error)


def _abort(producer: Producer) -> None:
    # Should this fail too, the next run's init_transactions aborts the transaction.
    with contextlib.suppress(KafkaException):
        producer.abort_transaction(_TIMEOUT_S)


def _line(verb: str, letter: DeadLetter) -> str:
    target = f"{letter.source_topic}[{letter.source_partition}]"
    return (
        f"{verb}  {letter.coordinates} -> {target}  first read at offset {letter.source_offset}  "
        f"reason {letter.reason}: {' '.join(letter.detail.split())[:120]}"
    )
