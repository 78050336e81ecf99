"""`appmetrica-bridge dead-letters` on the real broker: a dead-letter topic filled by poison, summarised, shown,
replayed after the cause is removed, every replayed event delivered once, also across a replay killed mid-way."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import yaml

from bridge.kafka.dead_letter_producer import HEADER_ORIGINAL_OFFSET, HEADER_REASON, HEADER_REPLAYED
from bridge.sandbox.server import Sandbox
from devtools.testkit.bridge_child import BridgeProcess, bridge_command, bridge_config
from devtools.testkit.configs import cli_in_process
from devtools.testkit.kafka import TopicFactory, committed, end_offsets, produce, read_to_end
from devtools.testkit.records import APP, event, raw_avro, seqs
from devtools.testkit.waiting import wait_for

OTHER_APP = 5151
OTHER_KEY = "other-app-key-9876543210"
OTHER_KEY_ENV = "TEST_OTHER_POST_API_KEY"
APP_KEY_ENV = "TEST_APP_POST_API_KEY"
VALID = 1000
UNKEYED = 3_000
"""Events of an application the first bridge has no key for: dead-lettered as invalid, replayed once keyed."""
REFUSED = 3
APP_KEY = "k3y/with+plus=and%pct-ü"
"""The application's key in this test: characters that percent-, plus- and JSON-encoding all change."""
SPELLINGS = [APP_KEY, quote(APP_KEY, safe=""), quote(APP_KEY), quote_plus(APP_KEY), json.dumps(APP_KEY)[1:-1]]
SECRET_HEADER = (
    "authorization",
    f"Bearer {APP_KEY}; {quote_plus(APP_KEY)}; https://api.example/?post_api_key={quote(APP_KEY, safe='')}".encode(),
)
PRINTED: list[str] = []
"""Everything the commands printed in this module, checked for the key in every spelling."""


async def cli(*args: str) -> tuple[int, str, str]:
    async with bridge_command("dead-letters", *args) as process:
        out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    PRINTED.append(out.decode() + err.decode())
    return process.returncode, out.decode(), err.decode()


def values() -> tuple[list[bytes | None], set[int]]:
    """The topic's records, and the seqs that must reach the sandbox once the causes are fixed."""
    now_ms = int(time.time() * 1000)
    records: list[bytes | None] = [raw_avro(event(seq, now_ms)) for seq in range(VALID)]
    unkeyed = range(10_000, 10_000 + UNKEYED)
    records += [raw_avro(event(seq, now_ms, application_id=OTHER_APP)) for seq in unkeyed]
    refused = range(30_000, 30_000 + REFUSED)
    records += [raw_avro(event(seq, now_ms, event_name="refuse-me")) for seq in refused]
    records += [
        b"this is not avro at all",
        None,
        raw_avro(event(40_000, now_ms, appmetrica_device_id="12345")),
    ]
    return records, {*range(VALID), *unkeyed, *refused}


@pytest.fixture
def keyed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Keys per application and no default key: records of an application without one are dead-lettered.
    monkeypatch.delenv("BRIDGE_POST_API_KEY", raising=False)
    monkeypatch.setenv(APP_KEY_ENV, APP_KEY)
    monkeypatch.setenv(OTHER_KEY_ENV, OTHER_KEY)


@pytest.mark.usefixtures("keyed_env")
async def test_dead_letters_are_summarised_shown_and_replayed_exactly_once_after_the_fix(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic, dlq = new_topic(4), new_topic(2)
    records, expected = values()
    produce(kafka_bootstrap, topic, records)
    produce(kafka_bootstrap, topic, [raw_avro(event(50_000))[:3]], headers=[SECRET_HEADER])
    sandbox.set_faults(refuse_event_names=frozenset({"refuse-me"}))
    sandbox.set_keys(post_api_key=APP_KEY)
    PRINTED.clear()
    group = f"g-{topic}"
    keys = {APP: {"api_key_env": APP_KEY_ENV}}
    config = bridge_config(
        kafka_bootstrap,
        topic,
        sandbox.url,
        group=group,
        kafka={"dead_letter_topic": dlq},
        post_api={"applications": keys},
    )
    poisoned = 2 + 1 + 1  # not Avro, a tombstone, the truncated record with the secret header, both identities
    total_dead = UNKEYED + REFUSED + poisoned
    first = BridgeProcess(config, tmp_path, name="first", key=None).start()
    try:
        await wait_for(lambda: len(sandbox.state.events) == VALID, 90, "the valid events")
        await wait_for(
            lambda: sum(end_offsets(kafka_bootstrap, dlq, 2).values()) == total_dead, 60, "every dead letter"
        )
        first.signal()
        assert await first.wait(30) == 0
    finally:
        first.kill()
    config_path = tmp_path / "first.yaml"

    # Every look at the letters reads them all and changes nothing: all at once.
    path = str(config_path)
    summarised, tabled, rejected, invalid, decode, dry_run = await asyncio.gather(
        cli("summary", "--config", path, "--json"),
        cli("summary", "--config", path),
        cli("show", "--config", path, "--reason", "rejected", "--limit", "2"),
        cli("show", "--config", path, "--reason", "invalid", "--json", "--limit", "20000"),
        cli("show", "--config", path, "--reason", "decode", "--json"),
        cli("replay", "--config", path, "--reason", "invalid"),
    )
    code, out, err = summarised
    assert code == 0, err
    summary = json.loads(out)
    assert summary["total"] == total_dead
    assert summary["by_reason"] == {"invalid": UNKEYED + 1, "decode": 3, "rejected": REFUSED}
    assert sum(s["count"] for s in summary["by_source"]) == total_dead
    assert {s["topic"] for s in summary["by_source"]} == {topic}
    assert sum(summary["by_day"].values()) == total_dead
    top = summary["top_details"][0]
    assert top["count"] == UNKEYED and str(OTHER_APP) in top["detail"], "the most frequent detail names the cause"
    code, table, _ = tabled
    assert code == 0 and "reason" in table and f"{UNKEYED + 1:,}" in table

    code, out, err = rejected
    assert code == 0, err
    assert out.count("  reason rejected\n") == 2 and "400" in out and '"event_name": "refuse-me"' in out
    assert HEADER_REASON in out, "headers are shown"
    assert out.count("  row now  {") == 2, "the row the bridge would make of it now"
    code, out, err = invalid
    rows = Counter("row" if s["row"] else s["problem"].split(":")[0] for s in map(json.loads, out.splitlines()))
    assert rows == {"row": UNKEYED, "breaks a rule now (invalid)": 1}, "the unkeyed ones are fine but for their key"
    code, out, err = decode
    shown = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(shown) == 3 and all(s["record"] is None and "not decoded" in s["problem"] for s in shown)
    assert "[REDACTED]" in out, "a secret in a header is redacted"

    code, out, err = dry_run
    assert code == 0, err
    assert offered(out) == UNKEYED + 1 and "nothing was sent" in out
    assert sum(end_offsets(kafka_bootstrap, topic).values()) == len(records) + 1, "a dry run sends nothing"

    # The causes removed: the sandbox takes the rows it refused, and the bridge has the other application's key.
    sandbox.set_faults(refuse_event_names=frozenset())
    sandbox.set_keys(apps={OTHER_APP: OTHER_KEY})
    keys[OTHER_APP] = {"api_key_env": OTHER_KEY_ENV}
    fixed = {**config, "post_api": {**config["post_api"], "applications": keys}}
    second = BridgeProcess(fixed, tmp_path, name="second", key=None).start()
    fixed_path = tmp_path / "second.yaml"
    try:
        sent_before_kill, code, _ = await replay_interrupted(fixed_path, signal.SIGKILL)
        assert code == -signal.SIGKILL and 0 < sent_before_kill < UNKEYED, "the first replay was killed mid-way"
        _, code, rest = await replay_interrupted(fixed_path, signal.SIGTERM)
        assert code == 1 and "interrupted" in rest, "SIGTERM stops the replay after its chunk, committed"
        sent_before_term = sent_count(rest)
        code, out, err = await cli("replay", "--config", str(fixed_path), "--reason", "invalid", "--send")
        assert code == 0, err
        resumed = sent_count(out)
        assert sent_before_kill + sent_before_term + resumed <= UNKEYED + 1, "nothing committed was sent again"
        code, out, err = await cli("replay", "--config", str(fixed_path), "--reason", "rejected", "--send")
        assert code == 0 and sent_count(out) == REFUSED, out + err
        # Each replayed chunk ends in a transaction marker, which the bridge commits past with the next record.
        after = range(60_000, 60_004)
        produce(kafka_bootstrap, topic, [raw_avro(event(seq)) for seq in after])
        expected |= set(after)
        await wait_for(lambda: len(sandbox.state.events) >= len(expected), 120, "every replayed event")
        await wait_for(
            lambda: sum(end_offsets(kafka_bootstrap, dlq, 2).values()) == total_dead + 1, 60, "the re-dead-letter"
        )
        ends = end_offsets(kafka_bootstrap, topic)
        await wait_for(lambda: committed(kafka_bootstrap, group, topic) == ends, 30, "commits to the end")
    finally:
        second.signal()
        await second.wait(30)
    delivered = Counter(seqs(sandbox.state.events))
    assert set(delivered) == expected, "every event delivered, the never-valid one not"
    assert max(delivered.values()) == 1, "nothing delivered twice"

    # The record that can never be valid came back: it is marked, and a replay leaves it alone without --force.
    again = [r for r in read_to_end(kafka_bootstrap, dlq) if HEADER_REPLAYED in dict(r.headers() or [])]
    assert len(again) == 1 and dict(again[0].headers() or [])[HEADER_ORIGINAL_OFFSET]
    # Replays one after the other (two must not run at once), the summary beside them: it only reads.
    summarised_task = asyncio.create_task(cli("summary", "--config", str(fixed_path), "--json"))
    code, out, err = await cli("replay", "--config", str(fixed_path), "--reason", "invalid", "--send")
    # Whether this replay or the resumed one met the marked letter depends on when the bridge wrote it; the next
    # replay, in a progress group of its own, reads it for certain.
    assert code == 0 and sent_count(out) == 0, out + err
    # Other filters, another progress group: what the earlier replays sent is not sent again.
    since = ("--reason", "invalid", "--since", "2000-01-01")
    code, out, err = await cli("replay", "--config", str(fixed_path), *since, "--send")
    assert code == 0 and sent_count(out) == 0, out + err
    assert f"earlier replay) {UNKEYED + 1:,}" in out and "--force sends them) 1" in out, out
    code, out, _ = await cli("replay", "--config", str(fixed_path), *since, "--force")
    assert offered(out) == 1, "--force offers the re-dead-lettered record again"
    code, out, _ = await summarised_task
    assert json.loads(out)["replayed_before"] == 1
    leaked = [spelling for spelling in SPELLINGS for text in PRINTED if spelling in text]
    assert len(PRINTED) > 10 and leaked == [], "the key is never printed, in any spelling"
    print(
        f"\nDEAD-LETTERS {total_dead} dead-lettered; replay SIGKILLed after {sent_before_kill} sent, SIGTERMed after "
        f"{sent_before_term} more, resumed with {resumed}; {len(expected)} delivered exactly once, "
        "1 re-dead-lettered and held back"
    )


async def replay_interrupted(config_path: Path, signum: int) -> tuple[int, int, str]:
    """Start a replay and send it `signum` after its first committed chunk: how many it said it had sent before
    the signal, its exit code and the rest of its output."""
    args = ("dead-letters", "replay", "--config", str(config_path), "--reason", "invalid", "--send")
    async with bridge_command(*args) as process:
        assert process.stdout is not None
        while True:
            line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
            assert line, "the replay ended before its first chunk"
            if line.startswith("sent "):
                process.send_signal(signum)
                rest, _ = await asyncio.wait_for(process.communicate(), 30)
                return int(line.split()[1].replace(",", "")), process.returncode or 0, rest.decode()


def test_without_a_dead_letter_topic_the_commands_name_the_key(tmp_path: Path) -> None:
    config = bridge_config(
        "127.0.0.1:1",
        "t",
        "http://127.0.0.1:1",
        group="g",
        post_api={"applications": {APP: {"api_key_env": APP_KEY_ENV}}},
    )
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    # Refused before any Kafka client exists: asked of the command in process.
    env: dict[str, str | None] = {"BRIDGE_POST_API_KEY": None, APP_KEY_ENV: APP_KEY}
    for command in ("summary", "show", "replay"):
        done = cli_in_process("dead-letters", command, "--config", str(path), env=env)
        assert done.returncode == 2 and "kafka.dead_letter_topic" in done.stderr, command
        done = cli_in_process("dead-letters", command, "--config", str(path), "--since", "yesterday", env=env)
        assert done.returncode == 2 and "--since: 'yesterday' is not an ISO 8601 date" in done.stderr, command


def sent_count(out: str) -> int:
    """What the closing line of a replay says it sent."""
    closing = next(line for line in out.splitlines() if line.startswith("read "))
    return int(closing.split("; ")[1].split()[-1].replace(",", ""))


def offered(out: str) -> int:
    """How many records a dry run lists."""
    return sum(line.startswith("would send  ") for line in out.splitlines())
