"""The runtime's timing rules, deterministic: an in-memory broker, a scripted Post API, loop time fast-forwarded.

Each test runs seconds to minutes of loop time in milliseconds; none sleeps in real time.
"""

from __future__ import annotations

from bridge.config import BatchConfig, KafkaConfig, UploadConfig
from bridge.kafka.memory import MemoryBroker
from tests.support.runtime_kit import (
    GROUP,
    TOPIC,
    Answer,
    Member,
    ScriptedPostApi,
    config,
    ends,
    member,
    produce,
    run_virtual,
    until,
)


def broker_with(partitions: int) -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic(TOPIC, partitions)
    return broker


def test_an_offset_commits_only_after_the_post_api_answered_200() -> None:
    async def scenario() -> None:
        broker = broker_with(1)
        produce(broker, 10)
        api = ScriptedPostApi(answer=lambda _n, _t: Answer(200, latency_s=20))
        bridge = member(broker, api, config(batch=BatchConfig(linger_ms=100)))
        bridge.start()
        await until(lambda: broker.committed(GROUP) == ends(broker, 1), timeout_s=60)
        [request] = api.requests
        first_commit_at = bridge.consumer.commits[0][0]
        assert first_commit_at >= request.sent_at + 20
        await bridge.stop()

    run_virtual(scenario())


def test_rows_of_a_partition_revoked_while_their_batch_waits_for_a_slot_are_never_sent() -> None:
    """A second member joins while batches queue behind max_in_flight: whatever was revoked leaves its batch at the
    moment its request goes on the wire, so duplicates stay within what was in flight."""

    async def scenario() -> None:
        broker = broker_with(4)
        produce(broker, 16000, partitions=4)
        sent_unowned: list[str] = []
        first: list[Member] = []

        def on_send(profiles: list[str]) -> None:
            assignment = first[0].consumer.assignment
            sent_unowned.extend(p for p in profiles if (TOPIC, int(p[1:]) % 4) not in assignment)

        def slow(_n: int, _t: float) -> Answer:
            return Answer(200, latency_s=0.7)

        api = ScriptedPostApi(answer=slow, on_send=on_send)
        other_api = ScriptedPostApi(answer=slow)
        settings = config(
            batch=BatchConfig(max_rows=200, linger_ms=100),
            upload=UploadConfig(max_in_flight=4, requests_per_second=100),
            kafka=KafkaConfig(bootstrap_servers="memory:0", group_id=GROUP, revoke_timeout_s=3),
        )
        old = member(broker, api, settings)
        first.append(old)
        old.start()
        await until(lambda: len(api.requests) >= 8)
        joining = member(broker, other_api, settings)
        joining.start()

        def accepted() -> list[str]:
            return api.accepted() + other_api.accepted()

        await until(lambda: len(set(accepted())) == 16000 and broker.committed(GROUP) == ends(broker, 4), 120)
        await old.stop()
        await joining.stop()
        assert joining.consumer.assignment == set() and other_api.accepted(), "the new member took partitions over"
        assert not sent_unowned, f"{len(sent_unowned)} rows were sent after their partition was revoked"
        assert len(accepted()) - 16000 <= 4 * 200

    run_virtual(scenario())
