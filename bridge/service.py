"""Wires a checked configuration into a running bridge: endpoints first, then access, pipeline, signals, progress.

The endpoints answer before any Kafka call: a bridge waiting for Kafka is alive (`/healthz` 200) and says on
`/readyz` what it waits for, so an orchestrator does not restart it in a loop through a Kafka outage. Every step
after a signal has a deadline, and a watchdog ends the process if one overruns it all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable

import aiohttp
import structlog
from aiohttp import web

from bridge.config.credentials import mask_user_info
from bridge.config.model import BridgeConfig, Settings
from bridge.decoding.lanes import needs_own_schemas
from bridge.decoding.registry import Decoder, NoSchemas, make_decoder, registry_client_conf
from bridge.decoding.transform import Rules, collect_rarely
from bridge.errors import EXIT_FAILED, EXIT_STARTUP, StartupError
from bridge.kafka import logs as kafka_logs
from bridge.kafka.access import check_kafka_access
from bridge.kafka.dead_letter_producer import DeadLetters
from bridge.kafka.group_budget import GroupBudget
from bridge.kafka.source import Source
from bridge.ops import logs
from bridge.ops.health import make_app
from bridge.ops.metrics import Metrics
from bridge.postapi.uploader import AiohttpTransport, Uploader, post_api_tls
from bridge.runtime.assembly import Runtime, assemble
from bridge.runtime.clock import LoopClock
from bridge.runtime.delivery import Totals
from bridge.runtime.loop import CLOSE_TIMEOUT_S, COMMIT_TIMEOUT_S, OwnerLoop
from bridge.runtime.transforms import WORKERS_EXIT_S

log = structlog.get_logger("bridge")

DEAD_LETTER_FLUSH_S = 3.0
ENDPOINTS_SHUTDOWN_S = 1.0
CLOSE_BUDGET_S = COMMIT_TIMEOUT_S + WORKERS_EXIT_S + CLOSE_TIMEOUT_S + DEAD_LETTER_FLUSH_S + ENDPOINTS_SHUTDOWN_S
"""The most the bridge spends after `shutdown.drain_timeout_s` on closing: the final commit, the transform workers, the
consumer, the dead-letter producer, the endpoints: 10 s. A pod's grace period must cover the drain plus this (the
chart's terminationGraceMarginSeconds, 10 by default)."""
TASK_END_S = 1.0
"""A background task (progress lines, the group's rate sharing) has this long to end once cancelled."""
TICK_S = 5.0
"""How often lasting Kafka conditions are counted or ended (`bridge.kafka.logs`)."""


def run_service(settings: Settings) -> int:
    """Run the bridge until SIGTERM or SIGINT; 0 after a clean drain, 1 when it cannot start, 3 on a failure."""
    logs.configure(settings.config.log.level)
    kafka_logs.configure(settings.config.log.level)
    logs.REDACTOR.add(settings.secrets())
    # This process keeps up to buffer.max_records records alive and allocates several objects for each one it
    # fetches; at the default thresholds a full collection, walking every one of them, came every few thousand
    # records (a quarter of the process's CPU in the benchmark).
    collect_rarely()
    # A watchdog exit skips the transform pool's finalizers; multiprocessing's resource tracker, a child process
    # with the bridge's stderr, then frees the pool's semaphores itself and says so in a line that is not JSON.
    sys.warnoptions.append("ignore::UserWarning:multiprocessing.resource_tracker")
    return asyncio.run(serve(settings))


class _Signals:
    """SIGTERM and SIGINT from the first moment: during start-up they end it, once running they drain the pipeline.

    The first one also arms the watchdog: the process ends by the drain's deadline plus the close budget even if
    a step overruns its own deadline (a client call stuck in librdkafka, say).
    """

    def __init__(self, starting: asyncio.Task[int], drain_timeout_s: float) -> None:
        self._starting = starting
        self._drain_timeout_s = drain_timeout_s
        self.pipeline: OwnerLoop | None = None
        self.before_start = False
        self._watchdog: threading.Timer | None = None

    def __call__(self, signum: int) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        if self._watchdog is None:
            budget = CLOSE_BUDGET_S + (self._drain_timeout_s if self.pipeline is not None else 0.0)
            self._watchdog = threading.Timer(budget, _overran, args=(budget,))
            self._watchdog.daemon = True
            self._watchdog.start()
        if self.pipeline is not None:
            self.pipeline.stop()
        elif not self.before_start:
            self.before_start = True
            self._starting.cancel()

    def disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()


def _overran(budget_s: float) -> None:
    # Records not yet committed are read again by whoever owns their partitions next: nothing is lost by leaving.
    log.error("shutdown overran its deadline; exiting now, uncommitted records will be read again", budget_s=budget_s)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os._exit(0)


class _Stage:
    """What the endpoints observe: start-up until the pipeline exists, the pipeline from then on."""

    def __init__(self, config: BridgeConfig) -> None:
        self.pipeline: Runtime | None = None
        self.waiting: str | None = None
        """What start-up waits for, as a readiness reason."""
        self._checking = f"starting: asking Kafka at {config.kafka.bootstrap_servers} what the bridge may do"

    @property
    def heartbeat(self) -> float:
        # Before the pipeline, the endpoints answering is the loop turning.
        return self.pipeline.heartbeat if self.pipeline is not None else time.monotonic()

    def not_ready(self) -> list[str]:
        if self.pipeline is not None:
            return self.pipeline.not_ready()
        return [self.waiting or self._checking]

    def stalled(self) -> list[str]:
        return self.pipeline.stalled() if self.pipeline is not None else []

    def wait_for(self, what: str | None) -> None:
        """Called from start-up's thread: a plain assignment, read by the loop."""
        self.waiting = what


async def serve(settings: Settings, metrics: Metrics | None = None) -> int:
    """Start the bridge and run it until a signal; a signal during start-up ends it with 0, nothing consumed."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signals = _Signals(task, settings.config.shutdown.drain_timeout_s)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, signals, signum)
    try:
        return await _serve(settings, metrics or Metrics(), signals)
    except asyncio.CancelledError:
        if not signals.before_start:
            raise
        log.info("stopped during start-up")
        return 0
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        signals.disarm()


async def _serve(settings: Settings, metrics: Metrics, signals: _Signals) -> int:
    config = settings.config
    stage = _Stage(config)
    stale_after = max(30.0, config.kafka.revoke_timeout_s + 10, config.shutdown.drain_timeout_s + 10)
    runner = web.AppRunner(
        make_app(stage, metrics.registry, stale_after), access_log=None, shutdown_timeout=ENDPOINTS_SHUTDOWN_S
    )
    await runner.setup()
    ticking = asyncio.get_running_loop().create_task(_tick_conditions())
    try:
        try:
            await web.TCPSite(runner, config.server.host, config.server.port).start()
        except OSError as exc:
            log.error("cannot start", error=f"cannot serve on {config.server.host}:{config.server.port}: {exc}")
            return EXIT_STARTUP
        log.info(
            "starting",
            bootstrap=config.kafka.bootstrap_servers,
            topics=config.topics,
            group=config.kafka.group_id,
            port=config.server.port,
        )
        return await _start_and_run(settings, metrics, signals, stage)
    finally:
        await _within(_cancelled(ticking), TASK_END_S, "the Kafka condition counter")
        await _within(runner.cleanup(), ENDPOINTS_SHUTDOWN_S + 1, "the endpoints")


async def _start_and_run(settings: Settings, metrics: Metrics, signals: _Signals, stage: _Stage) -> int:
    config = settings.config
    try:
        await check_kafka_access(config.kafka, config.topics, stage.wait_for)
        registry_conf = registry_client_conf(config.avro, settings.registry)
        decoder: Decoder = NoSchemas()
        if config.reads_avro:
            decoder = make_decoder(
                config.avro.format, config.avro.schema_registry_url, config.avro.schema_file, registry_conf
            )
        own_schemas = None
        if needs_own_schemas(config):
            own_schemas = make_decoder(
                config.avro.format,
                config.avro.schema_registry_url,
                config.avro.schema_file,
                registry_conf,
                own_schema=True,
            )
    except (StartupError, ValueError) as exc:
        log.error("cannot start", error=str(exc))
        return EXIT_STARTUP
    dead_letters = None
    if config.kafka.dead_letter_topic:
        dead_letters = DeadLetters(
            config.kafka.dead_letter_topic, config.kafka.bootstrap_servers, config.kafka.properties
        )
    try:
        if dead_letters is not None:
            try:
                await dead_letters.check_topic()
            except StartupError as exc:
                log.error("cannot start", error=str(exc))
                return EXIT_STARTUP
        return await _run(settings, metrics, signals, stage, dead_letters, decoder, own_schemas)
    finally:
        if dead_letters is not None:
            await _within(dead_letters.close(DEAD_LETTER_FLUSH_S), DEAD_LETTER_FLUSH_S + 3, "the dead-letter producer")


async def _run(
    settings: Settings,
    metrics: Metrics,
    signals: _Signals,
    stage: _Stage,
    dead_letters: DeadLetters | None,
    decoder: Decoder,
    own_schemas: Decoder | None,
) -> int:
    config = settings.config
    rules = Rules(config.post_api.application_id, settings.keys.keyed_applications(), config.post_api.max_future_s)
    metrics.expect({r.method for r in config.effective_routes}, _known_applications(config))
    connector = aiohttp.TCPConnector(limit=config.upload.max_in_flight, ssl=post_api_tls(config.post_api))
    # trust_env: HTTPS_PROXY and NO_PROXY, as corporate networks set them, route the uploads.
    async with aiohttp.ClientSession(connector=connector, trust_env=True) as session:
        clock = LoopClock()
        uploader = Uploader(
            AiohttpTransport(session), config.post_api.url, settings.keys, config.upload, metrics, clock
        )
        budget = None
        kafka = config.kafka
        if config.upload.rate_scope == "group":
            budget = GroupBudget(config.kafka, config.upload.requests_per_second, uploader.rate_limit, metrics)
            kafka = budget.named(kafka)
        pipeline = assemble(
            config,
            lambda on_error: Source(kafka, on_error),
            decoder,
            own_schemas,
            rules,
            uploader,
            dead_letters,
            metrics,
            clock,
            budget.membership_changed if budget is not None else lambda: None,
        )
        stage.pipeline = pipeline
        signals.pipeline = pipeline.loop
        loop = asyncio.get_running_loop()
        log.info(
            "bridge started",
            topics=config.topics,
            group=config.kafka.group_id,
            post_api=mask_user_info(config.post_api.url),
            port=config.server.port,
            dead_letter_topic=config.kafka.dead_letter_topic,
        )
        progress = loop.create_task(_report_progress(pipeline, config.log.progress_interval_s))
        sharing = loop.create_task(budget.run()) if budget is not None else None
        code = 0
        try:
            await pipeline.loop.run()
        except Exception:
            log.exception("the bridge failed")
            code = EXIT_FAILED
        finally:
            for task in (progress, sharing):
                if task is not None:
                    await _within(_cancelled(task), TASK_END_S, "a background task")
    log.info("bridge stopped", exit_code=code, **_summary(pipeline))
    return code


async def _within(step: Awaitable[object], timeout_s: float, what: str) -> None:
    """Await a shutdown step for at most `timeout_s`; one that overruns is left behind, and said so."""
    try:
        await asyncio.wait_for(step, timeout_s)
    except TimeoutError:
        log.warning("a shutdown step overran its deadline; left behind", step=what, timeout_s=timeout_s)


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _tick_conditions() -> None:
    while True:
        await asyncio.sleep(TICK_S)
        kafka_logs.REPEATS.tick()


async def _report_progress(pipeline: Runtime, interval_s: float) -> None:
    last_uploaded, last_time = 0, time.monotonic()
    while True:
        await asyncio.sleep(interval_s)
        now = time.monotonic()
        totals = pipeline.totals
        held_records, held_bytes = pipeline.held
        log.info(
            "progress",
            **_summary(pipeline),
            held_records=held_records,
            held_bytes=held_bytes,
            rows_per_s=round((totals.uploaded - last_uploaded) / (now - last_time), 1),
            not_ready=pipeline.not_ready(),
        )
        last_uploaded, last_time = totals.uploaded, now


def _known_applications(config: BridgeConfig) -> set[int]:
    """The applications the configuration names; others appear in the metrics with their first upload."""
    named = set(config.post_api.applications)
    if config.post_api.application_id is not None:
        named.add(config.post_api.application_id)
    return named


def _summary(runtime: Runtime) -> dict[str, object]:
    totals: Totals = runtime.totals
    return {
        "consumed": runtime.ledger.consumed,
        "uploaded": totals.uploaded,
        "dead_lettered": totals.dead_lettered,
        "dead_lettered_by_reason": totals.by_reason,
        "uploaded_by_method": dict(totals.uploaded_by_method),
        "dead_lettered_by_method": dict(totals.dead_lettered_by_method),
        "requests": totals.requests,
    }
