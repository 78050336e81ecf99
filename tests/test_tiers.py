"""Every test falls in one tier, set from what it uses: a test added later needs no marker of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

NEW_TESTS = """
from devtools.testkit.bridge_child import BridgeProcess, run_cli


def start(config, path):
    return BridgeProcess(config, path).start()


def test_pure():
    assert 1 + 1 == 2


def test_cli(tmp_path):
    run_cli("--help", env={})


def test_through_a_helper(kafka_bootstrap, tmp_path):
    start({}, tmp_path)


def test_broker_in_process(new_topic):
    pass


def test_sandbox_alone(sandbox):
    pass


def test_benchmark(benchmark):
    pass


def test_restart(owned_kafka_broker):
    pass
"""


def test_a_new_test_file_is_tiered_by_what_its_tests_use(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_new=NEW_TESTS)
    items, _ = pytester.inline_genitems()
    tiers = {item.name: [marker.name for marker in item.iter_markers() if marker.name in TIER_NAMES] for item in items}
    assert tiers == {
        "test_pure": ["unit"],
        "test_cli": ["e2e"],
        "test_through_a_helper": ["e2e"],
        "test_broker_in_process": ["integration"],
        "test_sandbox_alone": ["service"],
        "test_benchmark": ["bench"],
        "test_restart": ["e2e"],
    }


TIER_NAMES = {"unit", "service", "integration", "e2e", "bench"}
