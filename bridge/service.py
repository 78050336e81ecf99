"""Wires a checked configuration into a running bridge: pipeline, endpoints, signals and progress lines."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import aiohttp
import structlog
from aiohttp import web

from bridge import logs
from bridge.access import check_kafka_access
from bridge.config import BridgeConfig, Settings
from bridge.deadletter import DeadLetters, StartupError
from bridge.decode import make_decoder, registry_client_conf
from bridge.delivery import Totals
from bridge.group_budget import GroupBudget
from bridge.health import make_app
from bridge.lanes import needs_own_schemas
from bridge.metrics import Metrics
from bridge.pipeline import CLOSE_TIMEOUT_S, WORKERS_EXIT_S, Pipeline
from bridge.source import Source
from bridge.transform import Rules, collect_rarely
from bridge.upload import Uploader, post_api_tls

log = structlog.get_logger("bridge")

EXIT_STARTUP = 1
EXIT_FAILED = 3
DEAD_LETTER_FLUSH_S = 4.0
ENDPOINTS_SHUTDOWN_S = 1.0
CLOSE_BUDGET_S = WORKERS_EXIT_S + CLOSE_TIMEOUT_S + DEAD_LETTER_FLUSH_S + ENDPOINTS_SHUTDOWN_S
"""The most the bridge spends after `shutdown.drain_timeout_s` on closing: the transform workers, the consumer, the
dead-letter producer, the endpoints. A pod's grace period must cover the drain plus this (the chart's
terminationGraceMarginSeconds)."""


def run_service(settings: Settings) -> int:
    """Run the bridge until SIGTERM or SIGINT; 0 after a clean drain, 1 when it cannot start, 3 on a failure."""
    logs.configure(settings.config.log.level)
    logs.REDACTOR.add(settings.secrets())
    # This process keeps up to buffer.max_records records alive and allocates several objects for each one it
    # fetches; at the default thresholds a full collection, walking every one of them, came every few thousand
    # records (a quarter of the process's CPU in the benchmark).
    collect_rarely()
    return asyncio.run(serve(settings))


class _Signals:
    """SIGTERM and SIGINT from the first moment: during start-up they end it, once running they drain the pipeline."""

    def __init__(self, starting: asyncio.Task[int]) -> None:
        self._starting = starting
        self.pipeline: Pipeline | None = None
        self.before_start = False

    def __call__(self, signum: int) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        if self.pipeline is not None:
            self.pipeline.stop()
        elif not self.before_start:
            self.before_start = True
            self._starting.cancel()


async def serve(settings: Settings, metrics: Metrics | None = None) -> int:
    """Start the bridge and run it until a signal; a signal during start-up ends it with 0, nothing consumed."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signals = _Signals(task)
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


async def _serve(settings: Settings, metrics: Metrics, signals: _Signals) -> int:
    config = settings.config
    try:
        await check_kafka_access(config.kafka, config.topics)
    except StartupError as exc:
        log.error("cannot start", error=str(exc))
        return EXIT_STARTUP
    try:
        registry_conf = registry_client_conf(config.avro, settings.registry)
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
    except ValueError as exc:
        log.error("cannot start", error=str(exc))
        return EXIT_STARTUP
    dead_letters = None
    if config.kafka.dead_letter_topic:
        dead_letters = DeadLetters(
            config.kafka.dead_letter_topic, config.kafka.bootstrap_servers, config.kafka.properties
        )
        try:
            await dead_letters.check_topic()
        except StartupError as exc:
            log.error("cannot start", error=str(exc))
            await dead_letters.close()
            return EXIT_STARTUP
    rules = Rules(config.post_api.application_id, settings.keys.keyed_applications(), config.post_api.max_future_s)
    metrics.expect({r.method for r in config.effective_routes}, _known_applications(config))
    connector = aiohttp.TCPConnector(limit=config.upload.max_in_flight, ssl=post_api_tls(config.post_api))
    # trust_env: HTTPS_PROXY and NO_PROXY, as corporate networks set them, route the uploads.
    async with aiohttp.ClientSession(connector=connector, trust_env=True) as session:
        uploader = Uploader(session, config.post_api.url, settings.keys, config.upload, metrics)
        budget = None
        if config.upload.rate_scope == "group":
            budget = GroupBudget(config.kafka, config.upload.requests_per_second, uploader.rate_limit, metrics)
        source = budget.source_factory() if budget is not None else Source
        pipeline = Pipeline(config, source, decoder, rules, uploader, dead_letters, metrics, own_schemas)
        signals.pipeline = pipeline
        stale_after = max(30.0, config.kafka.revoke_timeout_s + 10, config.shutdown.drain_timeout_s + 10)
        runner = web.AppRunner(
            make_app(pipeline, metrics.registry, stale_after), access_log=None, shutdown_timeout=ENDPOINTS_SHUTDOWN_S
        )
        await runner.setup()
        await web.TCPSite(runner, config.server.host, config.server.port).start()
        loop = asyncio.get_running_loop()
        log.info(
            "bridge started",
            topics=config.topics,
            group=config.kafka.group_id,
            post_api=config.post_api.url,
            port=config.server.port,
            dead_letter_topic=config.kafka.dead_letter_topic,
        )
        progress = loop.create_task(_report_progress(pipeline, config.log.progress_interval_s))
        sharing = loop.create_task(budget.run()) if budget is not None else None
        code = 0
        try:
            await pipeline.run()
        except Exception:
            log.exception("the bridge failed")
            code = EXIT_FAILED
        finally:
            for task in (progress, sharing):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await runner.cleanup()
            if dead_letters is not None:
                await dead_letters.close(DEAD_LETTER_FLUSH_S)
    log.info("bridge stopped", exit_code=code, **_summary(pipeline.totals))
    return code


async def _report_progress(pipeline: Pipeline, interval_s: float) -> None:
    last_uploaded, last_time = 0, time.monotonic()
    while True:
        await asyncio.sleep(interval_s)
        now = time.monotonic()
        totals = pipeline.totals
        held_records, held_bytes = pipeline.held
        log.info(
            "progress",
            **_summary(totals),
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


def _summary(totals: Totals) -> dict[str, object]:
    return {
        "consumed": totals.consumed,
        "uploaded": totals.uploaded,
        "dead_lettered": totals.dead_lettered,
        "dead_lettered_by_reason": totals.by_reason,
        "uploaded_by_method": dict(totals.uploaded_by_method),
        "dead_lettered_by_method": dict(totals.dead_lettered_by_method),
        "requests": totals.requests,
    }
