"""Dead letters as the tools see them: each record of the dead-letter topic with its reason headers read out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.deadletters.clients import headers_of
from bridge.kafka.dead_letter_producer import (
    HEADER_DETAIL,
    HEADER_OFFSET,
    HEADER_ORIGINAL_OFFSET,
    HEADER_ORIGINAL_PARTITION,
    HEADER_ORIGINAL_TOPIC,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_REPLAYED,
    HEADER_TOPIC,
    HEADER_VALUE_DROPPED,
)

Headers = Sequence[tuple[str, str | bytes | None]]

BRIDGE_HEADERS = frozenset({HEADER_REASON, HEADER_DETAIL, HEADER_TOPIC, HEADER_PARTITION, HEADER_OFFSET})
"""What the bridge adds when it dead-letters a record; a replay sends the record back without them."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic: where it sits, what it carries, and why it is there."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int

    headers_readable: bool = True
    """False when a header name is not UTF-8, which the client cannot read: then no header is known."""

    @classmethod
    def of(cls, message: Any) -> DeadLetter:
        read, readable = headers_of(message)
        headers: list[tuple[str, str | bytes | None]] = list(read)
        # The bridge appends its headers after the record's own, so should a name come twice, the last one counts.
        found = {name: _text(value) for name, value in headers}
        return cls(
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            timestamp_ms=message.timestamp()[1],
            key=message.key(),
            value=message.value(),
            headers=headers,
            reason=found.get(HEADER_REASON, "(no reason header)"),
            detail=found.get(HEADER_DETAIL, ""),
            source_topic=found.get(HEADER_TOPIC, ""),
            source_partition=_int(found.get(HEADER_PARTITION)),
            source_offset=_int(found.get(HEADER_OFFSET)),
            headers_readable=readable,
        )

    @property
    def coordinates(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def replayed_before(self) -> bool:
        """Sent back by a replay once and dead-lettered again."""
        return any(name == HEADER_REPLAYED for name, _ in self.headers)

    @property
    def value_dropped(self) -> bool:
        """The record was too large for the dead-letter topic, which holds it without its value and headers."""
        return any(name == HEADER_VALUE_DROPPED for name, _ in self.headers)

    @property
    def day(self) -> str:
        return when(self.timestamp_ms).date().isoformat()

    def replay_headers(self) -> list[tuple[str, str | bytes | None]]:
        """The record's own headers, the replay marker, and where it was first read from (kept across replays)."""
        kept = [(n, v) for n, v in self.headers if n not in BRIDGE_HEADERS and n != HEADER_REPLAYED]
        names = {n for n, _ in kept}
        if HEADER_ORIGINAL_TOPIC not in names:
            kept += [
                (HEADER_ORIGINAL_TOPIC, self.source_topic.encode()),
                (HEADER_ORIGINAL_PARTITION, str(self.source_partition).encode()),
                (HEADER_ORIGINAL_OFFSET, str(self.source_offset).encode()),
            ]
        return [*kept, (HEADER_REPLAYED, self.coordinates.encode())]


@dataclass(frozen=True, slots=True)
class Filters:
    """Which dead letters a command looks at; unset fields match everything."""

    reason: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    partition: int | None = None
    """The source partition."""
    from_offset: int | None = None
    to_offset: int | None = None
    """The source offset range, both ends included."""

    def matches(self, letter: DeadLetter) -> bool:
        if self.reason is not None and letter.reason != self.reason:
            return False
        if self.partition is not None and letter.source_partition != self.partition:
            return False
        if self.from_offset is not None and letter.source_offset < self.from_offset:
            return False
        if self.to_offset is not None and letter.source_offset > self.to_offset:
            return False
        moment = when(letter.timestamp_ms)
        if self.since is not None and moment < self.since:
            return False
        return self.until is None or moment < self.until

    def describe(self) -> str:
        """The filters as text (`reason=invalid,partition=2`, or `all`); `Filters.parse` reads it back."""
        parts = [
            f"reason={self.reason}" if self.reason is not None else "",
            f"since={self.since.isoformat()}" if self.since else "",
            f"until={self.until.isoformat()}" if self.until else "",
            f"partition={self.partition}" if self.partition is not None else "",
            f"from_offset={self.from_offset}" if self.from_offset is not None else "",
            f"to_offset={self.to_offset}" if self.to_offset is not None else "",
        ]
        return ",".join(p for p in parts if p) or "all"

    @classmethod
    def parse(cls, text: str) -> Filters:
        """The filters `describe` wrote; ValueError for any other text."""
        if text == "all":
            return cls()
        fields: dict[str, Any] = {}
        for part in text.split(","):
            name, _, value = part.partition("=")
            if name == "reason":
                fields[name] = value
            elif name in ("since", "until"):
                fields[name] = moment(value)
            elif name in ("partition", "from_offset", "to_offset"):
                fields[name] = int(value)
            else:
                raise ValueError(f"not a filter: {part!r}")
        return cls(**fields)


def when(timestamp_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC)


def moment(text: str) -> dt.datetime:
    """An ISO 8601 date or date-time from the command line; a time without a zone is UTC."""
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date or date-time (2026-12-01 or 2026-12-01T08:00)") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _int(text: str | None) -> int:
    try:
        return int(text) if text is not None else -1
    except ValueError:
        return -1


def _text(value: str | bytes | None) -> str:
    if isinstance(value, str):
        return value
    return (value or b"").decode("utf-8", "replace")
