"""The delivery of one batch: upload it, isolate the rows the API refuses, dead-letter, and mark what is done.

The owner loop hands each batch to `Delivery.deliver` (and each poison record to `Delivery.poison`) in a task of
its own. Outcomes are reported to the ledger (`bridge.runtime.ledger`): accepted after a 200, dead-lettered after
the dead-letter topic's ack, withdrawn when their partition was revoked, halted when there is no dead-letter topic.
Nothing here changes an offset or talks to the consumer.

Right before every request goes on the wire (once it has its slot and its token) the batch is looked at again: rows
of revoked partitions leave it (their new owner sends them), and rows that expired while held are dead-lettered as
`expired` instead of costing a request.

Isolating refused rows is bisection, level by level: each refused part is split in halves and the halves are
sent again, until every refused part is one row. With k refused rows in n, each level holds at most k refused
parts, so it costs at most 2·k·⌈log2 n⌉ requests and never dead-letters a row the API accepts.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from bridge.config.model import UploadConfig
from bridge.kafka.dead_letter_producer import Reason
from bridge.ops.metrics import Metrics
from bridge.postapi.methods import METHODS, MethodName, Window
from bridge.postapi.rules import MAX_EVENT_AGE_S
from bridge.postapi.uploader import Answer, Uploader, Verdict
from bridge.runtime.batching import Batch
from bridge.runtime.clock import Clock
from bridge.runtime.ledger import Held, Ledger

log = structlog.get_logger("bridge.delivery")

REJUDGE_AFTER_S = 5.0
"""A batch's rows are checked for expiry again before an attempt once this long passed since the last check: a
first attempt goes out right after the rows were made, a retry (a long 403) much later. An event that expires
within this window of its last check is sent, refused and dead-lettered as `rejected`."""


class DeadLetterSink(Protocol):
    async def write(self, message: Any, reason: Reason, detail: str) -> None:
        """Returns once the dead-letter topic acknowledged the copy of `message`."""
        ...


@dataclass
class Totals:
    """Running counts of deliveries for progress lines and the end-of-run summary."""

    uploaded: int = 0
    dead_lettered: int = 0
    requests: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    uploaded_by_method: Counter[str] = field(default_factory=Counter)
    dead_lettered_by_method: Counter[str] = field(default_factory=Counter)


class _BatchPayload:
    """A batch as the uploader sends it: pruned right before each request."""

    def __init__(self, delivery: Delivery, batch: Batch) -> None:
        self._delivery = delivery
        self._batch = batch

    async def body(self) -> tuple[bytes, int] | None:
        batch = self._batch
        await self._delivery.prune(batch)
        return (batch.body(), len(batch.lines)) if batch.lines else None

    def withdrawn(self) -> bool:
        return all(item.state.retired for item in self._batch.refs)


class Delivery:
    """Delivers batches and poison records, and reports every outcome to the ledger."""

    def __init__(
        self,
        uploader: Uploader,
        dead_letters: DeadLetterSink | None,
        config: UploadConfig,
        metrics: Metrics,
        ledger: Ledger,
        clock: Clock,
        window: int,
    ) -> None:
        """`window`: how many rows may be sent and not yet committable besides one batch (`Ledger.admit`)."""
        self._uploader = uploader
        self._dead_letters = dead_letters
        self._config = config
        self._metrics = metrics
        self._ledger = ledger
        self._clock = clock
        self._window = window
        self.totals = Totals()

    async def deliver(self, batch: Batch) -> None:
        """Upload `batch`; when the API refuses it, find the refused rows and deliver every other one."""
        self._metrics.batch_rows.observe(len(batch.lines))
        self._metrics.batch_bytes.observe(batch.size)
        overshoot = await self._ledger.admit(batch.refs, self._window)
        try:
            answer = await self._send(batch)
            if answer is not None:
                await self._isolate(batch, answer)
        finally:
            if overshoot:
                self._ledger.end_overshoot()

    async def poison(self, item: Held, method: MethodName, reason: Reason, detail: str) -> None:
        """A record of `method` that made no row: to the dead-letter topic, or its partition halts."""
        await self._give_up([item], method, reason, [detail])

    async def _send(self, batch: Batch) -> Answer | None:
        """Send what is left of `batch`: None once it is done with (accepted or emptied), the refusal otherwise."""
        answer = await self._uploader.deliver(batch.method, batch.application_id, _BatchPayload(self, batch))
        self.totals.requests += answer.attempts
        if answer.verdict is Verdict.REFUSED:
            return answer
        if answer.verdict is Verdict.ACCEPTED:
            self._ledger.accepted(batch.refs)
            self.totals.uploaded += len(batch.refs)
            self.totals.uploaded_by_method[batch.method] += len(batch.refs)
        else:
            # Emptied while it waited (a refused key, a backoff): what is left is of revoked partitions.
            self._withdraw(batch)
        return None

    async def prune(self, batch: Batch) -> None:
        """Let go of rows whose partition was revoked; dead-letter rows that expired since they were checked."""
        self._withdraw(batch)
        now = self._clock.wall()
        if batch.lines and now - batch.judged >= REJUDGE_AFTER_S:
            batch.judged = now
            expired = _expired(batch, now)
            if expired:
                expired_rows = batch.remove(expired)
                await self._give_up(expired_rows, batch.method, "expired", [expired[p] for p in sorted(expired)])

    def _withdraw(self, batch: Batch) -> None:
        revoked = batch.remove({p for p, item in enumerate(batch.refs) if item.state.retired})
        if revoked:
            log.info("rows of revoked partitions leave their batch", rows=len(revoked), left=len(batch.lines))
            self._ledger.withdrawn(revoked)

    async def _isolate(self, batch: Batch, answer: Answer) -> None:
        """Bisect level by level; a level's halves go out together until `max_split_requests` are spent, then one
        at a time, so a batch full of refused rows does not crowd the other batches out of `max_in_flight`."""
        refused = [(batch, answer)]
        spent = 0
        while refused:
            halves: list[Batch] = []
            for part, why in refused:
                if len(part.lines) == 1:
                    detail = f"Post API answered {why.status}: {why.detail}"
                    await self._give_up(part.refs, part.method, "rejected", [detail])
                else:
                    halves.extend(part.split())
            if spent + len(halves) <= self._config.max_split_requests:
                answers = list(await asyncio.gather(*map(self._send, halves)))
            else:
                answers = [await self._send(half) for half in halves]
            spent += len(halves)
            refused = [(half, why) for half, why in zip(halves, answers, strict=True) if why is not None]
        if spent:
            log.info("refused rows isolated", rows=len(batch.lines), isolation_requests=spent)

    async def _give_up(self, items: Sequence[Held], method: MethodName, reason: Reason, details: Sequence[str]) -> None:
        """Dead-letter `items` of `method`, each with its own detail (or halt their partitions); the log names the
        first."""
        detail = details[0]
        if self._dead_letters is None:
            self._halt(items, method, reason, detail)
            return
        for item, own in zip(items, details, strict=True):
            await self._dead_letters.write(item.record, reason, own)
        self._ledger.dead_lettered(items)
        self._metrics.rows_dead_lettered.labels(method, reason).inc(len(items))
        totals = self.totals
        totals.dead_lettered += len(items)
        totals.by_reason[reason] = totals.by_reason.get(reason, 0) + len(items)
        totals.dead_lettered_by_method[method] += len(items)
        log.warning(
            "dead-lettered",
            method=method,
            reason=reason,
            detail=detail,
            records=len(items),
            source=[f"{i.state.topic}[{i.state.partition}]@{i.offset}" for i in items[:5]],
        )

    def _halt(self, items: Sequence[Held], method: MethodName, reason: str, detail: str) -> None:
        """No dead-letter topic: stop each record's partition so nothing after it commits, and say so loudly."""
        first: dict[tuple[str, int], int] = {}
        for item in items:
            first.setdefault(item.state.key, item.offset)
        for state in self._ledger.halted(items):
            log.error(
                "poison record and no dead-letter topic: partition stopped, nothing after it is committed",
                method=method,
                topic=state.topic,
                partition=state.partition,
                offset=first[state.key],
                reason=reason,
                detail=detail,
            )


def _expired(batch: Batch, now: float) -> dict[int, str]:
    """The rows of `batch` that its method's verdict finds expired at `now`, by position, with the rule's detail."""
    names = batch.header.decode().rstrip("\r\n").split(",")
    if "event_timestamp" not in names:
        return {}  # profiles: no timestamp, nothing expires
    rows = list(csv.reader(io.StringIO(b"".join(batch.lines).decode(), newline="")))
    column = names.index("event_timestamp")
    # The verdict judges; the oldest timestamp only spares it the batches with no row past the age limit.
    if now - min(int(cells[column]) for cells in rows) <= MAX_EVENT_AGE_S:
        return {}
    method, window = METHODS[batch.method], Window(now)
    expired = {}
    for position, cells in enumerate(rows):
        violation = method.verdict(dict(zip(names, cells, strict=True)), window)
        if violation is not None and violation.reason == "expired":
            expired[position] = violation.detail
    return expired
