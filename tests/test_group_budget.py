"""`upload.rate_scope: group` on the real broker: three instances joining and leaving one consumer group keep the
sandbox's measured request rate within `upload.requests_per_second` (plus one member's share while the membership
changes), and lose nothing.

Prints one `GROUP-BUDGET` line per membership phase; docs/operations.md quotes them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from bridge.sandbox.server import Sandbox
from devtools.testkit.bridge_child import BridgeProcess, bridge_config
from devtools.testkit.kafka import TopicFactory, produce
from devtools.testkit.records import event, raw_avro, seqs
from devtools.testkit.waiting import wait_for

BUDGET = 20.0
ROWS = 50
PHASE_S = 7.0
STEADY_S = 3.5
"""The end of each phase, where the membership has settled: the rate must be within the budget itself."""


@dataclass
class Phase:
    name: str
    members: int
    before: int
    started: float
    ended: float = 0.0


def rate(sandbox: Sandbox, start: float, end: float) -> float:
    count = sum(1 for r in sandbox.state.requests if start <= r.arrived < end)
    return count / (end - start)


async def test_three_instances_joining_and_leaving_share_one_request_budget(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic = new_topic(6)
    # Enough for every phase to have a backlog (about 1,000 rows a second at the budget), and little more.
    total = 40_000
    produce(kafka_bootstrap, topic, [raw_avro(event(seq)) for seq in range(total)], partitions=6)
    group = f"g-{topic}"

    def instance(name: str) -> BridgeProcess:
        config = bridge_config(
            kafka_bootstrap,
            topic,
            sandbox.url,
            group=group,
            batch={"max_rows": ROWS, "linger_ms": 50},
            buffer={"max_records": 2000},
            upload={"max_in_flight": 2, "requests_per_second": BUDGET, "rate_scope": "group"},
            transform={"workers": 0},
        )
        return BridgeProcess(config, tmp_path, name=name).start()

    phases: list[Phase] = []

    def begin(name: str, members: int) -> None:
        now = time.monotonic()
        if phases:
            phases[-1].ended = now
        phases.append(Phase(name, members, phases[-1].members if phases else 0, now))

    a = instance("a")
    bridges = {"a": a}
    try:
        await wait_for(lambda: len(sandbox.state.requests) > 0, 60, "the first request")
        begin("a alone", 1)
        await asyncio.sleep(PHASE_S)
        bridges["b"] = instance("b")
        begin("b joins a", 2)
        await asyncio.sleep(PHASE_S)
        bridges["c"] = instance("c")
        begin("c joins a and b", 3)
        await asyncio.sleep(PHASE_S)
        a.signal()
        begin("a leaves b and c", 2)
        assert await a.wait(30) == 0
        await asyncio.sleep(PHASE_S)
        bridges["b"].signal()
        begin("b leaves c alone", 1)
        assert await bridges["b"].wait(30) == 0
        await asyncio.sleep(PHASE_S)
        phases[-1].ended = time.monotonic()
        await wait_for(lambda: len(set(seqs(sandbox.state.events))) >= total, 120, "everything delivered")
    finally:
        for bridge in bridges.values():
            bridge.kill()

    delivered = seqs(sandbox.state.events)
    assert sorted(set(delivered)) == list(range(total)), "nothing lost"
    print(f"\nGROUP-BUDGET all {total:,} events delivered, {len(delivered) - total:,} duplicates")
    for phase in phases:
        whole = rate(sandbox, phase.started, phase.ended)
        steady = rate(sandbox, phase.ended - STEADY_S, phase.ended)
        share = BUDGET / max(1, min(phase.members, phase.before or phase.members))
        changing = phase.before not in (0, phase.members)
        allowed = BUDGET + (share if changing else 0)
        print(
            f"\nGROUP-BUDGET {phase.name} ({phase.before} -> {phase.members} members): {whole:.1f} requests/s over "
            f"the phase, {steady:.1f} in its last {STEADY_S:g} s; budget {BUDGET:g}, allowed {allowed:g}"
        )
        # One request per member may land at each edge of a window.
        slack = 2 * phase.members / STEADY_S
        assert whole <= allowed + slack, phase.name
        assert steady <= BUDGET + slack, phase.name
