"""The runtime's timing rules, deterministic: an in-memory broker, a scripted Post API, loop time fast-forwarded.

Each test runs seconds to minutes of loop time in milliseconds; none sleeps in real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prometheus_client.samples import Sample

from bridge.config.model import BatchConfig, BufferConfig, KafkaConfig, ShutdownConfig, UploadConfig
from bridge.kafka.consumer import PartitionKey
from bridge.kafka.memory import MemoryBroker
from bridge.postapi.uploader import REFUSAL_CHECK_S
from bridge.runtime.loop import (
    CLOSE_TIMEOUT_S,
    COMMIT_RETRY_S,
    COMMIT_TIMEOUT_S,
    RESUME_FRACTION,
    WATCH_INTERVAL_S,
)
from bridge.runtime.stalls import STALLED_AFTER_S
from devtools.testkit.runtime import (
    APP,
    GROUP,
    TOPIC,
    Answer,
    Member,
    RecordedDeadLetters,
    ScriptedPostApi,
    config,
    ends,
    member,
    produce,
    run_virtual,
    until,
)
from devtools.testkit.runtime import (
    event as kit_event,
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
        assert old.runtime.held == joining.runtime.held == (0, 0), "every record let go of once delivered"

    run_virtual(scenario())


def test_rows_that_expire_while_their_key_is_refused_are_dead_lettered_not_sent() -> None:
    async def scenario() -> None:
        broker = broker_with(1)
        # Thirty seconds short of the Post API's 14 days: they expire while the key is refused.
        produce(broker, 50, age_s=14 * 86400 - 30)
        api = ScriptedPostApi(answer=lambda _n, t: Answer(403 if t < 120 else 200))
        letters = RecordedDeadLetters()
        settings = config(upload=UploadConfig(forbidden_retry_s=60), batch=BatchConfig(linger_ms=100))
        bridge = member(broker, api, settings, letters)
        bridge.start()
        await until(lambda: broker.committed(GROUP) == ends(broker, 1))
        await bridge.stop()
        assert api.accepted() == []
        assert [reason for *_, reason, _ in letters.letters] == ["expired"] * 50

    run_virtual(scenario())


def test_the_drain_ends_at_its_deadline_when_the_post_api_never_answers() -> None:
    async def scenario() -> None:
        broker = broker_with(2)
        produce(broker, 100, partitions=2)
        api = ScriptedPostApi(answer=lambda _n, _t: Answer(200, latency_s=10_000))
        bridge = member(broker, api, config(batch=BatchConfig(linger_ms=100)))
        bridge.start()
        await until(lambda: len(api.requests) >= 1)
        took = await bridge.stop()
        drain = ShutdownConfig().drain_timeout_s
        assert drain <= took <= drain + COMMIT_TIMEOUT_S + CLOSE_TIMEOUT_S
        assert broker.committed(GROUP) == {}, "nothing was answered, so nothing commits"

    run_virtual(scenario())


def test_without_a_dead_letter_topic_a_poison_record_halts_its_partition_only() -> None:
    async def scenario() -> None:
        broker = broker_with(2)
        for seq in range(40):
            value = b"not json" if seq == 10 else kit_event(seq)
            broker.produce(TOPIC, value, partition=seq % 2)
        api = ScriptedPostApi()
        bridge = member(broker, api, config(batch=BatchConfig(linger_ms=100)))
        bridge.start()
        await until(lambda: broker.committed(GROUP).get((TOPIC, 1)) == 20 and len(api.accepted()) == 39)
        await until(lambda: (TOPIC, 0) in bridge.consumer.paused)
        await asyncio.sleep(300)
        await bridge.stop()
        assert broker.committed(GROUP) == {(TOPIC, 0): 5, (TOPIC, 1): 20}, "nothing after the poison record commits"

    run_virtual(scenario())


def test_partitions_pause_at_the_buffer_limit_and_resume_below_it() -> None:
    async def scenario() -> None:
        broker = broker_with(2)
        produce(broker, 2000, partitions=2)
        api = ScriptedPostApi(answer=lambda _n, _t: Answer(200, latency_s=2))
        settings = config(buffer=BufferConfig(max_records=300), batch=BatchConfig(max_rows=50, linger_ms=100))
        bridge = member(broker, api, settings)
        held_at: list[tuple[str, int]] = []
        pause, resume = bridge.consumer.pause, bridge.consumer.resume

        async def pausing(keys: Sequence[PartitionKey]) -> None:
            held_at.append(("pause", bridge.runtime.ledger.records))
            await pause(keys)

        async def resuming(keys: Sequence[PartitionKey]) -> None:
            held_at.append(("resume", bridge.runtime.ledger.records))
            await resume(keys)

        bridge.consumer.pause = pausing  # type: ignore[method-assign,assignment]
        bridge.consumer.resume = resuming  # type: ignore[method-assign,assignment]
        peak = 0

        def delivered() -> bool:
            nonlocal peak
            peak = max(peak, bridge.runtime.ledger.records)
            return broker.committed(GROUP) == ends(broker, 2)

        bridge.start()
        await until(delivered, step_s=0.01)
        await bridge.stop()
        assert peak <= 300
        assert any(what == "pause" and held >= 300 for what, held in held_at)
        assert any(what == "resume" and held < 300 * RESUME_FRACTION for what, held in held_at)
        assert sorted(api.accepted()) == sorted(f"u{seq}" for seq in range(2000))

    run_virtual(scenario())


def test_an_answer_that_arrives_after_its_partition_was_revoked_never_commits_there() -> None:
    async def scenario() -> None:
        broker = broker_with(2)
        produce(broker, 100, partitions=2)
        api = ScriptedPostApi(answer=lambda n, _t: Answer(200, latency_s=30 if n == 0 else 0.05))
        settings = config(batch=BatchConfig(linger_ms=100))
        old = member(broker, api, settings)
        old.start()
        await until(lambda: len(api.requests) == 1)
        joining = member(broker, ScriptedPostApi(), settings)
        joining.start()
        await until(lambda: len(joining.consumer.assignment) == 1)
        revoked_at = asyncio.get_running_loop().time()
        [moved] = joining.consumer.assignment
        await until(lambda: api.requests[0].sent_at + 30 < asyncio.get_running_loop().time())
        await old.stop()
        await joining.stop()
        late = [positions for at, positions in old.consumer.commits if at > revoked_at and moved in positions]
        assert late == [], "the old member committed a partition it no longer owned"
        assert broker.committed(GROUP) == ends(broker, 2)

    run_virtual(scenario())


def test_the_position_commits_past_a_transaction_marker_so_the_lag_reaches_zero() -> None:
    async def scenario() -> None:
        broker = broker_with(1)
        produce(broker, 10)
        broker.produce_marker(TOPIC, 0)
        bridge = member(broker, ScriptedPostApi(), config(batch=BatchConfig(linger_ms=100)))
        bridge.start()
        await until(lambda: broker.committed(GROUP) == {(TOPIC, 0): 11})
        await asyncio.sleep(WATCH_INTERVAL_S * 2)
        lag = bridge.metrics.consumer_lag.labels(TOPIC, "0")._value.get()
        await bridge.stop()
        assert lag == 0

    run_virtual(scenario())


def test_a_refused_key_is_probed_once_per_interval_and_delivery_resumes_within_it() -> None:
    fixed_at = 200.0

    async def scenario() -> None:
        broker = broker_with(4)
        produce(broker, 2000, partitions=4)
        api = ScriptedPostApi(answer=lambda _n, t: Answer(403 if t < fixed_at else 200))
        settings = config(upload=UploadConfig(forbidden_retry_s=60), batch=BatchConfig(max_rows=100, linger_ms=100))
        bridge = member(broker, api, settings)
        bridge.start()
        await until(lambda: broker.committed(GROUP) == ends(broker, 4))
        done_at = asyncio.get_running_loop().time()
        await bridge.stop()
        first_refusal = min(r.sent_at for r in api.requests if r.status == 403)
        probes = [r for r in api.requests if r.status == 403 and r.sent_at > first_refusal + 1]
        assert len(probes) <= (fixed_at - first_refusal) // 60 + 1, "one probe per interval, not one per batch"
        assert done_at <= fixed_at + 60 + 10, "delivery resumed within forbidden_retry_s of the key working again"

    run_virtual(scenario())


def test_a_probe_answered_429_or_5xx_leaves_the_key_refused_and_its_uploads_waiting() -> None:
    """A rate-limited or failing API says nothing of the key: the refusal, its gauge and its alert stay, and the
    application's other batches keep waiting for a probe the API answers about the payload."""
    fixed_at = 120.0

    async def scenario() -> None:
        broker = broker_with(4)
        produce(broker, 1000, partitions=4)
        api = ScriptedPostApi(
            answer=lambda n, t: Answer(
                403 if n == 0 else 429 if t < fixed_at and n % 2 else 503 if t < fixed_at else 200
            )
        )
        settings = config(upload=UploadConfig(forbidden_retry_s=5), batch=BatchConfig(max_rows=100, linger_ms=100))
        bridge = member(broker, api, settings)
        bridge.start()
        await until(lambda: len(api.requests) >= 6)
        await asyncio.sleep(fixed_at - asyncio.get_running_loop().time() - 5)
        refused = bridge.metrics.key_refused.labels(str(APP))._value.get()
        before_fix = [r for r in api.requests if r.sent_at < fixed_at]
        await until(lambda: broker.committed(GROUP) == ends(broker, 4))
        await bridge.stop()
        assert refused == 1, "the key is still refused after probes answered 429 and 503"
        # The batches sent before the first 403 came back are answered 429 and 503 too, and then wait like the rest.
        after = [r for r in before_fix if r.sent_at > api.requests[0].sent_at + 1]
        at_once = max(sum(1 for r in after if abs(r.sent_at - s.sent_at) < 0.5) for s in after)
        assert at_once == 1, "one probe at a time, never the application's batches all at once"

    run_virtual(scenario())


def test_batches_emptied_by_a_rebalance_while_the_key_is_refused_end_at_once() -> None:
    fixed_at = 120.0

    async def scenario() -> None:
        broker = broker_with(4)
        produce(broker, 2000, partitions=4)

        def refusing(_n: int, t: float) -> Answer:
            return Answer(403 if t < fixed_at else 200)

        settings = config(upload=UploadConfig(forbidden_retry_s=60), batch=BatchConfig(max_rows=100, linger_ms=100))
        old = member(broker, ScriptedPostApi(answer=refusing), settings)
        old.start()
        await asyncio.sleep(10)
        joining = member(broker, ScriptedPostApi(answer=refusing), settings)
        joining.start()
        await until(lambda: len(joining.consumer.assignment) == 2)
        ledger = old.runtime.ledger
        # What the old member holds is its own partitions' records once a look at the refused key passed, not once
        # the next probe (up to forbidden_retry_s later) lets the emptied batches end.
        await until(lambda: ledger.records == sum(s.held for s in ledger.partitions.values()), 2 * REFUSAL_CHECK_S)
        await until(lambda: broker.committed(GROUP) == ends(broker, 4))
        done_at = asyncio.get_running_loop().time()
        await old.stop()
        await joining.stop()
        assert done_at <= fixed_at + 60 + 10, "no withdrawn batch waited out a probe interval of its own"

    run_virtual(scenario())


def test_after_an_outage_what_a_crash_would_send_again_stays_within_the_window() -> None:
    """Backoff's jitter lets later batches of a partition through before an earlier one after an outage; none of
    them can commit before it. Sampled all along the recovery: the rows a SIGKILL at that moment would have the next
    owner send again (sent with a 200 coming, offset not committed) stay within max_in_flight x max_rows."""
    max_in_flight, max_rows, partitions, total = 4, 200, 4, 24_000

    async def scenario() -> int:
        broker = broker_with(partitions)
        produce(broker, total, partitions=partitions)
        api = ScriptedPostApi(answer=lambda _n, t: Answer(503 if t < 30 else 200, latency_s=0.3))
        settings = config(
            batch=BatchConfig(max_rows=max_rows, linger_ms=100),
            upload=UploadConfig(max_in_flight=max_in_flight, requests_per_second=50, retry_max_s=20),
        )
        bridge = member(broker, api, settings)
        bridge.start()
        worst = 0

        def exposed() -> bool:
            nonlocal worst
            committed = broker.committed(GROUP)
            again = sum(
                1
                for request in api.requests
                if request.status == 200
                for profile in request.profiles
                if (seq := int(profile[1:])) // partitions >= committed.get((TOPIC, seq % partitions), 0)
            )
            worst = max(worst, again)
            return broker.committed(GROUP) == ends(broker, partitions)

        await until(exposed, timeout_s=900, step_s=0.25)
        await bridge.stop()
        assert len(set(api.accepted())) == total
        return worst

    worst = run_virtual(scenario())
    assert worst <= max_in_flight * max_rows, worst


def test_a_partition_held_by_a_refused_key_is_reported_stalled_with_its_reason_until_it_moves() -> None:
    fixed_at = 300.0

    async def scenario() -> None:
        broker = broker_with(2)
        produce(broker, 100, partitions=2)
        api = ScriptedPostApi(answer=lambda _n, t: Answer(403 if t < fixed_at else 200))
        settings = config(upload=UploadConfig(forbidden_retry_s=30), batch=BatchConfig(linger_ms=100))
        bridge = member(broker, api, settings)
        bridge.start()
        stalled = bridge.metrics.partition_stalled_seconds
        await asyncio.sleep(120)
        assert stalled.labels(TOPIC, "0", "key_refused")._value.get() >= STALLED_AFTER_S
        assert any("events[0]" in line and "key_refused" in line for line in bridge.runtime.stalled())
        assert not any("stalled" in reason for reason in bridge.runtime.not_ready())
        await until(lambda: broker.committed(GROUP) == ends(broker, 2))
        # Past the stall threshold again: a partition with nothing waiting does not stall, however long it idles.
        await asyncio.sleep(STALLED_AFTER_S + WATCH_INTERVAL_S * 2)
        samples = {s.labels["reason"]: s.value for s in _samples(bridge, "appmetrica_bridge_partition_stalled_seconds")}
        await bridge.stop()
        assert samples == {"none": 0.0}, "one series a partition, back to none once it moves, none while idle"
        assert bridge.runtime.stalled() == []

    run_virtual(scenario())


def _samples(bridge: Member, name: str) -> list[Sample]:
    return [s for family in bridge.metrics.registry.collect() for s in family.samples if s.name == name]


def test_a_drain_delivers_a_backlog_larger_than_the_send_window() -> None:
    """The drain commits as batches finish, so the window (rows sent and not yet committed) keeps moving; it sends
    the batch still open (lingering) too. The backlog takes longer than a revoke may wait, so it is the drain, not
    the revoke of the consumer's close, that delivers it."""

    async def scenario() -> None:
        broker = broker_with(2)
        produce(broker, 4100, partitions=2)
        api = ScriptedPostApi(answer=lambda _n, _t: Answer(200, latency_s=1.5))
        settings = config(
            batch=BatchConfig(max_rows=200, linger_ms=1000),
            upload=UploadConfig(max_in_flight=4, requests_per_second=50),
        )
        bridge = member(broker, api, settings)
        bridge.start()
        await until(lambda: bridge.runtime.ledger.records == 4100 and len(api.requests) >= 1)
        assert bridge.runtime.loop.parts.batcher.rows == 100, "the last 100 rows wait in the open batch"
        took = await bridge.stop()
        assert broker.committed(GROUP) == ends(broker, 2), "every batch was delivered and committed by the drain"
        assert settings.kafka.revoke_timeout_s < took < ShutdownConfig().drain_timeout_s

    run_virtual(scenario())


def test_a_commit_the_broker_refused_is_made_again_while_the_partition_stays_idle() -> None:
    """A refused commit (a rebalance's ILLEGAL_GENERATION, a broker away) is made again at the next turn, not only
    when more records arrive: the group's position would otherwise stay behind, and a restart send them again."""

    async def scenario() -> None:
        broker = broker_with(1)
        produce(broker, 10)
        api = ScriptedPostApi(answer=lambda _n, _t: Answer(200, latency_s=1))
        bridge = member(broker, api, config(batch=BatchConfig(linger_ms=100)))
        bridge.start()
        await until(lambda: len(api.requests) == 1, timeout_s=60)
        broker.up = False
        await until(lambda: any(positions for _, positions in bridge.consumer.commits), timeout_s=60)
        assert broker.committed(GROUP) == {}, "refused while the broker was away"
        away_s, refused = 20, len(bridge.consumer.commits)
        await asyncio.sleep(away_s)
        asked = len(bridge.consumer.commits) - refused
        paced = away_s / COMMIT_RETRY_S + away_s / WATCH_INTERVAL_S + 1
        assert 0 < asked <= paced, f"asked {asked} times in {away_s} s: again, but at a pace (at most {paced:g})"
        broker.up = True
        await until(lambda: broker.committed(GROUP) == ends(broker, 1), timeout_s=5 * COMMIT_TIMEOUT_S)
        await bridge.stop()

    run_virtual(scenario())


def test_a_delivery_that_fails_in_a_way_no_retry_mends_fails_the_bridge_and_commits_nothing_past_it() -> None:
    """A bug or an exception nobody foresaw ends a delivery task: its records are never done, so the bridge is not
    ready (naming it) and stops with the error, which the service turns into exit 3, never committing past them."""

    def unforeseen(_profiles: list[str]) -> None:
        raise ZeroDivisionError("a bug in a delivery")

    async def scenario() -> None:
        broker = broker_with(1)
        produce(broker, 10)
        api = ScriptedPostApi(on_send=unforeseen)
        bridge = member(broker, api, config(batch=BatchConfig(linger_ms=100)))
        bridge.start()
        assert bridge.task is not None
        await until(bridge.task.done, timeout_s=60)
        assert isinstance(bridge.task.exception(), ZeroDivisionError)
        assert any("a delivery failed: ZeroDivisionError" in why for why in bridge.runtime.readiness.reasons())
        assert broker.committed(GROUP) == {}

    run_virtual(scenario())
