"""The benchmark the README gives runs on local parts and reports every figure issue 6 asks for.

It asserts that the figures are there and consistent, never what they are: a benchmark reports, it does not judge.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Benchmark = Callable[..., dict[str, Any]]


EVENTS = 3000


def test_the_benchmark_reports_ceiling_bridge_ratio_memory_cpu_and_requests(benchmark: Benchmark) -> None:
    report = benchmark("--events", str(EVENTS), "--latency-ms", "0", "20")

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


def test_the_mapped_benchmark_reports_each_mapped_run_beside_its_own_ceiling(benchmark: Benchmark) -> None:
    report = benchmark("--events", "2000", "--latency-ms", "0", "--mapped")
    ceilings = {c["workload"]: c for c in report["ceilings"]}
    assert set(ceilings) == {"contract", "game-avro", "game-json"}
    runs = {r["workload"]: r for r in report["runs"]}
    assert set(runs) == {"contract", "identity", "game-avro", "game-json"}
    for workload, run in runs.items():
        assert run["exit_code"] == 0 and run["by_status"] == {"200": run["requests"]}, f"see {run['log']}"
        ceiling = ceilings["contract" if workload == "identity" else workload]
        assert run["ratio"] == run["events_per_s"] / ceiling["rate"]
        assert run["cpu_s_per_100k"] > 0
