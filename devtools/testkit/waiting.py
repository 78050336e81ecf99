"""Waiting for a condition with a deadline, and reading one metric out of the Prometheus exposition text."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

from bridge.sandbox.server import Sandbox
from devtools.testkit.kafka import committed, end_offsets
from devtools.testkit.records import seqs


async def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(interval_s)


def sample(metrics: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`; 0 when none is exported yet."""
    total = 0.0
    for line in metrics.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def delivered_and_committed(
    bootstrap: str, sandbox: Sandbox, topic: str, group: str, total: int, timeout_s: float = 120
) -> None:
    """Wait until the sandbox holds `total` distinct events and the group committed `topic` to its end."""
    await wait_for(lambda: len(set(seqs(sandbox.state.events))) >= total, timeout_s, f"{total} distinct events")
    ends = end_offsets(bootstrap, topic)
    await wait_for(lambda: committed(bootstrap, group, topic) == ends, 30, "committed offsets at the end")
