"""What an operator watches: /healthz, /readyz and /metrics of a bridge moving events."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from bridge.sandbox.server import Sandbox
from devtools.testkit.bridge_child import BridgeProcess, bridge_config
from devtools.testkit.kafka import TopicFactory, produce
from devtools.testkit.records import APP, KEY, event, raw_avro
from devtools.testkit.waiting import sample, wait_for


async def test_health_readiness_and_metrics_follow_the_work(
    kafka_bootstrap: str, new_topic: TopicFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    topic = new_topic(4)
    produce(kafka_bootstrap, topic, [raw_avro(event(seq)) for seq in range(2000)])
    config = bridge_config(kafka_bootstrap, topic, sandbox.url, group=f"g-{topic}", upload={"forbidden_retry_s": 1})
    bridge = BridgeProcess(config, tmp_path).start()
    try:
        await bridge.serving()
        assert (await bridge.get("/healthz"))[0] == 200
        await wait_for(lambda: len(sandbox.state.events) >= 2000, 60, "the first events delivered")

        async def ready() -> bool:
            return (await bridge.get("/readyz"))[0] == 200

        for _ in range(50):
            if await ready():
                break
            await asyncio.sleep(0.2)
        assert await ready()
        _, metrics = await bridge.get("/metrics")
        prefix = "appmetrica_bridge_"
        assert sample(metrics, prefix + "records_consumed_total", topic=topic) == 2000
        assert sample(metrics, prefix + "rows_uploaded_total", application=str(APP)) == 2000
        assert sample(metrics, prefix + "upload_requests_total", status="200") >= 2
        assert sample(metrics, prefix + "upload_latency_seconds_count") >= 2
        assert sample(metrics, prefix + "batch_rows_sum") == 2000
        assert sample(metrics, prefix + "last_successful_upload_timestamp_seconds", application=str(APP)) > 0
        for _ in range(50):
            _, metrics = await bridge.get("/metrics")
            if sample(metrics, prefix + "committed_offset", topic=topic) == 2000:
                break
            await asyncio.sleep(0.2)
        for partition in range(4):
            assert sample(metrics, prefix + "committed_offset", topic=topic, partition=str(partition)) == 500
        assert sample(metrics, prefix + "upload_concurrency_limit") == 4
        assert sample(metrics, prefix + "held_records") == 0

        sandbox.set_keys(post_api_key="rotated-elsewhere")
        produce(kafka_bootstrap, topic, [raw_avro(event(seq)) for seq in range(2000, 2100)])
        for _ in range(100):
            if not await ready():
                break
            await asyncio.sleep(0.2)
        status, body = await bridge.get("/readyz")
        assert status == 503 and "refuses the key" in body
        assert (await bridge.get("/healthz"))[0] == 200, "alive while not ready"
        _, metrics = await bridge.get("/metrics")
        assert sample(metrics, prefix + "upload_requests_total", status="403") >= 1
        assert sample(metrics, prefix + "application_key_refused", application=str(APP)) == 1
        assert KEY not in metrics

        sandbox.set_keys(post_api_key=KEY)
        await wait_for(lambda: len(sandbox.state.events) >= 2100, 60, "delivery after the key works again")
        for _ in range(50):
            if await ready():
                break
            await asyncio.sleep(0.2)
        assert await ready()
        bridge.signal(signal.SIGTERM)
        assert await bridge.wait(30) == 0
    finally:
        bridge.kill()
