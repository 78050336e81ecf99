"""The metrics an operator's alerts read exist before the first event, and per-partition series live exactly
while this member owns the partition."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge.ops.metrics import STALL_REASONS, Metrics

Sample = tuple[str, frozenset[tuple[str, str]]]


def exported(metrics: Metrics) -> dict[Sample, float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def series(name: str, **labels: str) -> Sample:
    return (f"appmetrica_bridge_{name}", frozenset(labels.items()))


def test_every_dead_letter_reason_of_every_method_and_every_rebalance_event_starts_at_zero() -> None:
    out = exported(Metrics())
    for method in ("events", "revenue", "adrevenue", "ecommerce", "profiles"):
        for reason in ("decode", "schema", "invalid", "expired", "rejected"):
            assert out[series("rows_dead_lettered_total", method=method, reason=reason)] == 0
    for event in ("assigned", "revoked", "lost"):
        assert out[series("rebalances_total", event=event)] == 0


def test_configured_applications_export_uploads_at_zero_and_a_last_success_of_never() -> None:
    metrics = Metrics()
    metrics.expect(["events", "revenue"], [1111, 2222])
    out = exported(metrics)
    for application in ("1111", "2222"):
        assert out[series("last_successful_upload_timestamp_seconds", application=application)] == 0
        assert out[series("application_key_refused", application=application)] == 0
        for method in ("events", "revenue"):
            assert out[series("rows_uploaded_total", method=method, application=application)] == 0
            assert out[series("upload_requests_total", method=method, application=application, status="200")] == 0


def test_an_assigned_partition_has_lag_and_stall_at_zero_and_a_revoked_one_nothing() -> None:
    metrics = Metrics()
    metrics.partition_assigned("t", 0)
    metrics.partition_assigned("t", 1)
    metrics.set_lag("t", 0, 500)
    metrics.set_committed("t", 0, 42)
    out = exported(metrics)
    assert out[series("consumer_lag", topic="t", partition="0")] == 500
    assert out[series("consumer_lag", topic="t", partition="1")] == 0
    assert out[series("committed_offset", topic="t", partition="0")] == 42
    assert out[series("partition_stalled_seconds", topic="t", partition="1", reason="none")] == 0

    metrics.partition_revoked("t", 0)
    metrics.set_lag("t", 0, 700)  # a late high-watermark answer for a partition another member owns now
    metrics.set_stalled("t", 0, 30, "api_unavailable")
    owned = {dict(labels)["partition"] for _, labels in exported(metrics) if ("topic", "t") in labels}
    assert owned == {"1"}, "partition 0's series outlive its revoke"


def test_a_stalled_partition_has_one_series_carrying_its_current_reason() -> None:
    metrics = Metrics()
    metrics.partition_assigned("t", 3)
    metrics.set_stalled("t", 3, 120, "registry_unavailable")
    metrics.set_stalled("t", 3, 180, "api_unavailable")
    stalls = {k: v for k, v in exported(metrics).items() if k[0].endswith("partition_stalled_seconds")}
    assert stalls == {series("partition_stalled_seconds", topic="t", partition="3", reason="api_unavailable"): 180}
    metrics.moving("t", 3)
    stalls = {k: v for k, v in exported(metrics).items() if k[0].endswith("partition_stalled_seconds")}
    assert stalls == {series("partition_stalled_seconds", topic="t", partition="3", reason="none"): 0}
    metrics.partition_revoked("t", 3)
    assert not [k for k in exported(metrics) if k[0].endswith("partition_stalled_seconds")]


def test_the_operations_guide_explains_every_stall_reason() -> None:
    guide = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    missing = [reason for reason in STALL_REASONS if reason != "none" and f"| `{reason}` |" not in guide]
    assert missing == [], f"docs/operations.md's stall table lacks {missing}"
