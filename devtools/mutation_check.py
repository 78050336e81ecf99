"""Proves that the deterministic tests of the runtime and the flat Avro reader fail when their rule is broken.

Each mutant below is one small, realistic bug in the code that keeps a rule (a comparison flipped, a guard removed,
a call dropped, a setting mixed up). For each, the checkout is copied to a temporary directory, the bug is put in
the copy, and the tests named for it run there: they must fail (KILLED). A mutant whose tests pass (SURVIVED) is a
rule no test holds. The unmutated copy runs the same tests first and must pass, so a kill is the bug's doing.

    .venv/bin/python -m devtools.mutation_check [--list] [--timeout-s S] [NAME ...]

Exit 0 when the baseline passes and every mutant is killed, 1 otherwise, 2 for an unknown mutant name.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTEST = ("-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:xdist", "--tb=line")
"""One line of traceback: a mutant can fail a test with a traceback that CPython 3.11's parser crashes on when
pytest prints its source (an INTERNALERROR, exit 3, instead of the failure)."""
TIMEOUT_S = 60.0
"""A mutant's tests pass in seconds; one that makes a scenario wait for ever is stopped here and counts as killed."""
_NOT_COPIED = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache")

RUNTIME = "tests/test_runtime.py::"
LEDGER = "tests/test_ledger.py::"
POOL = "tests/test_transform_pool.py::"
FLAT = "tests/test_flat_reader.py::"

COMMIT_AFTER_200 = RUNTIME + "test_an_offset_commits_only_after_the_post_api_answered_200"
REVOKE_WHILE_WAITING = RUNTIME + "test_rows_of_a_partition_revoked_while_their_batch_waits_for_a_slot_are_never_sent"
EXPIRY_WHILE_HELD = RUNTIME + "test_rows_that_expire_while_their_key_is_refused_are_dead_lettered_not_sent"
DRAIN_DEADLINE = RUNTIME + "test_the_drain_ends_at_its_deadline_when_the_post_api_never_answers"
HALTING = RUNTIME + "test_without_a_dead_letter_topic_a_poison_record_halts_its_partition_only"
PAUSE_RESUME = RUNTIME + "test_partitions_pause_at_the_buffer_limit_and_resume_below_it"
LATE_ANSWER = RUNTIME + "test_an_answer_that_arrives_after_its_partition_was_revoked_never_commits_there"
MARKER = RUNTIME + "test_the_position_commits_past_a_transaction_marker_so_the_lag_reaches_zero"
PROBE_INTERVAL = RUNTIME + "test_a_refused_key_is_probed_once_per_interval_and_delivery_resumes_within_it"
EMPTIED_BATCHES = RUNTIME + "test_batches_emptied_by_a_rebalance_while_the_key_is_refused_end_at_once"
OUTAGE_WINDOW = RUNTIME + "test_after_an_outage_what_a_crash_would_send_again_stays_within_the_window"
STALLED = RUNTIME + "test_a_partition_held_by_a_refused_key_is_reported_stalled_with_its_reason_until_it_moves"
DRAIN_BACKLOG = RUNTIME + "test_a_drain_delivers_a_backlog_larger_than_the_send_window"
REFUSED_COMMIT = RUNTIME + "test_a_commit_the_broker_refused_is_made_again_while_the_partition_stays_idle"
PROBE_UNANSWERED = RUNTIME + "test_a_probe_answered_429_or_5xx_leaves_the_key_refused_and_its_uploads_waiting"
FAILED_DELIVERY = (
    RUNTIME + "test_a_delivery_that_fails_in_a_way_no_retry_mends_fails_the_bridge_and_commits_nothing_past_it"
)


@dataclass(frozen=True)
class Mutant:
    name: str
    rule: str
    """The rule the bug breaks, in words."""
    path: str
    """The file under `bridge/` the bug goes in, relative to the checkout."""
    snippet: str
    """Source text that must occur exactly once in `path`."""
    replacement: str
    tests: tuple[str, ...]
    """Pytest node ids of which at least one must fail with the bug in."""


MUTANTS: tuple[Mutant, ...] = (
    # -- commit only after a 200 ----------------------------------------------------------------------------------
    Mutant(
        "done_when_sent",
        "an offset commits only after the Post API answered 200: the ledger counts rows as done when they are sent",
        "bridge/runtime/ledger.py",
        "                item.state.send(item.offset)\n",
        "                item.state.done(item.offset)\n",
        (COMMIT_AFTER_200,),
    ),
    Mutant(
        "accepted_before_answer",
        "an offset commits only after the Post API answered 200: delivery reports a batch accepted before sending it",
        "bridge/runtime/delivery.py",
        "            answer = await self._send(batch)\n",
        "            self._ledger.accepted(batch.refs)\n            answer = await self._send(batch)\n",
        (COMMIT_AFTER_200,),
    ),
    # -- the ledger's commit rule ----------------------------------------------------------------------------------
    Mutant(
        "refused_commit_unpaced",
        "a refused commit is asked again at a pace: every turn asks again at once",
        "bridge/runtime/loop.py",
        "            self._commit_after = self._clock.now() + COMMIT_RETRY_S\n",
        "            pass\n",
        (REFUSED_COMMIT,),
    ),
    Mutant(
        "failed_delivery_ignored",
        "a delivery no retry mends fails the bridge: the loop turns on past a failed delivery task",
        "bridge/runtime/loop.py",
        "        p, clock = self.parts, self._clock\n        if p.deliveries.failed is not None:\n"
        "            raise p.deliveries.failed\n",
        "        p, clock = self.parts, self._clock\n",
        (FAILED_DELIVERY,),
    ),
    Mutant(
        "unassigned_records_held",
        "records of a partition not assigned here are never held: the ledger holds them under a partition of its own",
        "bridge/runtime/ledger.py",
        "            if state is None:\n                continue\n",
        "            if state is None:\n                state = PartitionOffsets(record.topic(), record.partition())\n",
        (LEDGER + "test_records_of_a_partition_not_assigned_here_are_never_held_or_committed",),
    ),
    Mutant(
        "committed_when_handed_out",
        "a refused commit is made again: the ledger counts a position as committed when it hands it out",
        "bridge/runtime/ledger.py",
        "            return None\n        return moved\n",
        "            return None\n        self._committed = moved\n        return moved\n",
        (REFUSED_COMMIT,),
    ),
    Mutant(
        "prefix_from_the_newest",
        "only the contiguous done prefix commits: the prefix is taken while the newest record held is done",
        "bridge/runtime/ledger.py",
        "while pending and pending[0] in done:",
        "while pending and pending[-1] in done:",
        (LEDGER + "test_out_of_order_completion_commits_only_the_contiguous_prefix",),
    ),
    Mutant(
        "commit_the_last_done",
        "the position committed is the last done offset + 1: it is the last done offset",
        "bridge/runtime/ledger.py",
        "moved = None if self._through is None else self._through + 1",
        "moved = None if self._through is None else self._through",
        (LEDGER + "test_gaps_in_offsets_commit_past_the_last_given_offset",),
    ),
    Mutant(
        "stretch_held_twice",
        "a stretch fetched again is not held twice: the last offset held is taken again",
        "bridge/runtime/ledger.py",
        "if self._pending and offset <= self._pending[-1]:",
        "if self._pending and offset < self._pending[-1]:",
        (LEDGER + "test_a_stretch_fetched_again_is_not_held_twice",),
    ),
    Mutant(
        "truncate_keeps_the_first",
        "records let go of untaken never commit: truncating keeps the first of them",
        "bridge/runtime/ledger.py",
        "while pending and pending[-1] >= offset:",
        "while pending and pending[-1] > offset:",
        (LEDGER + "test_truncate_lets_go_of_the_newest_records",),
    ),
    # -- a late answer after a revoke ------------------------------------------------------------------------------
    Mutant(
        "retired_counts_late_answers",
        "a late answer after a revoke commits nothing: a retired partition still counts answers as done",
        "bridge/runtime/ledger.py",
        "        if not self.retired:\n            self._done.add(offset)\n",
        "        self._done.add(offset)\n",
        (LEDGER + "test_a_retired_partition_ignores_late_answers",),
    ),
    Mutant(
        "revoke_does_not_retire",
        "a late answer after a revoke commits nothing: the revoke forgets to retire the partition",
        "bridge/runtime/loop.py",
        "        unfinished = sum(not s.idle for s in awaited)\n        p.ledger.retire(keys)\n",
        "        unfinished = sum(not s.idle for s in awaited)\n",
        (LATE_ANSWER,),
    ),
    # -- a revoke while batches wait behind max_in_flight ----------------------------------------------------------
    Mutant(
        "revoked_rows_stay",
        "rows of a partition revoked while their batch waits are not sent: nothing leaves the batch before the wire",
        "bridge/runtime/delivery.py",
        "        self._withdraw(batch)\n        now = self._clock.wall()\n",
        "        now = self._clock.wall()\n",
        (REVOKE_WHILE_WAITING,),
    ),
    Mutant(
        "revoked_rows_tested_by_halt",
        "rows of a partition revoked while their batch waits are not sent: the batch looks at the wrong flag",
        "bridge/runtime/delivery.py",
        "revoked = batch.remove({p for p, item in enumerate(batch.refs) if item.state.retired})",
        "revoked = batch.remove({p for p, item in enumerate(batch.refs) if item.state.halted})",
        (REVOKE_WHILE_WAITING,),
    ),
    Mutant(
        "removed_rows_keep_their_records",
        "rows that leave a batch take their records with them: the batch keeps the records of removed rows",
        "bridge/runtime/batching.py",
        "        self.refs = [ref for p, ref in enumerate(self.refs) if p not in positions]\n",
        "",
        (REVOKE_WHILE_WAITING,),
    ),
    # -- expiry while held -----------------------------------------------------------------------------------------
    Mutant(
        "expiry_checked_in_milliseconds",
        "rows that expire while held are dead-lettered, not sent: the re-check interval is read as milliseconds",
        "bridge/runtime/delivery.py",
        "REJUDGE_AFTER_S = 5.0\n",
        "REJUDGE_AFTER_S = 5000.0\n",
        (EXPIRY_WHILE_HELD,),
    ),
    # -- the drain deadline ----------------------------------------------------------------------------------------
    Mutant(
        "drain_on_the_revoke_deadline",
        "the drain ends at shutdown.drain_timeout_s: it ends at kafka.revoke_timeout_s",
        "bridge/runtime/loop.py",
        "deadline = self._drain_deadline = clock.now() + self._config.shutdown.drain_timeout_s",
        "deadline = self._drain_deadline = clock.now() + self._config.kafka.revoke_timeout_s",
        (DRAIN_DEADLINE,),
    ),
    Mutant(
        "drain_waits_for_every_delivery",
        "the drain ends at its deadline: it waits for every delivery",
        "bridge/runtime/loop.py",
        "        while len(p.deliveries) and (remaining := deadline - clock.now()) > 0:\n"
        "            await p.deliveries.wait(min(COMMIT_INTERVAL_S, remaining))\n",
        "        while len(p.deliveries):\n            await p.deliveries.wait(COMMIT_INTERVAL_S)\n",
        (DRAIN_DEADLINE,),
    ),
    # -- halting without a dead-letter topic -----------------------------------------------------------------------
    Mutant(
        "poison_skipped_without_dead_letters",
        "without a dead-letter topic a poison record halts its partition: it is skipped as if dead-lettered",
        "bridge/runtime/delivery.py",
        "            self._halt(items, method, reason, detail)\n            return\n",
        "            self._ledger.dead_lettered(items)\n            return\n",
        (HALTING,),
    ),
    Mutant(
        "halt_not_recorded",
        "a halted partition stops (paused, nothing after the poison record commits): the ledger forgets the halt",
        "bridge/runtime/ledger.py",
        "                item.state.halted = True\n",
        "",
        (HALTING,),
    ),
    Mutant(
        "halted_not_paused",
        "a halted partition is paused: only back-pressure pauses",
        "bridge/runtime/loop.py",
        "want = {key for key, state in partitions.items() if state.halted}",
        "want: set[PartitionKey] = set()",
        (HALTING,),
    ),
    # -- pause and resume thresholds -------------------------------------------------------------------------------
    Mutant(
        "pause_past_the_limit",
        "partitions pause at buffer.max_records: they pause only past it",
        "bridge/runtime/loop.py",
        "full = held_records >= limits.max_records or",
        "full = held_records > limits.max_records or",
        (PAUSE_RESUME,),
    ),
    Mutant(
        "resume_without_hysteresis",
        "paused partitions resume below RESUME_FRACTION of the limits: they resume just below the limits",
        "bridge/runtime/loop.py",
        "low = held_records < limits.max_records * RESUME_FRACTION and held_bytes < limits.max_bytes * RESUME_FRACTION",
        "low = held_records < limits.max_records and held_bytes < limits.max_bytes",
        (PAUSE_RESUME,),
    ),
    Mutant(
        "fetch_past_the_room",
        "the bridge never holds more than buffer.max_records: a fetch asks for a full fetch whatever room is left",
        "bridge/runtime/loop.py",
        "records = await p.consumer.fetch(max(1, min(FETCH_MAX, room)), FETCH_TIMEOUT_S)",
        "records = await p.consumer.fetch(FETCH_MAX, FETCH_TIMEOUT_S)",
        (PAUSE_RESUME,),
    ),
    # -- the position past a transaction marker --------------------------------------------------------------------
    Mutant(
        "idle_position_not_committed",
        "an idle partition commits the consumer's position (past a transaction marker): the watch does not",
        "bridge/runtime/loop.py",
        "        await self._commit(await self._idle_positions())\n        ends =",
        "        ends =",
        (MARKER,),
    ),
    Mutant(
        "position_never_taken",
        "once nothing is held the consumer's position commits: only the done prefix ever commits",
        "bridge/runtime/ledger.py",
        "            moved = position\n",
        "            pass\n",
        (MARKER,),
    ),
    # -- a refused key ---------------------------------------------------------------------------------------------
    Mutant(
        "probes_at_once",
        "a refused key is probed once per interval: every waiting delivery probes when the interval is up",
        "bridge/postapi/uploader.py",
        "if not refusal.probing and now >= refusal.next_probe and refusal.waiting[0] is turn:",
        "if now >= refusal.next_probe and refusal.waiting[0] is turn:",
        (PROBE_INTERVAL,),
    ),
    Mutant(
        "probe_time_not_renewed",
        "a refused key is probed once per interval: a probe refused again does not set the next probe's time",
        "bridge/postapi/uploader.py",
        "        if refusal is not None:\n            refusal.next_probe = next_probe\n            return\n",
        "        if refusal is not None:\n            return\n",
        (PROBE_INTERVAL,),
    ),
    Mutant(
        "emptied_batch_waits_for_the_key",
        "a batch emptied by a rebalance while the key is refused ends at once: it waits for the key like the rest",
        "bridge/postapi/uploader.py",
        "                if payload.withdrawn():\n                    return None\n",
        "",
        (EMPTIED_BATCHES,),
    ),
    Mutant(
        "emptied_batch_waits_for_the_window",
        "a batch emptied by a rebalance ends at once: it waits for the send window, which a refused key keeps full",
        "bridge/runtime/ledger.py",
        "if self.unsettled + sum(not item.state.retired for item in items) <= window:",
        "if self.unsettled + len(items) <= window:",
        (EMPTIED_BATCHES,),
    ),
    # -- the send window -------------------------------------------------------------------------------------------
    Mutant(
        "window_ignores_the_batch",
        "rows sent and not committable stay within the window: a batch goes when the window is not yet full",
        "bridge/runtime/ledger.py",
        "if self.unsettled + sum(not item.state.retired for item in items) <= window:",
        "if self.unsettled <= window:",
        (OUTAGE_WINDOW,),
    ),
    Mutant(
        "overshoot_unbounded",
        "one batch at a time may go past the window: every batch holding a partition's oldest record may",
        "bridge/runtime/ledger.py",
        "if not self._overshoot and any(state.is_head(offset) for state, offset in firsts.values()):",
        "if any(state.is_head(offset) for state, offset in firsts.values()):",
        (OUTAGE_WINDOW,),
    ),
    Mutant(
        "window_a_batch_too_wide",
        "the window is max_in_flight - 1 batches besides the one past it: it is max_in_flight batches",
        "bridge/runtime/assembly.py",
        "window = (config.upload.max_in_flight - 1) * config.batch.max_rows",
        "window = config.upload.max_in_flight * config.batch.max_rows",
        (OUTAGE_WINDOW,),
    ),
    # -- stalled reporting -----------------------------------------------------------------------------------------
    Mutant(
        "key_refusal_not_a_reason",
        "a stalled partition is reported with its reason: a refused key is not recognised as one",
        "bridge/runtime/stalls.py",
        '        if self._uploader.refused_applications:\n            return "key_refused"\n',
        "",
        (STALLED,),
    ),
    Mutant(
        "stall_never_cleared",
        "a stalled partition is reported until it moves: its stall series stays once it moves",
        "bridge/runtime/stalls.py",
        '            if reason == "none":\n                self._metrics.moving(*key)\n            else:\n'
        "                self._metrics.set_stalled(key[0], key[1], still, reason)\n",
        '            if reason != "none":\n                self._metrics.set_stalled(key[0], key[1], still, reason)\n',
        (STALLED,),
    ),
    Mutant(
        "idle_partition_stalls",
        "a partition stalls only while records of it wait: an idle one is reported stalled",
        "bridge/runtime/stalls.py",
        "if state.committed != watched.committed or state.held == 0:",
        "if state.committed != watched.committed:",
        (STALLED,),
    ),
    # -- the drain of a backlog larger than the window -------------------------------------------------------------
    Mutant(
        "drain_commits_only_at_the_end",
        "the drain commits as batches finish, so the window keeps moving: it commits once, at the end",
        "bridge/runtime/loop.py",
        "            await self._commit_within({}, min(COMMIT_TIMEOUT_S, max(0.0, deadline - clock.now())))\n",
        "",
        (DRAIN_BACKLOG,),
    ),
    Mutant(
        "deliveries_not_tracked",
        "the drain waits for the deliveries under way: a delivery task is not counted as under way",
        "bridge/runtime/deliveries.py",
        "        self._tasks.add(task)\n",
        "",
        (DRAIN_BACKLOG,),
    ),
    Mutant(
        "open_batches_not_flushed",
        "the drain sends the open batches: they stay open",
        "bridge/runtime/batching.py",
        "        batches = list(self._open.values())\n        self._open.clear()\n",
        "        batches: list[Batch] = []\n",
        (DRAIN_BACKLOG,),
    ),
    Mutant(
        "probe_429_accepts_key",
        "a probe the API answers 429 or 5xx says nothing of the key: any answer but 403 takes it as working again",
        "bridge/postapi/uploader.py",
        "            if status in (200, 400, 413):\n",
        "            if status not in (401, 403):\n",
        (PROBE_UNANSWERED,),
    ),
    Mutant(
        "probe_429_unpaced",
        "a key whose probe went unanswered is probed again an interval on: at once, by each waiting batch in turn",
        "bridge/postapi/uploader.py",
        "                refusal.next_probe = self._clock.now() + self._config.forbidden_retry_s\n",
        "                pass\n",
        (PROBE_UNANSWERED,),
    ),
    # -- the transform pool ----------------------------------------------------------------------------------------
    Mutant(
        "failed_chunk_forgotten",
        "a chunk a dead worker never transformed is let go of: the pool forgets it instead",
        "bridge/runtime/transforms.py",
        "                sent.appendleft((chunk, future, 0.0))\n",
        "",
        (POOL + "test_a_worker_dying_mid_chunk_fails_the_pool_and_lets_go_of_what_it_never_transformed",),
    ),
    Mutant(
        "queue_one_chunk_too_many",
        "the owner loop stops fetching once the workers have enough queued: one chunk more",
        "bridge/runtime/transforms.py",
        "len(self._sent) >= self._workers * QUEUED_PER_WORKER",
        "len(self._sent) > self._workers * QUEUED_PER_WORKER",
        (POOL + "test_the_owner_loop_stops_fetching_while_the_workers_have_enough_queued",),
    ),
    Mutant(
        "wait_for_any_chunk",
        "the owner loop sleeps until the oldest chunk is back: any chunk back wakes it",
        "bridge/runtime/transforms.py",
        "if self._sent[0][1].done() or",
        "if any(future.done() for _, future, _ in self._sent) or",
        (POOL + "test_waiting_for_results_sleeps_until_the_oldest_chunk_is_back",),
    ),
    # -- the flat reader: whatever it reads, fastavro reads alike --------------------------------------------------
    Mutant(
        "negative_length_read",
        "the flat reader reads only what fastavro reads: a negative length steps back into the value",
        "bridge/decoding/flat_reader.py",
        '        f"{indent}    if n < 0: raise ValueError",\n',
        "",
        (FLAT + "test_a_negative_length_never_reads_backwards",),
    ),
    Mutant(
        "varint_past_64_bits",
        "the flat reader reads only what fastavro reads: a varint past 64 bits is read whole",
        "bridge/decoding/flat_reader.py",
        '        f"{indent}        if shift == 63 and c > 1: raise ValueError",\n',
        "",
        (FLAT + "test_what_it_cannot_read_exactly_is_left_to_fastavro",),
    ),
    Mutant(
        "boolean_as_one_only",
        "the flat reader reads only what fastavro reads: any byte but 0 is true",
        "bridge/decoding/flat_reader.py",
        "= b[at] != 0; at += 1",
        "= b[at] == 1; at += 1",
        (FLAT + "test_any_boolean_byte_but_zero_is_true_as_fastavro_reads_it",),
    ),
    Mutant(
        "values_in_writer_order",
        "a record's values reach the transform in the contract's order: a writer's own order is kept",
        "bridge/decoding/avro.py",
        "    return tuple(map(record.__getitem__, reader.names))\n",
        "    return tuple(record.values())\n",
        (FLAT + "test_values_come_in_the_contracts_order_whatever_the_writers_order",),
    ),
    Mutant(
        "negative_array_count_read",
        "the flat reader reads only what fastavro reads: a block counted negative is read as if it had no size",
        "bridge/decoding/flat_reader.py",
        'if k < 0 or k > len(b): raise ValueError"',
        'if k > len(b): raise ValueError"',
        (FLAT + "test_arrays_it_cannot_read_exactly_are_left_to_fastavro",),
    ),
    Mutant(
        "leftover_bytes_read",
        "the flat reader reads only what fastavro reads: a value with bytes after the record is read",
        "bridge/decoding/flat_reader.py",
        " if at == len(b) else None",
        "",
        (FLAT + "test_what_it_cannot_read_exactly_is_left_to_fastavro",),
    ),
)


class MutantError(Exception):
    """A mutant cannot be applied: its snippet is not in its file exactly once (the table is out of date)."""


def _mutated(mutant: Mutant, root: Path) -> str:
    """The mutant's file under `root` with the bug in; MutantError when its snippet is not there exactly once."""
    path = root / mutant.path
    if not path.is_file():
        raise MutantError(f"{mutant.name}: {mutant.path} does not exist")
    source = path.read_text()
    found = source.count(mutant.snippet)
    if found != 1:
        raise MutantError(f"{mutant.name}: its snippet occurs {found} times in {mutant.path}, not once")
    return source.replace(mutant.snippet, mutant.replacement)


def apply(mutant: Mutant, root: Path) -> None:
    """Put the mutant's bug into the tree at `root`."""
    (root / mutant.path).write_text(_mutated(mutant, root))


def table_problems(mutants: Iterable[Mutant], root: Path = ROOT) -> list[str]:
    """What is wrong with the table against the source at `root`: snippets not there exactly once, a mutant that
    changes nothing, test node ids that name no test, names used twice."""
    problems, names = [], set()
    for mutant in mutants:
        if mutant.name in names:
            problems.append(f"{mutant.name}: the name is used twice")
        names.add(mutant.name)
        if not mutant.path.startswith("bridge/"):
            problems.append(f"{mutant.name}: {mutant.path} is not under bridge/")
        if mutant.snippet == mutant.replacement:
            problems.append(f"{mutant.name}: the replacement is the snippet")
        try:
            _mutated(mutant, root)
        except MutantError as exc:
            problems.append(str(exc))
        if not mutant.tests:
            problems.append(f"{mutant.name}: no test is named")
        for test in mutant.tests:
            module, _, function = test.partition("::")
            file = root / module
            if not file.is_file() or f"def {function}(" not in file.read_text():
                problems.append(f"{mutant.name}: {test} names no test")
    return problems


class Outcome(Enum):
    PASSED = "PASSED"
    FAILED = "FAILED"
    KILLED = "KILLED"
    SURVIVED = "SURVIVED"
    ERROR = "ERROR"


@dataclass(frozen=True)
class Result:
    name: str
    outcome: Outcome
    seconds: float
    detail: str


def copy_checkout(root: Path, into: Path) -> Path:
    """The checkout without its virtual environment, git directory and caches."""
    tree = into / "tree"
    shutil.copytree(root, tree, ignore=_NOT_COPIED, symlinks=True)
    return tree


def python_of(root: Path) -> str:
    venv = root / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def run_tests(tree: Path, tests: Sequence[str], python: str, timeout_s: float) -> tuple[int | None, str]:
    """Pytest's exit status on `tests` in `tree` (None when it ran out of time) and its output. The tree's own
    `bridge` is imported, not the checkout's: the check fails loudly otherwise."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "400"}
    where = subprocess.run(
        [python, "-c", "import bridge; print(bridge.__file__)"], cwd=tree, env=env, capture_output=True, text=True
    )
    if not where.stdout.startswith(str(tree)):
        raise RuntimeError(f"the copy imports bridge from {where.stdout.strip() or where.stderr.strip()}, not {tree}")
    # A session of its own, so a timeout ends pytest's worker processes too.
    with subprocess.Popen(
        [python, *PYTEST, *tests],
        cwd=tree,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as child:
        try:
            output, _ = child.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            output, _ = child.communicate()
            return None, output
    return child.returncode, output


def first_failure(output: str) -> str:
    """The first failed test and its error, from pytest's output; else its last line."""
    lines = [line for line in output.splitlines() if line.strip()]
    failed = [line.split(" - ")[0] for line in lines if re.match(r"(FAILED|ERROR) \S+::", line)]
    errors = [line[4:] for line in lines if line.startswith("E   ")]
    if failed:
        return f"{failed[0]}: {errors[0]}" if errors else failed[0]
    return lines[-1] if lines else ""


def check(mutant: Mutant | None, tests: Sequence[str], root: Path, python: str, timeout_s: float) -> Result:
    """Run `tests` on a copy of `root` with `mutant` applied (None: the baseline); MutantError when it cannot be."""
    name = mutant.name if mutant else "baseline"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutation-check-") as scratch:
        tree = copy_checkout(root, Path(scratch))
        if mutant is not None:
            apply(mutant, tree)
        status, output = run_tests(tree, tests, python, timeout_s)
    seconds = time.monotonic() - started
    if status is None:
        outcome = Outcome.FAILED if mutant is None else Outcome.KILLED
        return Result(name, outcome, seconds, f"timed out after {timeout_s:g} s")
    if status == 0:
        return Result(name, Outcome.PASSED if mutant is None else Outcome.SURVIVED, seconds, "the tests passed")
    if status == 1:
        return Result(name, Outcome.FAILED if mutant is None else Outcome.KILLED, seconds, first_failure(output))
    # 2 interrupted (a collection error), 4 usage, 5 no tests: nothing was proved either way.
    return Result(name, Outcome.ERROR, seconds, f"pytest exited {status}: {first_failure(output)}")


def summary(results: Sequence[Result], mutants: dict[str, Mutant]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'mutant':<{width}}  {'file':<28}  {'result':<8}  {'seconds':>7}  detail"]
    for r in results:
        file = mutants[r.name].path.removeprefix("bridge/") if r.name in mutants else "-"
        lines.append(f"{r.name:<{width}}  {file:<28}  {r.outcome.value:<8}  {r.seconds:>7.1f}  {r.detail[:110]}")
    return "\n".join(lines)


def run(mutants: Sequence[Mutant], root: Path, timeout_s: float) -> int:
    problems = table_problems(mutants, root)
    if problems:
        print("the mutant table is out of date with the source:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    python = python_of(root)
    tests = list(dict.fromkeys(test for mutant in mutants for test in mutant.tests))
    print(f"baseline: {len(tests)} tests on an unmutated copy", flush=True)
    baseline = check(None, tests, root, python, timeout_s * len(tests))
    print(f"baseline  {baseline.outcome.value}  {baseline.seconds:.1f} s  {baseline.detail}", flush=True)
    results = [baseline]
    if baseline.outcome is Outcome.PASSED:
        for number, mutant in enumerate(mutants, 1):
            result = check(mutant, mutant.tests, root, python, timeout_s)
            results.append(result)
            print(
                f"[{number:>2}/{len(mutants)}] {result.outcome.value:<8} {mutant.name} "
                f"({mutant.path}, {result.seconds:.1f} s): {result.detail}",
                flush=True,
            )
    print()
    print(summary(results, {m.name: m for m in mutants}))
    killed = sum(r.outcome is Outcome.KILLED for r in results)
    print(f"\n{killed} of {len(mutants)} mutants killed", flush=True)
    good = baseline.outcome is Outcome.PASSED and killed == len(mutants)
    return 0 if good else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.mutation_check", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="mutants to run (default: every one)")
    parser.add_argument("--list", action="store_true", help="print the mutants and the tests that must kill them")
    parser.add_argument("--timeout-s", type=float, default=TIMEOUT_S, help="per mutant (default %(default)s)")
    args = parser.parse_args(argv)
    by_name = {m.name: m for m in MUTANTS}
    unknown = [name for name in args.names if name not in by_name]
    if unknown:
        print(f"no such mutant: {', '.join(unknown)} (--list names them)", file=sys.stderr)
        return 2
    chosen = [by_name[name] for name in args.names] or list(MUTANTS)
    if args.list:
        for mutant in chosen:
            print(f"{mutant.name}  ({mutant.path})\n  breaks: {mutant.rule}")
            for test in mutant.tests:
                print(f"  killed by: {test}")
        return 0
    return run(chosen, ROOT, args.timeout_s)


if __name__ == "__main__":
    sys.exit(main())
