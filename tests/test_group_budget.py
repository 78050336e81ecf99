"""`upload.rate_scope: group` on the real broker: three instances joining and leaving one consumer group keep the
sandbox's measured request rate within `upload.requests_per_second` (plus one member's share while the membership
changes), and lose nothing: every record below the group's committed offsets was accepted.

Prints one `GROUP-BUDGET` line per membership phase; docs/operations.md quotes them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from bridge.sandbox.server import Sandbox
from devtools.testkit.bridge_child import BridgeProcess, bridge_config
from devtools.testkit.kafka import TopicFactory, committed, produce
from devtools.testkit.records import event, raw_avro, seqs
from devtools.testkit.waiting import wait_for

BUDGET = 20.0
ROWS = 20
"""Small batches: the budget, not the machine's CPU, limits three bridges on a busy 2-core machine."""
PARTITIONS = 6
STEADY_S = 3.0
"""Each phase ends this long after every member has counted the new membership: the rate must be within the budget
itself over that stretch."""


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


def counted(bridge: BridgeProcess) -> int:
    """The membership this instance's rate share was last set for (0 before it set one)."""
    shares = [line["members"] for line in bridge.logs() if line.get("event") == "group rate share"]
    return shares[-1] if shares else 0


async def test_three_instances_joining_and_leaving_share_one_request_budget(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic = new_topic(PARTITIONS)
    # 400 rows a second at the budget: a backlog through every phase. What is left at the end stays in Kafka.
    total = 20_000
    produce(kafka_bootstrap, topic, [raw_avro(event(seq)) for seq in range(total)], partitions=PARTITIONS)
    group = f"g-{topic}"

    def instance(name: str) -> BridgeProcess:
        config = bridge_config(
            kafka_bootstrap,
            topic,
            sandbox.url,
            group=group,
            batch={"max_rows": ROWS, "linger_ms": 50},
            # A few seconds of work at a member's share: a member that leaves hands little on uncommitted.
            buffer={"max_records": 400},
            upload={"max_in_flight": 2, "requests_per_second": BUDGET, "rate_scope": "group"},
            transform={"workers": 0},
        )
        return BridgeProcess(config, tmp_path, name=name).start()

    phases: list[Phase] = []
    bridges: dict[str, BridgeProcess] = {}

    def begin(name: str, members: int) -> None:
        now = time.monotonic()
        if phases:
            phases[-1].ended = now
        phases.append(Phase(name, members, phases[-1].members if phases else 0, now))

    async def settled() -> None:
        """Until every live instance counts the phase's members, then STEADY_S more."""
        members = phases[-1].members
        live = [bridge for bridge in bridges.values() if bridge.exit_code is None]
        await wait_for(lambda: all(counted(b) == members for b in live), 60, f"{phases[-1].name}: settled")
        await asyncio.sleep(STEADY_S)

    async def leave(name: str) -> None:
        bridges[name].signal()
        assert await bridges[name].wait(30) == 0

    bridges["a"] = instance("a")
    try:
        await wait_for(lambda: len(sandbox.state.requests) > 0, 60, "the first request")
        begin("a alone", 1)
        await settled()
        bridges["b"] = instance("b")
        begin("b joins a", 2)
        await settled()
        bridges["c"] = instance("c")
        begin("c joins a and b", 3)
        await settled()
        begin("a leaves b and c", 2)
        await leave("a")
        await settled()
        begin("b leaves c alone", 1)
        await leave("b")
        await settled()
        phases[-1].ended = time.monotonic()
        await leave("c")
    finally:
        for bridge in bridges.values():
            bridge.kill()

    delivered = seqs(sandbox.state.events)
    accepted = set(delivered)
    positions = committed(kafka_bootstrap, group, topic, PARTITIONS)
    below: set[int] = set()
    for partition, position in positions.items():
        # Round-robin: seq = offset * PARTITIONS + partition. Below the committed offset, every record was accepted.
        mine = set(range(partition, min(max(position, 0) * PARTITIONS, total), PARTITIONS))
        assert mine <= accepted, f"partition {partition}: a committed record was never accepted (lost)"
        below |= mine
    assert len(below) >= len(accepted) // 2, f"{len(below)} of {len(accepted)} accepted records committed"
    assert len(accepted) < total, "a backlog through the last phase"
    print(
        f"\nGROUP-BUDGET {len(accepted):,} events delivered, {len(delivered) - len(accepted):,} duplicates; "
        f"{len(below):,} committed, every one of them accepted; {total - len(accepted):,} left in Kafka"
    )
    for phase in phases:
        whole = rate(sandbox, phase.started, phase.ended)
        steady = rate(sandbox, phase.ended - STEADY_S, phase.ended)
        share = BUDGET / max(1, min(phase.members, phase.before or phase.members))
        changing = phase.before not in (0, phase.members)
        allowed = BUDGET + (share if changing else 0)
        print(
            f"\nGROUP-BUDGET {phase.name} ({phase.before} -> {phase.members} members): {whole:.1f} requests/s over "
            f"the phase ({phase.ended - phase.started:.1f} s), {steady:.1f} in its last {STEADY_S:g} s; budget "
            f"{BUDGET:g}, allowed {allowed:g}"
        )
        # One request per member may land at each edge of a window.
        slack = 2 * phase.members / STEADY_S
        assert whole <= allowed + slack, phase.name
        assert steady <= BUDGET + slack, phase.name
