"""The dead-letter commands off the happy path: a letter that cannot be sent, a typo in `--reason`, Kafka that does
not answer, and SIGTERM or Ctrl-C meanwhile."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bridge.kafka.dead_letter_producer import (
    HEADER_DETAIL,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_TOPIC,
)
from devtools.kafka_local import free_ports
from devtools.testkit.bridge_child import bridge_command, bridge_config
from devtools.testkit.kafka import TopicFactory
from devtools.testkit.records import ROOT
from devtools.testkit.waiting import wait_for

GOOD = 20
BAD_AT = 7
"""The letter whose source partition does not exist sits among the good ones."""


def config_file(tmp_path: Path, bootstrap: str, topic: str, dlq: str) -> Path:
    config = bridge_config(bootstrap, topic, "http://127.0.0.1:9", group=f"g-{topic}", kafka={"dead_letter_topic": dlq})
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def command(*args: str, timeout_s: float = 90) -> tuple[int, str, str, float]:
    started = time.monotonic()
    async with bridge_command("dead-letters", *args) as process:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode(), time.monotonic() - started


def read_to_end(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    """Every committed record of `topic`, read until each partition's position reaches its end offset."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "end-reader", "isolation.level": "read_committed"})
    try:
        wanted = [TopicPartition(topic, p, 0) for p in range(partitions)]
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
        consumer.assign(wanted)
        records: list[Any] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            records += [m for m in consumer.consume(500, 0.5) if m.error() is None]
            positions = consumer.position([TopicPartition(topic, p) for p in range(partitions)])
            if all(tp.offset >= ends[tp.partition] for tp in positions if ends[tp.partition] > 0):
                return records
        raise AssertionError(f"{topic} not read to its end offsets {ends}")
    finally:
        consumer.close()


async def test_replay_sends_every_letter_it_can_and_names_the_one_it_cannot(
    kafka_bootstrap: str, new_topic: TopicFactory, tmp_path: Path
) -> None:
    source, dlq = new_topic(2), new_topic(1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for index in range(GOOD + 1):
        partition = 5 if index == BAD_AT else index % 2  # the source has partitions 0 and 1 only
        headers: list[tuple[str, str | bytes | None]] = [
            (HEADER_REASON, b"invalid"),
            (HEADER_DETAIL, b"no key for the application"),
            (HEADER_TOPIC, source.encode()),
            (HEADER_PARTITION, str(partition).encode()),
            (HEADER_OFFSET, str(100 + index).encode()),
        ]
        producer.produce(dlq, value=f"letter-{index}".encode(), key=str(index).encode(), headers=headers)
    assert producer.flush(30) == 0
    path = config_file(tmp_path, kafka_bootstrap, source, dlq)

    code, out, err, _ = await command("replay", "--config", str(path))
    assert code == 0, err
    assert out.count("would send  ") == GOOD and f"{dlq}:0:{BAD_AT}" in out, "the dry run names the bad one too"

    code, out, err, _ = await command("replay", "--config", str(path), "--send")
    assert code == 0, out + err
    assert f"cannot send  {dlq}:0:{BAD_AT} -> {source}[5]" in out
    assert f"partition 5 of {source!r} does not exist" in out
    assert f"sent {GOOD}" in out and "not sent (cannot be sent, named above) 1" in out
    replayed = read_to_end(kafka_bootstrap, source, 2)
    values = sorted(m.value().decode() for m in replayed)
    assert values == sorted(f"letter-{i}" for i in range(GOOD + 1) if i != BAD_AT), "every good letter, once"

    code, out, err, _ = await command("replay", "--config", str(path), "--send")
    assert code == 0 and "sent 0" in out, out + err
    assert len(read_to_end(kafka_bootstrap, source, 2)) == GOOD, "a second run sends nothing again"


async def test_replay_goes_on_past_a_letter_kafka_refuses_inside_a_transaction(
    kafka_bootstrap: str, kafka_admin: AdminClient, new_topic: TopicFactory, tmp_path: Path
) -> None:
    """A letter larger than its source topic now takes fails its whole transaction: the replay finds it and goes
    on with the others."""
    dlq = new_topic(1)
    source = f"small-{dlq}"
    small = NewTopic(source, num_partitions=1, replication_factor=1, config={"max.message.bytes": "2000"})
    kafka_admin.create_topics([small])[source].result(30)
    try:
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for index in range(GOOD + 1):
            headers: list[tuple[str, str | bytes | None]] = [
                (HEADER_REASON, b"rejected"),
                (HEADER_TOPIC, source.encode()),
                (HEADER_PARTITION, b"0"),
                (HEADER_OFFSET, str(index).encode()),
            ]
            value = b"x" * 10_000 if index == BAD_AT else f"letter-{index}".encode()
            producer.produce(dlq, value=value, headers=headers)
        assert producer.flush(30) == 0
        path = config_file(tmp_path, kafka_bootstrap, source, dlq)
        code, out, err, _ = await command("replay", "--config", str(path), "--send")
        assert code == 0, out + err
        assert f"cannot send  {dlq}:0:{BAD_AT} -> {source}[0]" in out and "too large" in out.lower(), out
        assert f"sent {GOOD}" in out and "not sent (cannot be sent, named above) 1" in out, out
        values = sorted(m.value().decode() for m in read_to_end(kafka_bootstrap, source, 1))
        assert values == sorted(f"letter-{i}" for i in range(GOOD + 1) if i != BAD_AT)
    finally:
        kafka_admin.delete_topics([source])[source].result(30)


async def test_a_reason_that_does_not_exist_is_refused_with_the_choices(tmp_path: Path) -> None:
    path = config_file(tmp_path, "127.0.0.1:1", "t", "dlq")
    answers = await asyncio.gather(
        *(command(name, "--config", str(path), "--reason", "invalidd") for name in ("show", "replay"))
    )
    for code, out, err, _ in answers:
        assert code == 2 and out == ""
        assert "invalid choice: 'invalidd'" in err
        assert "'decode', 'schema', 'invalid', 'expired', 'rejected'" in err


@pytest.fixture
async def unanswered() -> AsyncIterator[dict[str, int]]:
    """Ports where Kafka does not answer, by kind: `refused` (nothing listens) and `silent` (a listener takes
    connections and says nothing)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    (refused,) = free_ports(1)
    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield {"refused": refused, "silent": server.sockets[0].getsockname()[1]}
    server.close()
    for writer in held:
        writer.close()


COMMANDS = {"summary": ("summary",), "show": ("show",), "dry-run": ("replay",), "send": ("replay", "--send")}


async def test_with_kafka_unreachable_each_command_ends_promptly_with_one_clear_line(
    tmp_path: Path, unanswered: dict[str, int]
) -> None:
    """Every command against either kind of silence, all at once: each waits its own 10 s (the default, which no
    option shortens), so together they take about as long as one."""

    async def unreachable(kind: str, name: str) -> None:
        port = unanswered[kind]
        workdir = tmp_path / f"{kind}-{name}"
        workdir.mkdir()
        path = config_file(workdir, f"127.0.0.1:{port}", "t", "dlq")
        code, out, err, seconds = await command(*COMMANDS[name], "--config", str(path), timeout_s=40)
        assert code == 1, (kind, name, out, err)
        ignored = ("replaying", "dry")
        lines = [line for line in (out + err).splitlines() if line.strip() and not line.startswith(ignored)]
        assert len(lines) == 1, (kind, name, lines)
        assert lines[0].startswith(
            f"appmetrica-bridge dead-letters: Kafka at 127.0.0.1:{port} does not answer (waited 10 s)"
        ), (kind, name, lines)
        assert seconds < 20, (kind, name, seconds)

    async with asyncio.TaskGroup() as group:
        for kind in unanswered:
            for name in COMMANDS:
                group.create_task(unreachable(kind, name))


SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}


async def test_a_signal_ends_a_command_within_seconds_while_kafka_does_not_answer(
    tmp_path: Path, unanswered: dict[str, int]
) -> None:
    """`summary` and `replay --send`, each signal, each kind of silence: all at once."""

    async def interrupted(kind: str, name: str, signal_name: str) -> None:
        workdir = tmp_path / f"{kind}-{name}-{signal_name}"
        workdir.mkdir()
        path = config_file(workdir, f"127.0.0.1:{unanswered[kind]}", "t", "dlq")
        case = (kind, name, signal_name)
        async with bridge_command("dead-letters", *COMMANDS[name], "--config", str(path)) as process:
            await wait_for(lambda: catches_sigterm(process.pid), 30, "the command's own SIGTERM handler", 0.05)
            await asyncio.sleep(1)  # into its first wait on Kafka
            assert process.returncode is None, case
            process.send_signal(SIGNALS[signal_name])
            started = time.monotonic()
            out, err = await asyncio.wait_for(process.communicate(), 15)
            seconds = time.monotonic() - started
        assert process.returncode == 1 and seconds < 3, (case, process.returncode, seconds)
        assert err.decode().splitlines() == ["appmetrica-bridge dead-letters: interrupted"], (case, out, err)

    async with asyncio.TaskGroup() as group:
        for kind in unanswered:
            for name in ("summary", "send"):
                for signal_name in SIGNALS:
                    group.create_task(interrupted(kind, name, signal_name))


def catches_sigterm(pid: int) -> bool:
    """Whether the process has its own SIGTERM handler yet (before, the signal would kill it outright)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


async def test_a_command_stuck_in_a_call_that_does_not_return_still_ends_after_the_grace() -> None:
    """A Kafka call waiting on a broker gone silent mid-run cannot be cut short from Python: `time.sleep` stands in
    for it here, as it too goes on after the signal handler ran."""
    script = (
        "import sys, time\n"
        "from bridge.deadletters.stopping import Stopping\n"
        "Stopping(grace_s=1.0).install()\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), 30) == b"ready\n"
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, err = await asyncio.wait_for(process.communicate(), 10)
        seconds = time.monotonic() - started
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == 1 and 0.9 < seconds < 3, (process.returncode, seconds)
    assert err.decode().startswith("appmetrica-bridge dead-letters: interrupted; Kafka did not let the command stop")
