"""How fast the bridge moves events, next to the least work any bridge must do.

    .venv/bin/python -m bench.throughput [--events N] [--partitions 4] [--latency-ms MS [MS ...]]
                                         [--profile [py-spy]] [--repeat R] [--mapped] [--json]

Everything runs on this machine, on loopback only:

- a real Kafka broker on its own port (29092 by default, never the tests' 19092) and its own data directory,
  started and stopped by the script, or reused as it is when something already serves that port;
- the in-memory schema registry and the Post API sandbox, each a child process (`appmetrica-bridge registry`,
  `appmetrica-bridge sandbox --no-keep-events`), so their CPU never shares an event loop with what is measured;
- N contract events (devtools/testkit/records.py) produced once, in the Confluent wire format through that registry,
  round-robin over the partitions; every run reads the same topic in its own consumer group.

Then, on that one topic:

- CEILING: a child process with one confluent-kafka Consumer (the bridge's own librdkafka settings) calling
  `consume()` in batches of the bridge's size and decoding each value with `fastavro.schemaless_reader` and a
  schema parsed once by `bridge.decoding.avro.parse`, nothing else; events/s from the first batch to the last record.
- BRIDGE: `python -m bridge run --config FILE` as a child process, once per `--latency-ms` value (0 and 20 by
  default: the second shows whether uploads, running beside fetching and transforming, hide the API's latency).
  Its configuration keeps every default except what points it at the local parts (bootstrap, topic, group,
  registry URL, sandbox URL, the default application_id the contract events need, the endpoints' port on
  127.0.0.1) and `upload.requests_per_second: 1000`, so the rate limit is never what is measured. Its CPU and
  peak RSS are those of the bridge's process and every process under it (the transform workers), summed; its
  CPU is also split between its own process and the workers.
- `--profile`: one more bridge run at the first latency, under pyinstrument (or py-spy, attached from outside),
  reported apart because a profiler slows what it watches; the top entries of where the time goes are printed.
  pyinstrument (a dev dependency) traces the main thread and inflates call-heavy code; py-spy (`pip install
  py-spy`) samples every thread of the bridge and its workers from outside at 100 Hz and barely slows them.
- `--repeat R`: R interleaved rounds of ceiling and bridge runs, with medians, for a machine others also use.
- `--mapped`: after the contract runs of each round, the mapped workloads of `bench.workloads` at the first
  latency: the contract topic through an identity mapping (ratio to the contract's ceiling), and the issue's
  `GameEvent` through its mapping as Avro and as JSON, each after a ceiling of its own records (consume plus
  fastavro with the GameEvent schema, or orjson).

Rates come from one clock: `time.monotonic()` is CLOCK_MONOTONIC on Linux, shared by every process, so the
sandbox's request log and this script's samples can be compared directly.

A benchmark reports, it never judges: nothing here asserts a timing. The machine has 2 cores; the broker, the
sandbox (parsing every CSV body) and the bridge compete for them, which is why their CPU is reported too, with
what every other process on the machine took meanwhile. Logs, configurations and profiles stay in the work
directory printed at the start.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import fastavro
import orjson
import psutil
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench.workloads import GAME_EVENT, GAME_MAPPING, IDENTITY_MAPPING, Workload, game_values
from bridge.config.model import KafkaConfig
from bridge.decoding.avro import contract_schema, parse
from bridge.kafka.source import consumer_config
from bridge.runtime.loop import FETCH_MAX, FETCH_TIMEOUT_S
from devtools.kafka_local import HOST, LocalKafka, free_ports, port_open
from devtools.testkit.bridge_child import BridgeProcess
from devtools.testkit.kafka import produce
from devtools.testkit.records import APP, KEY, event, wire

ROOT = Path(__file__).resolve().parent.parent
BENCH_PORT = 29092
SAMPLE_INTERVAL_S = 0.1
DISTINCT_SHAPES = 1000
"""A thousand shapes of `devtools.testkit.records.event`, each record given a unique seq: every record differs, and
the workload stays the one earlier figures were measured on."""
PROFILE_TOP = 15
IDLE_FRAME = ("select", "selectors.py")
"""A stack through the event loop's `select` is the loop waiting for I/O, not work."""
WRAPPERS = frozenset(
    {
        ("main", "bridge/cli.py"),
        ("_run", "bridge/cli.py"),
        ("run_service", "bridge/service.py"),
        ("serve", "bridge/service.py"),
        ("run", "bridge/pipeline.py"),
    }
)
"""Frames under which nearly everything runs: ranked by total time they would only push the stages out of view."""


class BenchError(RuntimeError):
    """A part of the benchmark could not start or finish in time; the message says which."""


def say(message: str) -> None:
    """Progress goes to stderr, so stdout stays the table (or the JSON)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- results --------------------------------------------------------------------------------------------------------


@dataclass
class CeilingResult:
    name: str
    workload: str
    events: int
    seconds: float
    rate: float
    cpu_s: float
    """User+system seconds of the whole process (librdkafka's threads too) from the first batch to the last record."""
    peak_rss_mb: float

    @property
    def cpu_per_100k(self) -> float:
        return self.cpu_s * 100_000 / self.events


@dataclass
class ProfileSummary:
    tool: str
    file: str
    sampled_s: float
    idle_s: float
    top_self: list[tuple[str, float]]
    top_bridge_total: list[tuple[str, float]]


@dataclass
class BridgeResult:
    name: str
    workload: str
    latency_ms: float
    events: int
    profiler: str | None
    steady_rate: float | None
    """(N - rows of the first request) / (last 200 answered - first request arrived)."""
    end_to_end_rate: float
    """N / (last 200 answered - the bridge reported ready, i.e. had its partitions)."""
    wall_s: float
    peak_rss_mb: float
    cpu_s: float
    """Bridge user+system seconds from ready to the last row accepted (sampled before SIGTERM)."""
    main_cpu_s: float
    """The part of cpu_s spent in the bridge's own process; the rest is its transform workers'."""
    startup_cpu_s: float
    """Bridge user+system seconds from exec to ready: imports, connections, group join."""
    requests: int
    by_status: dict[str, int]
    peak_concurrency: int
    sandbox_cpu_s: float
    broker_cpu_s: float | None
    machine_busy_pct: float
    """Share of all cores busy (any process) between ready and the last row accepted."""
    others_cpu_s: float
    """CPU seconds of every other process on the machine over the run: the noise the figures carry."""
    exit_code: int | None
    log: str
    ratio: float | None = None
    contract_ratio: float | None = None
    """Mapped GameEvents: events/s over the contract events' (median) ceiling, whose records cost more to decode."""
    profile: ProfileSummary | None = None

    @property
    def cpu_per_100k(self) -> float:
        return self.cpu_s * 100_000 / self.events

    @property
    def rate(self) -> float:
        """The steady rate, or end to end when a run made only one request."""
        return self.steady_rate if self.steady_rate is not None else self.end_to_end_rate


@dataclass
class Report:
    events: int
    partitions: int
    cpus: int
    wire_format: str
    bridge_settings_changed: dict[str, Any]
    broker: str
    load_before: tuple[float, float, float]
    """The machine's load averages when the benchmark began: other work on it slows every figure."""
    repeat: int
    ceilings: list[CeilingResult] = field(default_factory=list)
    runs: list[BridgeResult] = field(default_factory=list)


# -- child processes --------------------------------------------------------------------------------------------------


class Children:
    """Every process the benchmark starts, ended (TERM, then KILL) however the benchmark exits."""

    def __init__(self) -> None:
        self._running: list[subprocess.Popen[bytes]] = []

    def spawn(self, command: Sequence[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        # Truncated: a --workdir used before must not hand wait_for_line the last run's address.
        with log.open("wb") as output:
            process = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        self._running.append(process)
        return process

    def adopt(self, process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        """A child started elsewhere (the bridge, by its runner), to be ended with the others."""
        self._running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int | None:
        """SIGTERM and wait up to `timeout_s`, then SIGKILL; the exit code (None when it had to be killed)."""
        code: int | None = None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                say(f"pid {process.pid} ignored SIGTERM for {timeout_s:g} s; killing it")
                process.kill()
                process.wait(10)
        else:
            code = process.returncode
        if process in self._running:
            self._running.remove(process)
        return code

    def stop_all(self) -> None:
        for process in reversed(list(self._running)):
            self.stop(process, 10.0)


def wait_for_line(path: Path, prefix: str, process: subprocess.Popen[bytes], timeout_s: float) -> str:
    """The rest of the first line of `path` starting with `prefix`, as a child prints it on start."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return line.removeprefix(prefix).strip()
        if process.poll() is not None:
            raise BenchError(f"{path.name}: exited with {process.returncode} before printing {prefix!r}")
        time.sleep(0.05)
    raise BenchError(f"{path.name}: no {prefix!r} line within {timeout_s:g} s")


def http_json(url: str, body: dict[str, Any] | None = None, timeout_s: float = 5.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def http_ok(url: str, timeout_s: float = 0.5) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def cpu_s(process: Any) -> float:
    """User+system seconds of a psutil.Process, all its threads; 0 once it is gone."""
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


class ProcessTree:
    """A process and every process under it, summed: the bridge with its transform workers."""

    def __init__(self, root: Any) -> None:
        self._root = root
        self._cpu: dict[int, float] = {}
        """The last CPU seconds read of each member, so a member that ended still counts."""

    def _members(self) -> list[Any]:
        try:
            return [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return []

    def rss(self) -> int:
        total = 0
        for member in self._members():
            with contextlib.suppress(psutil.Error):
                total += member.memory_info().rss
        return total

    def cpu_s(self) -> tuple[float, float]:
        """(the whole tree's, the root's own) CPU seconds."""
        for member in self._members():
            self._cpu[member.pid] = max(self._cpu.get(member.pid, 0.0), cpu_s(member))
        return sum(self._cpu.values()), self._cpu.get(self._root.pid, 0.0)


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    times = psutil.cpu_times()
    total = float(sum(times))
    idle = float(times.idle + getattr(times, "iowait", 0.0))
    return total - idle, total


# -- the local parts --------------------------------------------------------------------------------------------------


@dataclass
class Parts:
    bootstrap: str
    broker_pid: int | None
    registry_url: str
    topic: str
    schema_id: int
    workdir: Path
    workloads: list[Workload]
    """The contract topic's workload first, then the mapped ones `--mapped` asks for."""


@contextlib.contextmanager
def local_parts(children: Children, args: argparse.Namespace, workdir: Path) -> Iterator[Parts]:
    """A broker (own or reused), a registry with the contract, and a topic holding N events; all undone after."""
    kafka = LocalKafka(
        port=args.kafka_port, controller_port=args.kafka_port + 1, data_dir=workdir / "kafka", full_jit=True
    )
    started = False
    with contextlib.ExitStack() as undo:
        if port_open(kafka.port):
            say(f"reusing the broker that serves {kafka.bootstrap}")
        else:
            say(f"starting a broker on {kafka.bootstrap} (data in {kafka.data_dir})")
            # Only the logs' bulk goes; server.log stays beside the other logs for a post-mortem.
            undo.callback(shutil.rmtree, kafka.data_dir / "data", ignore_errors=True)
            undo.callback(kafka.stop)
            kafka.start(timeout=120)
            started = True
        registry_log = workdir / "registry.log"
        registry = children.spawn([sys.executable, "-m", "bridge", "registry", "--port", "0"], registry_log)
        undo.callback(children.stop, registry)
        registry_url = wait_for_line(registry_log, "Schema Registry listening on", registry, 30)

        topic = f"bench-{os.getpid()}-{int(time.time())}"
        _create_topic(kafka.bootstrap, topic, args.partitions)
        if not started:
            # An own broker's data directory goes with it; a shared one keeps only what it had.
            undo.callback(_delete_topic, kafka.bootstrap, topic)
        subject = f"{topic}-value"
        schema_text = json.dumps(contract_schema())
        schema_id = int(http_json(f"{registry_url}/subjects/{subject}/versions", {"schema": schema_text})["id"])

        say(f"producing {args.events:,} events to {topic} ({args.partitions} partitions, Confluent wire format)")
        began = time.monotonic()
        produce(kafka.bootstrap, topic, make_values(args.events, schema_id), partitions=args.partitions)
        say(f"produced in {time.monotonic() - began:.1f} s")
        workloads = [Workload("contract", topic, "avro", contract_schema(), None)]
        if args.mapped:
            workloads += _mapped_workloads(kafka.bootstrap, registry_url, topic, args, undo if not started else None)
        yield Parts(kafka.bootstrap, kafka.pid(), registry_url, topic, schema_id, workdir, workloads)


def _mapped_workloads(
    bootstrap: str, registry_url: str, topic: str, args: argparse.Namespace, undo: contextlib.ExitStack | None
) -> list[Workload]:
    """The identity mapping over the contract topic, and two GameEvent topics (Avro, JSON) of N events each."""
    identity = {"topics": [topic], "method": "events", "mapping": IDENTITY_MAPPING}
    workloads = [Workload("identity", topic, "avro", contract_schema(), identity)]
    for decoding in ("avro", "json"):
        game_topic = f"{topic}-game-{decoding}"
        _create_topic(bootstrap, game_topic, args.partitions)
        if undo is not None:
            undo.callback(_delete_topic, bootstrap, game_topic)
        registered = http_json(
            f"{registry_url}/subjects/{game_topic}-value/versions", {"schema": json.dumps(GAME_EVENT)}
        )
        say(f"producing {args.events:,} GameEvents to {game_topic} ({decoding})")
        values = game_values(args.events, int(time.time() * 1_000_000), decoding, int(registered["id"]))
        produce(bootstrap, game_topic, values, partitions=args.partitions)
        route = {"topics": [game_topic], "method": "events", "format": decoding, "mapping": GAME_MAPPING}
        workloads.append(Workload(f"game-{decoding}", game_topic, decoding, GAME_EVENT, route))
    return workloads


def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    # Admin clients live only as long as their call: one still open when an own broker stops logs a disconnect.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(timeout=30)


def _delete_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    with contextlib.suppress(KafkaException, TimeoutError):
        admin.delete_topics([topic])[topic].result(timeout=30)


def make_values(count: int, schema_id: int) -> list[bytes]:
    now_ms = int(time.time() * 1000)
    shapes = [event(seq, now_ms) for seq in range(min(count, DISTINCT_SHAPES))]
    values = []
    for seq in range(count):
        record = dict(shapes[seq % len(shapes)])
        note = json.loads(record["event_json"])
        note["seq"] = seq
        record["event_json"] = json.dumps(note, ensure_ascii=False)
        values.append(wire(schema_id, record))
    return values


# -- the ceiling ------------------------------------------------------------------------------------------------------


def run_ceiling(
    children: Children, parts: Parts, events: int, timeout_s: float, name: str, workload: Workload
) -> CeilingResult:
    spec: dict[str, Any] = {
        "bootstrap": parts.bootstrap,
        "topic": workload.topic,
        "group": f"{workload.topic}-{name}",
        "events": events,
        "decoding": workload.decoding,
        "schema": workload.schema,
        "workload": workload.name,
    }
    log = parts.workdir / f"{name}.log"
    out = parts.workdir / f"{name}.json"
    spec["out"] = str(out)
    spec["name"] = name
    spec["timeout_s"] = timeout_s
    process = children.spawn([sys.executable, "-m", "bench.throughput", "--ceiling-child", json.dumps(spec)], log)
    try:
        code = process.wait(timeout_s + 30)
    except subprocess.TimeoutExpired:
        raise BenchError(f"the ceiling consumer did not finish within {timeout_s + 30:g} s") from None
    finally:
        children.stop(process)
    if code != 0 or not out.exists():
        raise BenchError(f"the ceiling consumer exited with {code}; see {log}")
    return CeilingResult(**json.loads(out.read_text()))


def ceiling_child(spec: dict[str, Any]) -> None:
    """The least work: fetch in batches, decode every value with a parsed schema, keep nothing."""
    errors: list[str] = []

    def on_error(error: KafkaError) -> None:
        errors.append(error.str())

    async def unused(_: KafkaError) -> None:
        return None

    kafka = KafkaConfig(bootstrap_servers=spec["bootstrap"], group_id=spec["group"], topics=[spec["topic"]])
    # The bridge's own librdkafka settings; only the error callback differs: the sync client calls it plainly,
    # where the bridge's AIOConsumer awaits it.
    consumer = Consumer({**consumer_config(kafka, unused), "error_cb": on_error})
    consumer.subscribe([spec["topic"]])
    # Each value is decoded with its own writer schema (the contract's, as in bridge.decoding.avro, or the
    # GameEvent's), so
    # no reader schema is needed; JSON values are parsed by orjson, as the bridge parses them.
    schema = parse(spec["schema"]) if spec["decoding"] == "avro" else None
    read = fastavro.schemaless_reader
    loads = orjson.loads
    wanted: int = spec["events"]
    seen = 0
    first = cpu_first = 0.0
    deadline = time.monotonic() + spec["timeout_s"]
    try:
        while seen < wanted:
            if time.monotonic() > deadline:
                raise BenchError(f"ceiling: {seen} of {wanted} records in {spec['timeout_s']} s; errors {errors[:3]}")
            messages = consumer.consume(FETCH_MAX, FETCH_TIMEOUT_S)
            if not messages:
                continue
            if not seen:
                first, cpu_first = time.monotonic(), _own_cpu_s()
            for message in messages:
                if message.error() is not None:
                    continue
                if schema is None:
                    loads(message.value() or b"{}")
                else:
                    payload = io.BytesIO(message.value() or b"")
                    payload.seek(5)
                    read(payload, schema, None)
                seen += 1
        last, cpu_last = time.monotonic(), _own_cpu_s()
    finally:
        consumer.close()
    result = CeilingResult(
        name=spec["name"],
        workload=spec["workload"],
        events=seen,
        seconds=last - first,
        rate=seen / (last - first),
        cpu_s=cpu_last - cpu_first,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    )
    Path(spec["out"]).write_text(json.dumps(dataclasses.asdict(result)))


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the bridge -------------------------------------------------------------------------------------------------------


def bridge_settings(parts: Parts, group: str, sandbox_url: str, port: int, workload: Workload) -> dict[str, Any]:
    """The defaults, except what points at the local parts and a rate limit that is never the bottleneck."""
    routes = {"routes": [workload.route]} if workload.route is not None else {}
    return {
        "kafka": {
            "bootstrap_servers": parts.bootstrap,
            "group_id": group,
            "topics": [] if workload.route is not None else [workload.topic],
        },
        **routes,
        "avro": {"format": "confluent", "schema_registry_url": parts.registry_url},
        "post_api": {"url": sandbox_url, "application_id": APP},
        "upload": {"requests_per_second": 1000},
        "server": {"host": HOST, "port": port},
    }


SETTINGS_CHANGED = {
    "kafka.bootstrap_servers / topics / group_id": "the local broker, the bench topic, a group per run",
    "avro.schema_registry_url": "the local registry",
    "post_api.url": "the sandbox",
    "post_api.application_id": f"{APP} (half the contract events carry none)",
    "upload.requests_per_second": "1000 (default 10), so the rate limit is never the bottleneck",
    "server.host / port": "127.0.0.1 and a free port (default 0.0.0.0:8080)",
}


def start_sandbox(
    children: Children, workdir: Path, name: str, latency_ms: float
) -> tuple[subprocess.Popen[bytes], str]:
    log = workdir / f"{name}-sandbox.log"
    process = children.spawn(
        [
            *(sys.executable, "-m", "bridge", "sandbox", "--port", "0"),
            *("--post-api-key", KEY, "--application-id", str(APP), "--no-keep-events"),
            *("--latency-ms", f"{latency_ms:g}"),
        ],
        log,
    )
    return process, wait_for_line(log, "Post API sandbox listening on", process, 30)


def bridge_launcher(profiler: str | None, profile_path: Path) -> list[str]:
    """What runs `-m bridge run --config ...`: this Python, or pyinstrument in it."""
    if profiler == "pyinstrument":
        # pyinstrument runs the module in its own process and catches its SystemExit, so the bridge's SIGTERM
        # drain still runs to the end and the session file is written after it.
        return [sys.executable, "-m", "pyinstrument", "-r", "pyisession", "-o", str(profile_path)]
    return [sys.executable]


def run_bridge(
    children: Children,
    parts: Parts,
    events: int,
    latency_ms: float,
    profiler: str | None,
    timeout_s: float,
    suffix: str = "",
    workload: Workload | None = None,
) -> BridgeResult:
    workload = workload or parts.workloads[0]
    mapped = f"-{workload.name}" if workload.route is not None else ""
    name = f"bridge{mapped}-{latency_ms:g}ms" + (f"-{profiler}" if profiler else "") + suffix
    sandbox, sandbox_url = start_sandbox(children, parts.workdir, name, latency_ms)
    try:
        return _run_bridge(
            children, parts, name, events, latency_ms, profiler, timeout_s, sandbox, sandbox_url, workload
        )
    finally:
        children.stop(sandbox)


def _run_bridge(
    children: Children,
    parts: Parts,
    name: str,
    events: int,
    latency_ms: float,
    profiler: str | None,
    timeout_s: float,
    sandbox: subprocess.Popen[bytes],
    sandbox_url: str,
    workload: Workload,
) -> BridgeResult:
    (port,) = free_ports(1)
    settings = bridge_settings(parts, f"{workload.topic}-{name}", sandbox_url, port, workload)
    profile_path = parts.workdir / (f"{name}.pyisession" if profiler == "pyinstrument" else f"{name}.pyspy.txt")
    child = BridgeProcess(settings, parts.workdir, name, key=KEY, launcher=bridge_launcher(profiler, profile_path))
    log = child.log_path
    say(f"{name}: starting (log {log})")
    began = time.monotonic()
    bridge = children.adopt(child.start().process)
    spy = None
    if profiler == "py-spy":
        # Attached from outside: it samples every thread and slows the bridge far less than an in-process tracer.
        spy = children.spawn(
            [
                py_spy(),
                "record",
                "--pid",
                str(bridge.pid),
                "--subprocesses",
                "--function",
                "--format",
                "raw",
                "--rate",
                "100",
                "--output",
                str(profile_path),
            ],
            parts.workdir / f"{name}.pyspy.log",
        )
    watched = ProcessTree(psutil.Process(bridge.pid))
    sandbox_proc = psutil.Process(sandbox.pid)
    broker_proc = psutil.Process(parts.broker_pid) if parts.broker_pid else None
    ready_url = f"http://{HOST}:{port}/readyz"
    stats_url = f"{sandbox_url}/sandbox/stats"

    peak_rss = 0
    ready_at: float | None = None
    start_cpu = start_main_cpu = start_sandbox_cpu = start_broker_cpu = 0.0
    start_machine = (0.0, 0.0)
    accepted = 0
    deadline = began + timeout_s
    while True:
        peak_rss = max(peak_rss, watched.rss())
        if bridge.poll() is not None:
            raise BenchError(f"{name}: the bridge exited with {bridge.returncode}; see {log}")
        if broker_proc is not None and not broker_proc.is_running():
            raise BenchError(f"{name}: the broker (pid {broker_proc.pid}) is gone; see its server.log")
        if time.monotonic() > deadline:
            raise BenchError(f"{name}: {accepted:,} of {events:,} rows accepted after {timeout_s:g} s; see {log}")
        if ready_at is None:
            if http_ok(ready_url):
                # Ready means partitions assigned: from here on the bridge's CPU is the pipeline's, not start-up.
                ready_at = time.monotonic()
                (start_cpu, start_main_cpu), start_sandbox_cpu = watched.cpu_s(), cpu_s(sandbox_proc)
                start_broker_cpu = cpu_s(broker_proc) if broker_proc else 0.0
                start_machine = machine_busy()
        else:
            accepted = int(http_json(stats_url)["rows_accepted"])
            if accepted >= events:
                break
        time.sleep(SAMPLE_INTERVAL_S)
    # Sampled before SIGTERM: the drain and exit are not part of moving the events.
    (end_cpu, end_main_cpu), end_sandbox_cpu = watched.cpu_s(), cpu_s(sandbox_proc)
    end_broker_cpu = cpu_s(broker_proc) if broker_proc else 0.0
    end_machine = machine_busy()
    peak_rss = max(peak_rss, watched.rss())
    # A profiled bridge writes its profile after the drain; give it time to.
    exit_code = children.stop(bridge, 120 if profiler else 30)
    if spy is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(30)
        children.stop(spy)

    stats = http_json(stats_url)
    requests = fetch_requests(sandbox_url)
    accepted_requests = [r for r in requests if r["status"] == 200]
    first = min(requests, key=lambda r: float(r["arrived"]))
    last_answered = max(float(r["answered"]) for r in accepted_requests)
    steady = None
    if len(accepted_requests) > 1 and first["status"] == 200:
        steady = (events - int(first["rows"])) / (last_answered - float(first["arrived"]))
    busy = end_machine[0] - start_machine[0]
    total = end_machine[1] - start_machine[1]
    result = BridgeResult(
        name=name,
        workload=workload.name,
        latency_ms=latency_ms,
        events=events,
        profiler=profiler,
        steady_rate=steady,
        end_to_end_rate=events / (last_answered - (ready_at or began)),
        wall_s=last_answered - began,
        peak_rss_mb=peak_rss / 2**20,
        cpu_s=end_cpu - start_cpu,
        main_cpu_s=end_main_cpu - start_main_cpu,
        startup_cpu_s=start_cpu,
        requests=int(stats["requests"]),
        by_status={str(k): int(v) for k, v in stats["by_status"].items()},
        peak_concurrency=int(stats["peak_concurrency"]),
        sandbox_cpu_s=end_sandbox_cpu - start_sandbox_cpu,
        broker_cpu_s=end_broker_cpu - start_broker_cpu if broker_proc else None,
        machine_busy_pct=100 * busy / total if total > 0 else 0.0,
        others_cpu_s=max(
            0.0,
            busy - (end_cpu - start_cpu) - (end_sandbox_cpu - start_sandbox_cpu) - (end_broker_cpu - start_broker_cpu),
        ),
        exit_code=exit_code,
        log=str(log),
    )
    if profiler is not None:
        if profile_path.exists():
            result.profile = summarize_profile(profiler, profile_path)
        else:
            say(f"{name}: no profile was written to {profile_path}; see {log}")
    say(f"{name}: {events:,} rows accepted in {result.wall_s:.1f} s, exit code {exit_code}")
    return result


def fetch_requests(sandbox_url: str) -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = []
    while True:
        page = http_json(f"{sandbox_url}/sandbox/requests?offset={len(requests)}&limit=1000")
        requests += page["requests"]
        if not page["requests"] or len(requests) >= page["total"]:
            return requests


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise BenchError("--profile py-spy needs py-spy: .venv/bin/pip install py-spy")
    return found


# -- profiles ---------------------------------------------------------------------------------------------------------

Stack = tuple[tuple[str, str], ...]
"""Outermost first; each frame (function, file)."""


def summarize_profile(tool: str, path: Path) -> ProfileSummary:
    stacks = _pyinstrument_stacks(path) if tool == "pyinstrument" else _pyspy_stacks(path)
    own: dict[str, float] = defaultdict(float)
    total: dict[str, float] = defaultdict(float)
    sampled = idle = 0.0
    for stack, seconds in stacks:
        sampled += seconds
        if any(_bare(function) == IDLE_FRAME[0] and file.endswith(IDLE_FRAME[1]) for function, file in stack):
            idle += seconds
            continue
        if stack:
            own[_label(stack[-1])] += seconds
        for label in {_label(frame) for frame in stack if _in_bridge(frame)}:
            total[label] += seconds
    return ProfileSummary(
        tool=tool,
        file=str(path),
        sampled_s=sampled,
        idle_s=idle,
        top_self=sorted(own.items(), key=lambda item: -item[1])[:PROFILE_TOP],
        top_bridge_total=sorted(total.items(), key=lambda item: -item[1])[:PROFILE_TOP],
    )


def _short(file: str) -> str:
    for marker in ("/site-packages/", "/lib/python3.11/", str(ROOT) + "/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def _label(frame: tuple[str, str]) -> str:
    return f"{frame[0]} ({_short(frame[1])})" if frame[1] else frame[0]


def _bare(function: str) -> str:
    """py-spy names methods by their qualified name (Pipeline.run), pyinstrument by the bare one (run)."""
    return function.rpartition(".")[2]


def _in_bridge(frame: tuple[str, str]) -> bool:
    file = _short(frame[1])
    # Module bodies are imports at start-up, not moving events.
    return file.startswith("bridge/") and frame[0] != "<module>" and (_bare(frame[0]), file) not in WRAPPERS


def _pyinstrument_stacks(path: Path) -> Iterator[tuple[Stack, float]]:
    from pyinstrument.session import Session

    session = Session.load(path)
    for frames, seconds in session.frame_records:
        stack = []
        for info in frames:
            # "function\x00file\x00line", then "\x01"-prefixed attributes (class name, current line).
            function, file, *_ = info.split("\x01", 1)[0].split("\x00")
            stack.append((function, file))
        yield tuple(stack), float(seconds)


def _pyspy_stacks(path: Path) -> Iterator[tuple[Stack, float]]:
    interval = 1 / 100
    for line in path.read_text(errors="replace").splitlines():
        frames, _, count = line.rpartition(" ")
        if not frames.strip():
            # A sample of a thread running native code only (librdkafka's own threads, say).
            yield (("(no Python frame)", ""),), int(count) * interval
            continue
        stack = []
        for frame in frames.split(";"):
            # "function (file:line)"
            function, _, where = frame.partition(" (")
            stack.append((function, where.rstrip(")").rsplit(":", 1)[0]))
        yield tuple(stack), int(count) * interval


# -- output -----------------------------------------------------------------------------------------------------------


def render(report: Report) -> str:
    lines = [
        f"appmetrica-bridge throughput: {report.events:,} contract events, {report.partitions} partitions, "
        f"{report.wire_format}; {report.cpus} CPUs (load average {report.load_before[0]:.2f} at the start); "
        f"broker {report.broker}",
        "",
    ]
    header = ("run", "events/s", "ratio", "peak RSS MB", "CPU s/100k", "requests")
    rows: list[tuple[str, ...]] = [header]
    for c in report.ceilings:
        rows.append(_row(_ceiling_title(c), c.rate, None, c.peak_rss_mb, c.cpu_per_100k, None))
    contract = [c for c in report.ceilings if c.workload == "contract"]
    if len(contract) > 1:
        rates, rss, cpu = _columns(contract)
        median = statistics.median
        rows.append(_row("ceiling, median", median(rates), None, median(rss), median(cpu), None))
    for r in report.runs:
        rows.append(_row(_run_title(r), r.rate, r.ratio, r.peak_rss_mb, r.cpu_per_100k, r.requests))
    if report.repeat > 1:
        for latency in sorted({r.latency_ms for r in report.runs if r.profiler is None and r.workload == "contract"}):
            same = [
                r for r in report.runs if r.latency_ms == latency and r.profiler is None and r.workload == "contract"
            ]
            ratios = [r.ratio for r in same if r.ratio is not None]
            rows.append(
                _row(
                    f"bridge, latency {latency:g} ms, median",
                    statistics.median(r.rate for r in same),
                    statistics.median(ratios) if ratios else None,
                    statistics.median(r.peak_rss_mb for r in same),
                    statistics.median(r.cpu_per_100k for r in same),
                    None,
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
    lines += [
        "",
        "events/s: ceiling from its first fetched batch to its last decoded record; bridge steady state from the",
        "first request's arrival to the last 200, the first request's rows left out. CPU s/100k: user+system of",
        "that one process over that stretch (the bridge: ready to last row accepted, before SIGTERM). The bridge's",
        "CPU and peak RSS are its process and its worker processes summed. ratio: bridge events/s over the",
        "(median) ceiling's of the same records (identity mapping: the contract's).",
        "",
    ]
    for r in report.runs:
        broker = f"{r.broker_cpu_s:.1f}" if r.broker_cpu_s is not None else "n/a"
        beside = f"; {r.contract_ratio:.2f} of the contract ceiling" if r.contract_ratio is not None else ""
        lines += [
            f"{_run_title(r)}:",
            f"  end to end {r.end_to_end_rate:,.0f} ev/s (ready -> last 200); {r.wall_s:.1f} s from exec to the last "
            f"200; exit code {r.exit_code} after SIGTERM{beside}",
            f"  answers {r.by_status}, peak concurrency at the sandbox {r.peak_concurrency}",
            f"  CPU s over the run: bridge {r.cpu_s:.1f} (its own process {r.main_cpu_s:.1f}, the transform workers "
            f"{r.cpu_s - r.main_cpu_s:.1f}; +{r.startup_cpu_s:.1f} start-up), sandbox "
            f"{r.sandbox_cpu_s:.1f}, broker {broker}, other processes {r.others_cpu_s:.1f}; "
            f"machine {r.machine_busy_pct:.0f}% busy",
        ]
    for r in report.runs:
        if r.profile is not None:
            lines += ["", *_render_profile(r.profile)]
    return "\n".join(lines)


def _row(
    title: str, rate: float, ratio: float | None, rss_mb: float, cpu_per_100k: float, requests: int | None
) -> tuple[str, ...]:
    return (
        title,
        f"{rate:,.0f}",
        f"{ratio:.2f}" if ratio is not None else "-",
        f"{rss_mb:.0f}",
        f"{cpu_per_100k:.2f}",
        str(requests) if requests is not None else "-",
    )


def _columns(ceilings: list[CeilingResult]) -> tuple[list[float], list[float], list[float]]:
    return [c.rate for c in ceilings], [c.peak_rss_mb for c in ceilings], [c.cpu_per_100k for c in ceilings]


def _ceiling_title(ceiling: CeilingResult) -> str:
    if ceiling.workload == "contract":
        return "ceiling (consume + decode)" + ceiling.name.removeprefix("ceiling").replace("-", ", #")
    attempt = ceiling.name.removeprefix(f"ceiling-{ceiling.workload}").replace("-", ", #")
    return f"ceiling, {ceiling.workload} (consume + decode)" + attempt


def _profile_line(label: str, seconds: float, busy: float) -> str:
    return f"  {seconds:7.2f} s {100 * seconds / busy:5.1f}%  {label}"


def _run_title(run: BridgeResult) -> str:
    mapped = "" if run.workload == "contract" else f", {run.workload} mapping"
    title = f"bridge{mapped}, latency {run.latency_ms:g} ms"
    if run.profiler:
        return f"{title}, under {run.profiler}"
    attempt = run.name.rpartition("ms")[2].removeprefix("-")
    return f"{title}, #{attempt}" if attempt else title


def _render_profile(profile: ProfileSummary) -> list[str]:
    busy = profile.sampled_s - profile.idle_s
    scope = (
        "main thread; Cython callees such as fastavro's reader count as their caller's own time"
        if profile.tool == "pyinstrument"
        else "all threads, idle samples left out"
    )
    idle = (
        f"{profile.idle_s:.1f} s of it the event loop waiting in select"
        if profile.tool == "pyinstrument"
        else "waiting threads not sampled"
    )
    lines = [
        f"profile ({profile.tool}, {scope}): {profile.sampled_s:.1f} s sampled, {idle}; {profile.file}",
        f"top {PROFILE_TOP} by own time (share of the {busy:.1f} s not waiting):",
    ]
    lines += [_profile_line(label, seconds, busy) for label, seconds in profile.top_self]
    lines.append(f"top {PROFILE_TOP} bridge functions by total time (callees included):")
    lines += [_profile_line(label, seconds, busy) for label, seconds in profile.top_bridge_total]
    return lines


# -- main -------------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000, help="events to produce and move (default 300000)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the topic (default 4)")
    parser.add_argument(
        "--latency-ms",
        type=float,
        nargs="+",
        default=[0.0, 20.0],
        metavar="MS",
        help="one bridge run per value, the sandbox adding that latency to each answer (default: 0 20)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="pyinstrument",
        choices=("pyinstrument", "py-spy"),
        help="one more bridge run (first latency) under a profiler, pyinstrument unless py-spy is named",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="R", help="rounds of ceiling + bridge runs; the table adds medians"
    )
    parser.add_argument("--no-ceiling", dest="ceiling", action="store_false", help="skip the ceiling run")
    parser.add_argument(
        "--mapped",
        action="store_true",
        help="also identity-mapped contract events and mapped GameEvents (Avro, JSON), each beside its ceiling",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    parser.add_argument("--kafka-port", type=int, default=BENCH_PORT, help="broker port; controller is +1")
    parser.add_argument("--timeout-s", type=float, help="per run (default 60 s + 1 s per 2,000 events)")
    parser.add_argument("--workdir", type=Path, help="where logs, configs and profiles go (default: a new temp dir)")
    parser.add_argument("--ceiling-child", metavar="SPEC", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.ceiling_child:
        ceiling_child(json.loads(args.ceiling_child))
        return 0
    if min(args.events, args.partitions, args.repeat) < 1:
        print("--events, --partitions and --repeat must be positive", file=sys.stderr)
        return 2
    timeout_s = args.timeout_s or 60 + args.events / 2000
    workdir: Path = args.workdir or Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"logs, configs and profiles in {workdir}")
    _terminate_as_exit()
    children = Children()
    report = Report(
        events=args.events,
        partitions=args.partitions,
        cpus=psutil.cpu_count() or 0,
        wire_format="Confluent wire format (magic byte, schema id) through the local schema registry",
        bridge_settings_changed=SETTINGS_CHANGED,
        broker=f"{HOST}:{args.kafka_port}",
        load_before=os.getloadavg(),
        repeat=args.repeat,
    )
    try:
        with local_parts(children, args, workdir) as parts:
            for attempt in range(1, args.repeat + 1):
                # Interleaved, so a burst of other work on the machine lands on one round, not on one kind of run.
                suffix = f"-{attempt}" if args.repeat > 1 else ""
                if args.ceiling:
                    say(f"ceiling{suffix}: consume + decode in one child process")
                    contract = parts.workloads[0]
                    report.ceilings.append(
                        run_ceiling(children, parts, args.events, timeout_s, f"ceiling{suffix}", contract)
                    )
                for latency in args.latency_ms:
                    report.runs.append(run_bridge(children, parts, args.events, latency, None, timeout_s, suffix))
                for workload in parts.workloads[1:]:
                    # Each mapped run right after the ceiling of its own records, first latency only.
                    if args.ceiling and workload.topic != parts.topic:
                        name = f"ceiling-{workload.name}{suffix}"
                        say(f"{name}: consume + decode in one child process")
                        report.ceilings.append(run_ceiling(children, parts, args.events, timeout_s, name, workload))
                    report.runs.append(
                        run_bridge(children, parts, args.events, args.latency_ms[0], None, timeout_s, suffix, workload)
                    )
            if args.profile:
                report.runs.append(
                    run_bridge(children, parts, args.events, args.latency_ms[0], args.profile, timeout_s * 3)
                )
    except BenchError as exc:
        print(f"bench.throughput: {exc}", file=sys.stderr)
        return 1
    finally:
        children.stop_all()
    for run in report.runs:
        # identity reads the contract topic: its ceiling is the contract's.
        records = "contract" if run.workload == "identity" else run.workload
        same = [c.rate for c in report.ceilings if c.workload == records]
        if same:
            run.ratio = run.rate / statistics.median(same)
        contract_rates = [c.rate for c in report.ceilings if c.workload == "contract"]
        if contract_rates and records != "contract":
            run.contract_ratio = run.rate / statistics.median(contract_rates)
    print(json.dumps(as_json(report), indent=2) if args.json else render(report))
    return 0


def as_json(report: Report) -> dict[str, Any]:
    """The report as plain data, with the derived figures the table shows."""
    data = dataclasses.asdict(report)
    for plain, ceiling in zip(data["ceilings"], report.ceilings, strict=True):
        plain["cpu_s_per_100k"] = ceiling.cpu_per_100k
    for plain, run in zip(data["runs"], report.runs, strict=True):
        plain["cpu_s_per_100k"] = run.cpu_per_100k
        plain["events_per_s"] = run.rate
    return data


def _terminate_as_exit() -> None:
    """SIGTERM unwinds like Ctrl-C, so the `finally` blocks end every child and the broker."""

    def handler(signum: int, _: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    sys.exit(main())
