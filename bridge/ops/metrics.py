"""Prometheus metrics of one bridge instance, on a registry of its own so several can live in one process.

Every series whose labels are known in advance exists from start at 0: `increase()` over a counter that first
appears already at 1 sees nothing, so a first dead letter or a first lost partition would never alert. The
per-partition series live exactly while this member owns the partition (`partition_assigned` to
`partition_revoked`), so no member exports the lag of a partition another one consumes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bridge.kafka.dead_letter_producer import Reason
from bridge.postapi.methods import MethodName

PREFIX = "appmetrica_bridge"

StallReason = Literal[
    "none",
    "key_refused",
    "api_unavailable",
    "registry_unavailable",
    "halted_no_dead_letter_topic",
    "transform_stalled",
    "unknown",
]
"""Why a partition's committed offset does not move while records wait; `none` while it moves (or nothing waits)."""
STALL_REASONS: tuple[StallReason, ...] = get_args(StallReason)
RebalanceEvent = Literal["assigned", "revoked", "lost"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ROW_BUCKETS = (1, 10, 100, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000)
_BYTE_BUCKETS = tuple(float(2**n) for n in range(10, 31, 2))


class Metrics:
    """Every metric the bridge exports; names follow Prometheus conventions under `appmetrica_bridge_`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records_consumed = Counter(
            f"{PREFIX}_records_consumed", "Records fetched from Kafka.", ["topic"], registry=r
        )
        self.rows_uploaded = Counter(
            f"{PREFIX}_rows_uploaded", "Rows the Post API accepted with a 200.", ["method", "application"], registry=r
        )
        self.rows_dead_lettered = Counter(
            f"{PREFIX}_rows_dead_lettered",
            "Records written to the dead-letter topic.",
            ["method", "reason"],
            registry=r,
        )
        self.upload_requests = Counter(
            f"{PREFIX}_upload_requests",
            "Post API requests by answer (an HTTP status, timeout or connection_error).",
            ["method", "application", "status"],
            registry=r,
        )
        self.upload_retries = Counter(
            f"{PREFIX}_upload_retries",
            "Post API requests sent again after a transient failure.",
            ["method", "application", "reason"],
            registry=r,
        )
        self.retry_after_wait = Counter(
            f"{PREFIX}_upload_retry_after_seconds",
            "Seconds the Post API asked the bridge to wait with Retry-After.",
            ["method", "application"],
            registry=r,
        )
        self.upload_latency = Histogram(
            f"{PREFIX}_upload_latency_seconds",
            "Time from sending a request to its answer.",
            ["method", "application"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            f"{PREFIX}_batch_rows", "Rows per uploaded batch.", buckets=_ROW_BUCKETS, registry=r
        )
        self.batch_bytes = Histogram(
            f"{PREFIX}_batch_bytes", "CSV bytes per uploaded batch.", buckets=_BYTE_BUCKETS, registry=r
        )
        self.uploads_in_flight = Gauge(f"{PREFIX}_uploads_in_flight", "Post API requests under way.", registry=r)
        self.concurrency_limit = Gauge(
            f"{PREFIX}_upload_concurrency_limit",
            "Requests allowed at once now (lowered while the API pushes back).",
            registry=r,
        )
        self.rate_limit = Gauge(
            f"{PREFIX}_upload_rate_limit",
            "Requests a second this instance may send now (its share of the group's budget with rate_scope group).",
            registry=r,
        )
        self.held_records = Gauge(
            f"{PREFIX}_held_records", "Records buffered or in flight, not yet committed.", registry=r
        )
        self.held_bytes = Gauge(f"{PREFIX}_held_bytes", "Bytes of records buffered or in flight.", registry=r)
        self.paused_partitions = Gauge(
            f"{PREFIX}_paused_partitions", "Partitions paused for back-pressure.", registry=r
        )
        self.committed_offset = Gauge(
            f"{PREFIX}_committed_offset",
            "The last offset committed per partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            f"{PREFIX}_consumer_lag",
            "Records between the committed offset and the end of the partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.last_success = Gauge(
            f"{PREFIX}_last_successful_upload_timestamp_seconds",
            "Unix time of the last 200 per application.",
            ["application"],
            registry=r,
        )
        self.key_refused = Gauge(
            f"{PREFIX}_application_key_refused",
            "1 while the Post API refuses the application's key (403).",
            ["application"],
            registry=r,
        )
        self.rebalances = Counter(
            f"{PREFIX}_rebalances", "Partitions assigned, revoked or lost.", ["event"], registry=r
        )
        self.partition_stalled_seconds = Gauge(
            f"{PREFIX}_partition_stalled_seconds",
            "Seconds the committed offset has not moved while records wait, with the reason (none: it moves).",
            ["topic", "partition", "reason"],
            registry=r,
        )
        self._owned: dict[tuple[str, int], StallReason] = {}
        """Partitions this member owns, each with the reason its one stall series carries now."""
        for method in get_args(MethodName):
            for reason in get_args(Reason):
                self.rows_dead_lettered.labels(method, reason)
        for event in get_args(RebalanceEvent):
            self.rebalances.labels(event)

    def expect(self, methods: Iterable[MethodName], applications: Iterable[int]) -> None:
        """Start the series of the configured methods and applications: uploads and 200s at 0, and the
        last-success time at 0 (never), so a bridge that has had no 200 since it started alerts too."""
        for application in {str(a) for a in applications}:
            self.last_success.labels(application).set(0)
            self.key_refused.labels(application).set(0)
            for method in set(methods):
                self.rows_uploaded.labels(method, application)
                self.upload_requests.labels(method, application, "200")

    def partition_assigned(self, topic: str, partition: int) -> None:
        """This member owns the partition now: its lag and stall series exist from here on, at 0."""
        key = (topic, partition)
        if key in self._owned:
            return
        self._owned[key] = "none"
        self.consumer_lag.labels(topic, str(partition)).set(0)
        self.partition_stalled_seconds.labels(topic, str(partition), "none").set(0)

    def partition_revoked(self, topic: str, partition: int) -> None:
        """Revoked or lost: remove every series of the partition, so only its new owner exports them."""
        reason = self._owned.pop((topic, partition), None)
        if reason is not None:
            self.partition_stalled_seconds.remove(topic, str(partition), reason)
        for gauge in (self.consumer_lag, self.committed_offset):
            # committed_offset exists only after the partition's first commit.
            with contextlib.suppress(KeyError):
                gauge.remove(topic, str(partition))

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        """The partition's lag, ignored for a partition this member does not own (a late answer after a revoke)."""
        if (topic, partition) in self._owned:
            self.consumer_lag.labels(topic, str(partition)).set(max(0, lag))

    def set_committed(self, topic: str, partition: int, offset: int) -> None:
        """The partition's committed offset, ignored for a partition this member does not own."""
        if (topic, partition) in self._owned:
            self.committed_offset.labels(topic, str(partition)).set(offset)

    def set_stalled(self, topic: str, partition: int, seconds: float, reason: StallReason) -> None:
        """How long the partition has not moved while records wait, and why; `moving` resets it to 0."""
        key = (topic, partition)
        before = self._owned.get(key)
        if before is None:
            return
        if before != reason:
            self.partition_stalled_seconds.remove(topic, str(partition), before)
            self._owned[key] = reason
        self.partition_stalled_seconds.labels(topic, str(partition), reason).set(seconds)

    def moving(self, topic: str, partition: int) -> None:
        """The partition's committed offset moved, or nothing of it waits."""
        self.set_stalled(topic, partition, 0, "none")
