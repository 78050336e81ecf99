"""The benchmark the README gives runs on local parts and reports every figure issue 6 asks for.

It asserts that the figures are there and consistent, never what they are: a benchmark reports, it does not judge.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.harness import ROOT

EVENTS = 3000


def test_the_benchmark_reports_ceiling_bridge_ratio_memory_cpu_and_requests(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    port = kafka_bootstrap.rpartition(":")[2]
    command = [sys.executable, "-m", "bench.throughput", "--events", str(EVENTS), "--latency-ms", "0", "20"]
    command += ["--json", "--kafka-port", port, "--workdir", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"reusing the broker that serves 127.0.0.1:{port}" in done.stderr, "the session's broker, not a second one"
    report = json.loads(done.stdout)

    (ceiling,) = report["ceilings"]
    assert ceiling["events"] == EVENTS
    assert ceiling["rate"] > 0 and ceiling["cpu_s_per_100k"] > 0 and ceiling["peak_rss_mb"] > 0

    assert [run["latency_ms"] for run in report["runs"]] == [0, 20]
    for run in report["runs"]:
        assert run["exit_code"] == 0, f"the bridge drained and exited cleanly; see {run['log']}"
        assert run["by_status"] == {"200": run["requests"]} and run["requests"] >= 1
        assert run["events_per_s"] > 0 and run["peak_rss_mb"] > 0
        assert run["ratio"] == run["events_per_s"] / ceiling["rate"]
        assert 0 < run["main_cpu_s"] < run["cpu_s"], "the bridge's CPU is its own process's and its workers'"
        assert run["cpu_s_per_100k"] == run["cpu_s"] * 100_000 / EVENTS


def test_the_mapped_benchmark_reports_each_mapped_run_beside_its_own_ceiling(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    port = kafka_bootstrap.rpartition(":")[2]
    command = [sys.executable, "-m", "bench.throughput", "--events", "2000", "--latency-ms", "0", "--mapped"]
    command += ["--json", "--kafka-port", port, "--workdir", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    ceilings = {c["workload"]: c for c in report["ceilings"]}
    assert set(ceilings) == {"contract", "game-avro", "game-json"}
    runs = {r["workload"]: r for r in report["runs"]}
    assert set(runs) == {"contract", "identity", "game-avro", "game-json"}
    for workload, run in runs.items():
        assert run["exit_code"] == 0 and run["by_status"] == {"200": run["requests"]}, f"see {run['log']}"
        ceiling = ceilings["contract" if workload == "identity" else workload]
        assert run["ratio"] == run["events_per_s"] / ceiling["rate"]
        assert run["cpu_s_per_100k"] > 0
