"""A JSON-only configuration, without an `avro:` section, runs against the real broker (issue 19, item 5), and the
user info of its Post API URL never reaches the log, `bridge started` included (item 10)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from urllib.parse import quote

from confluent_kafka import Producer

from bridge.ops.logs import REDACTED
from bridge.sandbox.server import Sandbox
from devtools.testkit.bridge_child import BridgeProcess, bridge_config
from devtools.testkit.kafka import TopicFactory, committed, end_offsets
from devtools.testkit.leaks import leaked
from devtools.testkit.waiting import wait_for

TOTAL = 60
URL_PASSWORD = "url-pa$$word+é"


async def test_a_json_only_configuration_delivers_without_avro(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic, dlq = new_topic(2), new_topic(1)
    now_s = int(time.time())
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    for seq in range(TOTAL):
        record = {"user": f"player-{seq}", "type": "level_up", "ts": now_s - seq}
        producer.produce(topic, value=json.dumps(record).encode(), partition=seq % 2)
    assert producer.flush(30) == 0

    group = f"g-{topic}"
    base = sandbox.url.replace("http://", f"http://api-user:{quote(URL_PASSWORD, safe='')}@")
    config = bridge_config(kafka_bootstrap, topic, base, group=group, kafka={"topics": [], "dead_letter_topic": dlq})
    del config["avro"]
    mapping = {"profile_id": "user", "event_name": "type", "event_timestamp": {"path": "ts", "unit": "s"}}
    config["routes"] = [{"topics": [topic], "method": "events", "format": "json", "mapping": mapping}]
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        await wait_for(lambda: len(sandbox.state.events) >= TOTAL, 60, "every JSON record accepted")
        ends = end_offsets(kafka_bootstrap, topic, 2)
        await wait_for(lambda: committed(kafka_bootstrap, group, topic, 2) == ends, 30, "committed == end")
        bridge.signal(signal.SIGTERM)
        assert await bridge.wait(30) == 0
    finally:
        bridge.kill()

    assert sorted(row["profile_id"] for row in sandbox.state.events) == sorted(f"player-{s}" for s in range(TOTAL))
    (started,) = [line for line in bridge.logs() if line.get("event") == "bridge started"]
    assert started["post_api"].startswith(f"http://{REDACTED}@127.0.0.1:")
    assert not leaked(URL_PASSWORD, bridge.log_path.read_text())
