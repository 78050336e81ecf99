"""`preview` where the first tries went wrong: a topic that ends in a transaction marker, one topic of several with
`--topic` (and `--partition` on it alone), a file far larger than the records asked for, header names that are not
UTF-8."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml
from confluent_kafka import Producer

from devtools.testkit.kafka import TopicFactory
from devtools.testkit.previews import game, preview
from devtools.testkit.raw_headers import produce_raw
from devtools.testkit.records import APP, KEY, ROOT

RECORDS = 12


def config_file(tmp_path: Path, bootstrap: str, *topics: str) -> Path:
    """JSON routes of events, one per topic: the game records, identified by a device id from a header."""
    mapping = {
        "event_name": "type",
        "event_timestamp": {"path": "ts", "unit": "us"},
        "appmetrica_device_id": {"header": "device"},
    }
    routes = [{"topics": [topic], "method": "events", "format": "json", "mapping": mapping} for topic in topics]
    config = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": "preview-reach"},
        "avro": {"format": "confluent", "schema_registry_url": "http://127.0.0.1:9"},
        "post_api": {"url": "http://127.0.0.1:9", "application_id": APP},
        "routes": routes,
    }
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def produce_in_transaction(bootstrap: str, topic: str, partitions: int) -> None:
    """RECORDS game records over the partitions in one transaction: each partition ends in its commit marker."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{topic}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for seq in range(RECORDS):
        headers: list[tuple[str, str | bytes | None]] = [("device", str(10_000 + seq).encode())]
        producer.produce(topic, json.dumps(game(seq)).encode(), partition=seq % partitions, headers=headers)
    producer.commit_transaction(30)


async def timed_preview(*args: str) -> tuple[int, str, str, float]:
    started = time.monotonic()
    code, out, err = await preview(*args)
    return code, out, err, time.monotonic() - started


async def test_preview_ends_at_a_partition_whose_last_offset_is_a_transaction_marker(
    tmp_path: Path, kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    topic = new_topic(2)
    produce_in_transaction(kafka_bootstrap, topic, 2)
    path = config_file(tmp_path, kafka_bootstrap, topic)
    wheres = (("--from-beginning",), ())
    answers = await asyncio.gather(
        *(timed_preview("--config", str(path), "--json", "--limit", "100", *where) for where in wheres)
    )
    for where, (code, out, err, seconds) in zip(wheres, answers, strict=True):
        assert code == 0, err
        rows = [json.loads(line)["row"] for line in out.splitlines()]
        assert len(rows) == RECORDS and all(row["appmetrica_device_id"] for row in rows)
        assert seconds < 8, f"{where}: {seconds:.1f} s; the fetch gives up only after 15 s"


async def test_topic_chooses_one_topic_and_partition_applies_to_it_alone(
    tmp_path: Path, kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    one, three = new_topic(1), new_topic(3)
    produce_in_transaction(kafka_bootstrap, one, 1)
    produce_in_transaction(kafka_bootstrap, three, 3)
    path = config_file(tmp_path, kafka_bootstrap, one, three)

    # Four independent previews of one configuration: all at once.
    chosen, one_topic, partition_alone, not_routed = await asyncio.gather(
        preview("--config", str(path), "--json", "--topic", three, "--partition", "2", "--offset", "1"),
        preview("--config", str(path), "--topic", one),
        preview("--config", str(path), "--partition", "2", "--offset", "0"),
        preview("--config", str(path), "--topic", "not-routed"),
    )
    code, out, err = chosen
    assert code == 0, err
    assert [json.loads(line)["source"] for line in out.splitlines()] == [f"{three}[2]@{n}" for n in (1, 2, 3)]
    code, out, err = one_topic
    assert code == 0, err
    assert out.splitlines()[0] == f"route {one} -> events: {RECORDS} records, {RECORDS} rows, 0 dead letters"
    assert three not in out

    code, out, err = partition_alone
    assert code == 2 and out == "" and f"--partition needs --topic: the configuration reads {one}, {three}" in err
    code, _, err = not_routed
    assert code == 1 and "no route reads topic 'not-routed'" in err


async def test_records_whose_header_names_are_not_utf8_are_previewed(
    tmp_path: Path, kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    topic = new_topic(1)
    bad = [(b"\xff\xfe", b"x"), (b"device", b"12345")]
    produce_raw(kafka_bootstrap, topic, [(None, json.dumps(game(seq)).encode(), bad) for seq in range(40)])
    path = config_file(tmp_path, kafka_bootstrap, topic)
    code, out, err = await preview("--config", str(path), "--json", "--limit", "40")
    assert code == 0, err
    shown = [json.loads(line) for line in out.splitlines()]
    # The header the mapping reads is found by its bytes beside the one the client cannot name.
    assert len(shown) == 40 and all(s.get("row", {}).get("appmetrica_device_id") == "12345" for s in shown), shown[0]


def peak_rss_mb(*args: str) -> tuple[int, float]:
    """Run `preview ARGS` in a child of a fresh interpreter: its exit code and its peak resident memory in MB."""
    script = (
        "import resource, subprocess, sys\n"
        "code = subprocess.run([sys.executable, '-m', 'bridge', 'preview', *sys.argv[1:]], "
        "stdout=subprocess.DEVNULL).returncode\n"
        "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
    )
    env = {"BRIDGE_POST_API_KEY": KEY, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT, env=env)
    code, peak = done.stdout.split()
    return int(code), float(peak)


async def test_input_reads_no_further_than_the_limit(tmp_path: Path) -> None:
    path = config_file(tmp_path, "127.0.0.1:1", "t")
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    line = json.dumps(game(1)) + "\n"
    small.write_text(line)
    with large.open("w") as file:
        for _ in range(120 * 2**20 // len(line)):
            file.write(line)
    (code, baseline), (large_code, peak) = await asyncio.gather(  # each in its own child: measured apart
        asyncio.to_thread(peak_rss_mb, "--config", str(path), "--input", str(small)),
        asyncio.to_thread(peak_rss_mb, "--config", str(path), "--input", str(large), "--limit", "1"),
    )
    assert code == 0 and large_code == 0
    assert peak < baseline + 20, f"{peak:.0f} MB for --limit 1 of a 120 MB file, {baseline:.0f} MB for one line"
