"""Which assigned partitions stopped moving, for how long, and why: the metric, the log lines and `/readyz`'s body.

A partition stalls when records of it wait and its committed offset has not moved for `STALLED_AFTER_S`; the reason
is the first that applies of what the bridge knows holds records back. A stall does not fail readiness by itself:
one stuck partition must not take a pod that moves the others out of rollouts.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from bridge.kafka.consumer import PartitionKey
from bridge.ops.metrics import Metrics, StallReason
from bridge.postapi.uploader import Uploader
from bridge.runtime.clock import Clock
from bridge.runtime.ledger import Ledger, PartitionOffsets
from bridge.runtime.schema_wait import SchemaWait
from bridge.runtime.transforms import TransformPool

log = structlog.get_logger("bridge.stalls")

STALLED_AFTER_S = 30.0
"""A commit every few seconds is normal (linger, an answer's latency); half a minute without one while records
wait is not."""


@dataclass
class _Watched:
    committed: int | None
    since: float
    reason: StallReason = "none"


class Stalls:
    def __init__(
        self,
        ledger: Ledger,
        pool: TransformPool,
        schema_wait: SchemaWait,
        uploader: Uploader,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self._ledger = ledger
        self._pool = pool
        self._schema_wait = schema_wait
        self._uploader = uploader
        self._metrics = metrics
        self._clock = clock
        self._watched: dict[PartitionKey, _Watched] = {}

    def observe(self) -> None:
        """Look at every assigned partition now; called on the owner loop's periodic watch."""
        now = self._clock.now()
        partitions = self._ledger.partitions
        for key in [key for key in self._watched if key not in partitions]:
            del self._watched[key]
        for key, state in partitions.items():
            watched = self._watched.setdefault(key, _Watched(state.committed, now))
            if state.committed != watched.committed or state.held == 0:
                watched.committed, watched.since = state.committed, now
            still = now - watched.since
            reason: StallReason = self._reason(state) if still >= STALLED_AFTER_S else "none"
            if reason != watched.reason:
                self._log_change(key, watched.reason, reason, still, state)
                watched.reason = reason
            if reason == "none":
                self._metrics.moving(*key)
            else:
                self._metrics.set_stalled(key[0], key[1], still, reason)

    def _reason(self, state: PartitionOffsets) -> StallReason:
        if state.halted:
            return "halted_no_dead_letter_topic"
        if self._pool.late:
            return "transform_stalled"
        if self._schema_wait.blocked:
            return "registry_unavailable"
        if self._uploader.refused_applications:
            return "key_refused"
        if self._uploader.failing:
            return "api_unavailable"
        return "unknown"

    def _log_change(
        self, key: PartitionKey, before: StallReason, after: StallReason, still: float, state: PartitionOffsets
    ) -> None:
        where = {"topic": key[0], "partition": key[1], "committed": state.committed, "waiting": state.held}
        if after == "none":
            log.info("partition moving again", stalled_s=round(still), **where)
        elif before == "none":
            log.warning("partition stalled", reason=after, stalled_s=round(still), **where)
        else:
            log.warning("partition still stalled, for another reason", reason=after, stalled_s=round(still), **where)

    def described(self) -> list[str]:
        """The stalled partitions with their reasons, for `/readyz`'s body."""
        now = self._clock.now()
        return [
            f"{topic}[{partition}] stalled for {now - watched.since:.0f} s: {watched.reason}"
            for (topic, partition), watched in sorted(self._watched.items())
            if watched.reason != "none"
        ]
