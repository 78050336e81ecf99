"""Nothing lost when the bridge's processes or Kafka fail: instances joining and leaving, SIGKILL, a broker
restart, a dead transform worker, inflicted on the real broker and the sandbox. Failures of the records, the Post API
and the schema registry: test_reliability.py.

Each test prints a `RELIABILITY` line with what it measured; docs/reliability.md quotes them.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.sandbox.server import Sandbox
from devtools.kafka_local import LocalKafka
from devtools.testkit.bridge_child import BridgeProcess, bridge_config
from devtools.testkit.kafka import TopicFactory, committed, end_offsets, produce
from devtools.testkit.processes import alive, transform_workers
from devtools.testkit.records import event, raw_avro, seqs
from devtools.testkit.waiting import delivered_and_committed, wait_for


def paced_config(
    bootstrap: str, topic: str, sandbox: Sandbox, group: str, **sections: dict[str, Any]
) -> dict[str, Any]:
    """A bridge held to small batches and a small buffer, so a run lasts long enough to be interrupted."""
    config = bridge_config(
        bootstrap,
        topic,
        sandbox.url,
        group=group,
        batch={"max_rows": 200, "linger_ms": 100},
        buffer={"max_records": 2000},
        upload={"max_in_flight": 2, "requests_per_second": 100},
    )
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


async def test_instances_joining_and_leaving_deliver_everything(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic = new_topic(8)
    total = 24_000
    produce(kafka_bootstrap, topic, [raw_avro(event(seq)) for seq in range(total)], partitions=8)
    sandbox.set_faults(latency_ms=150)
    group = f"g-{topic}"

    def instance(name: str) -> BridgeProcess:
        config = paced_config(kafka_bootstrap, topic, sandbox, group, batch={"max_rows": 250})
        return BridgeProcess(config, tmp_path, name=name).start()

    first, second = instance("a"), instance("b")
    bridges = [first, second]
    try:
        await wait_for(lambda: len(sandbox.state.events) >= total // 5, 60, "a fifth delivered")
        bridges.append(instance("c"))
        await wait_for(lambda: len(sandbox.state.events) >= total // 2, 90, "half delivered")
        first.signal(signal.SIGTERM)
        assert await first.wait(30) == 0
        await wait_for(lambda: len(set(seqs(sandbox.state.events))) >= total, 120, "everything delivered")
        ends = end_offsets(kafka_bootstrap, topic, 8)
        await wait_for(lambda: committed(kafka_bootstrap, group, topic, 8) == ends, 30, "offsets at the end")
    finally:
        for bridge in bridges:
            bridge.kill()
    delivered = seqs(sandbox.state.events)
    assert sorted(set(delivered)) == list(range(total))
    duplicates = len(delivered) - total
    revoked = sum(1 for b in bridges for line in b.logs() if line.get("event") == "partitions revoked")
    print(
        f"\nRELIABILITY rebalance: 2 instances, a third joined, one left: all {total} delivered, "
        f"{duplicates} duplicates ({duplicates / total:.2%}), {revoked} revocations"
    )


async def test_sigkill_three_times_under_faults_loses_nothing(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic = new_topic(4)
    # Three kills take at most 6,000 rows of progress; the rest is delivered by the last run.
    total, max_rows, in_flight = 8_000, 200, 4
    produce(kafka_bootstrap, topic, [raw_avro(event(seq)) for seq in range(total)])
    sandbox.set_faults(fault_429=0.1, retry_after=1, fault_5xx=0.1, fault_drop=0.1, latency_ms=50)
    group = f"g-{topic}"
    config = paced_config(
        kafka_bootstrap,
        topic,
        sandbox,
        group,
        batch={"max_rows": max_rows},
        upload={"max_in_flight": in_flight, "timeout_s": 5},
        # The group hands a killed member's partitions on when its session ends: the broker's least, not 10 s.
        kafka={"properties": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}},
    )
    rng = random.Random(3)
    kills = 0

    def accepted_at_least(count: int) -> Callable[[], bool]:
        return lambda: len(sandbox.state.events) >= count

    bridge = BridgeProcess(config, tmp_path, name="run0").start()
    try:
        for kills in range(1, 4):
            target = len(sandbox.state.events) + rng.randint(800, 2000)
            await wait_for(accepted_at_least(target), 120, "progress before the kill")
            bridge.signal(signal.SIGKILL)
            await bridge.wait(10)
            bridge = BridgeProcess(config, tmp_path, name=f"run{kills}").start()
        await delivered_and_committed(kafka_bootstrap, sandbox, topic, group, total, timeout_s=180)
    finally:
        bridge.kill()
    delivered = seqs(sandbox.state.events)
    assert sorted(set(delivered)) == list(range(total))
    duplicates = len(delivered) - total
    # Only what was accepted but not yet committed can come again: in-flight batches and the buffer behind them.
    assert duplicates <= kills * (in_flight + 1) * max_rows + kills * 2000
    print(
        f"\nRELIABILITY sigkill: {kills} SIGKILLs under 429/5xx/drops: all {total} delivered, "
        f"{duplicates} duplicates ({duplicates / total:.2%})"
    )


async def test_a_broker_restart_mid_run_loses_nothing(
    kafka_bootstrap: str, owned_kafka_broker: LocalKafka, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic = new_topic(4)
    total = 10_000
    produce(kafka_bootstrap, topic, [raw_avro(event(seq)) for seq in range(total)])
    sandbox.set_faults(latency_ms=100)
    group = f"g-{topic}"
    config = paced_config(kafka_bootstrap, topic, sandbox, group)
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        await wait_for(lambda: len(sandbox.state.events) >= 2000, 60, "progress before the restart")
        restarted = time.monotonic()
        await asyncio.to_thread(owned_kafka_broker.restart)
        await delivered_and_committed(kafka_bootstrap, sandbox, topic, group, total, timeout_s=180)
        recovered = time.monotonic() - restarted
        assert bridge.process.poll() is None, "the bridge rode out the restart"
    finally:
        bridge.kill()
    delivered = seqs(sandbox.state.events)
    assert sorted(set(delivered)) == list(range(total))
    print(
        f"\nRELIABILITY broker-restart: all {total} delivered, {len(delivered) - total} duplicates, "
        f"done {recovered:.1f} s after the restart began"
    )


async def test_a_dead_transform_worker_fails_the_bridge_loudly_and_loses_nothing(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic = new_topic(4)
    total = 6000
    produce(kafka_bootstrap, topic, [raw_avro(event(seq)) for seq in range(total)])
    sandbox.set_faults(latency_ms=100)
    group = f"g-{topic}"
    config = paced_config(kafka_bootstrap, topic, sandbox, group, transform={"workers": 2})
    first = BridgeProcess(config, tmp_path, name="first").start()
    try:
        await wait_for(lambda: len(sandbox.state.events) >= 1000, 60, "progress before the kill")
        workers = transform_workers(first)
        assert len(workers) == 2
        workers[0].kill()
        assert await first.wait(60) == 3, "a dead worker fails the bridge with exit code 3"
        await wait_for(lambda: not any(map(alive, workers)), 10, "the other worker to end with the bridge")
    finally:
        first.kill()
    failed = [line for line in first.logs() if line.get("event") == "the bridge failed"]
    assert failed and "BrokenProcessPool" in failed[0]["exception"], "the log says a worker died"
    delivered = set(seqs(sandbox.state.events))
    # Round-robin over 4 partitions: the record at offset o of partition p carries seq 4 * o + p.
    for partition, offset in committed(kafka_bootstrap, group, topic).items():
        missing = [4 * o + partition for o in range(max(offset, 0)) if 4 * o + partition not in delivered]
        assert not missing, f"partition {partition} committed {offset} past undelivered records {missing[:5]}"
    lost_with_the_worker = total - len(delivered)

    second = BridgeProcess(config, tmp_path, name="second").start()
    try:
        await delivered_and_committed(kafka_bootstrap, sandbox, topic, group, total)
        workers = transform_workers(second)
        second.signal(signal.SIGKILL)
        await second.wait(10)
        await wait_for(lambda: not any(map(alive, workers)), 10, "the workers to end with a killed bridge")
    finally:
        second.kill()
    assert sorted(set(seqs(sandbox.state.events))) == list(range(total))
    print(
        f"\nRELIABILITY worker-crash: exit 3, nothing committed past an undelivered record, {lost_with_the_worker} "
        f"left for the restart, all {total} delivered after it; no worker outlives a SIGKILLed bridge"
    )
