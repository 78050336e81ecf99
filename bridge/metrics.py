"""Prometheus metrics of one bridge instance, on a registry of its own so several can live in one process."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "appmetrica_bridge"

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

    def partition_assigned(self, topic: str, partition: int) -> None:
        """Create the partition's series at 0, so its lag exists from assignment on."""
        self.consumer_lag.labels(topic, str(partition)).set(0)

    def partition_revoked(self, topic: str, partition: int) -> None:
        """Remove the partition's series: no member exports lag for a partition it no longer owns."""
        for gauge in (self.consumer_lag, self.committed_offset):
            with contextlib.suppress(KeyError):
                gauge.remove(topic, str(partition))
