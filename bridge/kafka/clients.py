"""What every Kafka client of the bridge shares with its consumer."""

from __future__ import annotations

from typing import Any


def client_properties(properties: dict[str, Any]) -> dict[str, Any]:
    """The connection properties a producer shares with the consumer (security and the like)."""
    consumer_only = (
        "auto.offset.reset",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "max.poll.interval.ms",
        "heartbeat.interval.ms",
        "fetch.",
        "group.",
        "isolation.level",
        "enable.partition.eof",
        "queued.",
        "auto.commit",
    )
    return {k: v for k, v in properties.items() if not k.startswith(consumer_only)}
