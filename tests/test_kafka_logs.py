"""A repeated Kafka condition is a few JSON lines however long it lasts; librdkafka's own lines are among them."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from typing import Any

import pytest
import structlog
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient

from bridge.kafka import logs as kafka_logs
from bridge.kafka.logs import EVERY_S, QUIET_S, Repeats
from bridge.ops import logs
from devtools.testkit.bridge_child import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def output(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The bridge's log lines as it writes them (JSON on stdout), and what reached the process's stderr."""
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(kafka_logs, "REPEATS", Repeats())  # no condition left lasting by another test
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure("info")

    def lines() -> tuple[list[dict[str, Any]], str]:
        written = stdout.getvalue()
        stdout.seek(0)
        stdout.truncate()
        return [json.loads(line) for line in written.splitlines()], capfd.readouterr().err

    yield lines
    # The next test's logs go where they went before this one, not to this test's buffer.
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


def test_a_condition_is_one_line_when_it_starts_a_count_while_it_lasts_and_one_when_it_ends(output: Any) -> None:
    clock = Clock()
    repeats = Repeats(clock=clock)
    for second in range(int(EVERY_S * 2) + 1):
        clock.now = 1000.0 + second
        for _ in range(20):  # twenty a second, as librdkafka's reconnects and error callbacks come
            repeats.seen("kafka error", "_TRANSPORT", error="Connection refused")
    repeats.ended("kafka error")
    lines, _ = output()
    assert [line["event"] for line in lines] == [
        "kafka error",
        "condition persists",
        "condition persists",
        "condition over",
    ], lines
    assert lines[0]["error"] == "Connection refused" and lines[0]["level"] == "warning"
    # Each count covers the occurrences since the line before it; the end counts them all.
    assert [lines[1]["occurrences"], lines[2]["occurrences"]] == [20 * int(EVERY_S)] * 2
    assert lines[3]["occurrences"] == 20 * (int(EVERY_S * 2) + 1)
    assert lines[3]["lasted_s"] == EVERY_S * 2


def test_kinds_of_a_condition_start_apart_and_end_together(output: Any) -> None:
    repeats = Repeats(clock=Clock())
    for _ in range(5):
        repeats.seen("kafka error", "_TRANSPORT", error="refused")
        repeats.seen("kafka error", "_ALL_BROKERS_DOWN", error="1/1 brokers are down")
    repeats.ended("kafka error")
    repeats.ended("kafka error")  # over once: nothing more to say
    lines, _ = output()
    assert [(line["event"], line.get("error")) for line in lines] == [
        ("kafka error", "refused"),
        ("kafka error", "1/1 brokers are down"),
        ("condition over", None),
        ("condition over", None),
    ]


def test_a_condition_that_goes_quiet_ends_on_its_own_and_a_single_line_needs_no_end(output: Any) -> None:
    clock = Clock()
    repeats = Repeats(clock=clock)
    repeats.seen("librdkafka", "FAIL connect", message="Connect failed")
    repeats.seen("librdkafka", "FAIL connect", message="Connect failed")
    repeats.seen("librdkafka", "once", message="a line that came once")
    clock.now += EVERY_S / 2
    repeats.tick()
    assert [line["event"] for line in output()[0]] == ["librdkafka", "librdkafka"]
    clock.now += QUIET_S
    repeats.tick()
    lines, _ = output()
    assert [(line["event"], line["occurrences"]) for line in lines] == [("condition over", 2)]
    repeats.seen("librdkafka", "FAIL connect", message="Connect failed")
    assert [line["event"] for line in output()[0]] == ["librdkafka"], "after its end, it starts again"


def test_the_error_callback_api_counts_each_error_kind_once(output: Any) -> None:
    for _ in range(100):
        kafka_logs.kafka_error(KafkaError(KafkaError._TRANSPORT, "127.0.0.1:1/bootstrap: Connect failed"))
    kafka_logs.kafka_answers()
    lines, _ = output()
    assert [line["event"] for line in lines] == ["kafka error", "condition over"], lines
    assert lines[0]["fatal"] is False


@pytest.mark.parametrize("client", ["producer", "admin"])
def test_librdkafka_lines_of_an_unreachable_cluster_are_a_few_json_lines(client: str, output: Any) -> None:
    """Nothing raw on stderr: every line librdkafka logs while Kafka refuses connections is JSON, and few."""
    conf = {"bootstrap.servers": f"127.0.0.1:{free_port()}", "reconnect.backoff.ms": 10, **kafka_logs.client_conf()}
    deadline = time.monotonic() + 3
    if client == "producer":
        producer = Producer(conf)
        while time.monotonic() < deadline:
            producer.poll(0.1)
    else:
        admin = AdminClient(conf)
        while time.monotonic() < deadline:
            admin.poll(0.1)
    lines, err = output()
    assert err == "", "nothing raw on stderr"
    assert lines, "librdkafka's connection failures are logged"
    assert len(lines) <= 4, lines
    assert all(line["event"] == "librdkafka" for line in lines), lines
    assert any("Connection refused" in line["message"] for line in lines), lines
