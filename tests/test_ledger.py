"""The ledger: a committed position never passes an unfinished record."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.kafka.memory import MemoryRecord
from bridge.ops.metrics import Metrics
from bridge.runtime.ledger import Ledger, PartitionOffsets


def tracker(offsets: list[int]) -> PartitionOffsets:
    state = PartitionOffsets("events", 0)
    for offset in offsets:
        state.add(offset)
    return state


def test_out_of_order_completion_commits_only_the_contiguous_prefix() -> None:
    state = tracker([10, 11, 12, 13])
    state.done(12)
    state.done(13)
    assert state.advance(None) is None
    state.done(10)
    assert state.advance(None) == 11
    state.confirm(11)
    state.done(11)
    assert state.advance(None) == 14
    state.confirm(14)
    assert state.advance(None) is None, "a committed position is not handed out twice"
    assert state.committed == 14


def test_a_position_whose_commit_was_refused_is_handed_out_again() -> None:
    state = tracker([0, 1])
    state.done(0)
    state.done(1)
    assert state.advance(None) == 2
    assert state.committed is None, "nothing is committed before the group confirms it"
    assert state.advance(None) == 2, "the commit was refused (a rebalance, the broker away): it is made again"
    assert state.advance(5) == 5, "once nothing is held, the consumer's position past markers"
    state.confirm(5)
    state.confirm(2)
    assert state.committed == 5, "a confirmation arriving late never moves the position back"


def test_gaps_in_offsets_commit_past_the_last_given_offset() -> None:
    # Transaction markers and compaction leave holes: commit last done + 1, not a guess.
    state = tracker([5, 9, 20])
    for offset in (20, 5, 9):
        state.done(offset)
    assert state.advance(None) == 21


def test_a_failed_record_holds_the_partition_back() -> None:
    state = tracker([0, 1, 2])
    state.done(1)
    state.done(2)
    assert state.advance(None) is None
    assert not state.idle


def test_a_stretch_fetched_again_is_not_held_twice() -> None:
    state = tracker([3, 4])
    assert not state.add(4)
    assert not state.add(2)
    state.done(3)
    state.done(4)
    assert state.advance(None) == 5
    state.confirm(5)
    assert not state.add(4), "below the committed position"
    assert state.add(5)


def test_a_retired_partition_ignores_late_answers() -> None:
    state = tracker([0, 1])
    state.retired = True
    state.done(0)
    assert state.advance(None) is None


def test_truncate_lets_go_of_the_newest_records() -> None:
    state = tracker([0, 1, 2, 3])
    state.done(0)
    state.done(1)
    state.truncate(2)
    assert state.idle
    assert state.advance(None) == 2


@st.composite
def offsets_and_order(draw: st.DrawFn) -> tuple[list[int], list[int], int]:
    gaps = draw(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=60))
    offsets = []
    position = draw(st.integers(min_value=0, max_value=1000))
    for gap in gaps:
        position += gap
        offsets.append(position)
    order = draw(st.permutations(offsets))
    finished = draw(st.integers(min_value=0, max_value=len(order)))
    return offsets, list(order), finished


@given(offsets_and_order())
def test_committed_offset_never_passes_an_unfinished_record(case: tuple[list[int], list[int], int]) -> None:
    offsets, order, finished = case
    state = tracker(offsets)
    done: set[int] = set()
    committed = None
    for offset in order[:finished]:
        state.done(offset)
        done.add(offset)
        position = state.advance(None)
        if position is not None:
            assert committed is None or position > committed, "positions only move forward"
            state.confirm(position)
            committed = position
        if committed is not None:
            assert all(o in done for o in offsets if o < committed), "a committed record was not finished"
    unfinished = [o for o in offsets if o not in done]
    expected = (unfinished[0] if unfinished else offsets[-1] + 1) if finished else None
    if expected is not None and expected == offsets[0]:
        expected = None
    if expected is not None and unfinished:
        # The position is the last done offset of the prefix + 1; with gaps it may sit below the first unfinished.
        prefix = [o for o in offsets if o < unfinished[0]]
        expected = prefix[-1] + 1 if prefix else None
    assert committed == expected


def test_records_of_a_partition_not_assigned_here_are_never_held_or_committed() -> None:
    # librdkafka can hand over records fetched just before a revoke: another member owns them now.
    ledger = Ledger(Metrics())
    ledger.assign([("events", 0)])
    fetched = [MemoryRecord("events", partition, offset, None, b"v", None) for partition in (0, 1) for offset in (0, 1)]
    held = ledger.hold(fetched)
    assert [(item.state.partition, item.offset) for item in held] == [(0, 0), (0, 1)]
    assert ledger.records == 2, "the buffer counts only what is held"
    ledger.accepted(held)
    assert ledger.advance({}) == {("events", 0): 2}, "only the assigned partition commits"
