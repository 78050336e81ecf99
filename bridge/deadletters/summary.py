"""`dead-letters summary`: what the dead letters are, counted by reason, source partition, day and detail."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bridge.deadletters.records import DeadLetter

TOP_DETAILS = 10
_DETAIL_WIDTH = 100


@dataclass
class Summary:
    total: int = 0
    replayed_before: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_source: Counter[tuple[str, int]] = field(default_factory=Counter)
    by_day: Counter[str] = field(default_factory=Counter)
    by_detail: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_ms: int | None = None
    last_ms: int | None = None

    def add(self, letter: DeadLetter) -> None:
        self.total += 1
        self.replayed_before += letter.replayed_before
        self.by_reason[letter.reason] += 1
        self.by_source[(letter.source_topic, letter.source_partition)] += 1
        self.by_day[letter.day] += 1
        self.by_detail[(letter.reason, letter.detail)] += 1
        self.first_ms = letter.timestamp_ms if self.first_ms is None else min(self.first_ms, letter.timestamp_ms)
        self.last_ms = letter.timestamp_ms if self.last_ms is None else max(self.last_ms, letter.timestamp_ms)

    @classmethod
    def of(cls, letters: Iterable[DeadLetter]) -> Summary:
        summary = cls()
        for letter in letters:
            summary.add(letter)
        return summary

    def as_json(self, topic: str) -> dict[str, Any]:
        return {
            "topic": topic,
            "total": self.total,
            "replayed_before": self.replayed_before,
            "by_reason": dict(self.by_reason.most_common()),
            "by_source": [
                {"topic": t, "partition": p, "count": n}
                for (t, p), n in sorted(self.by_source.items(), key=lambda item: item[0])
            ],
            "by_day": dict(sorted(self.by_day.items())),
            "top_details": [
                {"reason": r, "detail": d, "count": n} for (r, d), n in self.by_detail.most_common(TOP_DETAILS)
            ],
        }

    def as_text(self, topic: str) -> str:
        if not self.total:
            return f"{topic}: no dead letters in the range read\n"
        lines = [f"{topic}: {self.total:,} dead letters ({self.replayed_before:,} of them replayed before)", ""]
        lines += table(["reason", "records"], [[r, f"{n:,}"] for r, n in self.by_reason.most_common()])
        lines.append("")
        sources = sorted(self.by_source.items(), key=lambda item: item[0])
        lines += table(["source topic", "partition", "records"], [[t, str(p), f"{n:,}"] for (t, p), n in sources])
        lines.append("")
        lines += table(["day (UTC)", "records"], [[d, f"{n:,}"] for d, n in sorted(self.by_day.items())])
        lines.append("")
        details = self.by_detail.most_common(TOP_DETAILS)
        rows = [[f"{n:,}", r, _cut(d)] for (r, d), n in details]
        lines += table(["records", "reason", "most frequent details"], rows)
        return "\n".join(lines) + "\n"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell; the last column is left ragged."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]

    def line(cells: list[str]) -> str:
        return "  ".join([*(c.ljust(w) for c, w in zip(cells, widths, strict=False)), cells[-1]]).rstrip()

    return [line(header), line(["-" * len(h) for h in header]), *(line(row) for row in rows)]


def _cut(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _DETAIL_WIDTH else flat[: _DETAIL_WIDTH - 1] + "…"
