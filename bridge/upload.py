"""CSV bodies to the Post API: one keep-alive session, a rate limit, an adaptive concurrency limit, retries.

The answer rules are hand-written because no HTTP client knows them: 200 is done; 400 goes back to the
caller (the batch holds a row the API refuses); 403 stops the application until its key works again;
408, 420, 429, 5xx, timeouts and broken connections are retried forever with exponential backoff and full
jitter, waiting at least `Retry-After`, while the concurrency limit is lowered.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import aiohttp
import structlog

from bridge.config import PostApiConfig, PostApiKeys, UploadConfig
from bridge.csvbody import CONTENT_TYPE
from bridge.methods import METHODS, MethodName
from bridge.metrics import Metrics

log = structlog.get_logger("bridge.upload")

_RETRY_AFTER_CAP_S = 3600.0
_DETAIL_LIMIT = 500
_REDACT_LIMIT = 65_536
"""Characters of an answer searched for keys: enough for any key past the detail's cut, bounded for a huge body."""


class Verdict(Enum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    """400 (or 413): the body holds something the API will never take."""


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: Verdict
    status: int
    detail: str
    attempts: int


class RateLimit:
    """Spaces requests at most `rate` a second, and holds them all while the API asked us to wait."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / rate
        self._clock = clock
        self._next = 0.0
        self._held_until = 0.0

    @property
    def rate(self) -> float:
        return 1.0 / self._interval

    @rate.setter
    def rate(self, rate: float) -> None:
        """A new rate applies from the next request on (a group member's share changed)."""
        self._next += 1.0 / rate - self._interval
        self._interval = 1.0 / rate

    def hold(self, seconds: float) -> None:
        """No request leaves before `seconds` from now (a Retry-After)."""
        self._held_until = max(self._held_until, self._clock() + seconds)

    async def acquire(self) -> None:
        while True:
            now = self._clock()
            start = max(self._next, self._held_until, now)
            if start <= now:
                self._next = now + self._interval
                return
            await asyncio.sleep(start - now)


class ConcurrencyLimit:
    """At most `limit` requests at once; the limit halves on push-back and grows by one on success (AIMD)."""

    def __init__(self, maximum: int, on_change: Callable[[int], None]) -> None:
        self._maximum = maximum
        self._limit = maximum
        self._active = 0
        self._changed = asyncio.Condition()
        self._on_change = on_change
        on_change(maximum)

    @property
    def limit(self) -> int:
        return self._limit

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._active < self._limit)
            self._active += 1

    async def __aexit__(self, *_: object) -> None:
        async with self._changed:
            self._active -= 1
            self._changed.notify_all()

    def pushed_back(self) -> None:
        self._set(max(1, self._limit // 2))

    def succeeded(self) -> None:
        self._set(min(self._maximum, self._limit + 1))

    def _set(self, limit: int) -> None:
        if limit != self._limit:
            self._limit = limit
            self._on_change(limit)


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), _RETRY_AFTER_CAP_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - time.time()), _RETRY_AFTER_CAP_S)


def post_api_tls(config: PostApiConfig) -> ssl.SSLContext | bool:
    """Certificate checks for the Post API: against `post_api.ca_file` when given, else the system's CAs."""
    if config.ca_file is None:
        return True
    return ssl.create_default_context(cafile=str(config.ca_file))


@dataclass(frozen=True, slots=True)
class _Attempt:
    status: int | None
    """None for a timeout or a broken connection."""
    label: str
    detail: str
    retry_after: float | None


class Uploader:
    """Sends CSV bodies of one method and application at a time and returns only a final answer (200, or a
    refusal); a key the API refuses stops its application's uploads of every method."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        keys: PostApiKeys,
        config: UploadConfig,
        metrics: Metrics,
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self._urls = {name: base_url + method.csv_path for name, method in METHODS.items()}
        self._keys = keys
        self._config = config
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._rate = RateLimit(config.requests_per_second)
        metrics.rate_limit.set(config.requests_per_second)
        self._concurrency = ConcurrencyLimit(config.max_in_flight, metrics.concurrency_limit.set)
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_s)
        self._refused_keys: set[int] = set()
        self._probes: dict[int, asyncio.Lock] = {}

    @property
    def rate_limit(self) -> RateLimit:
        """The requests-a-second limit, which a group budget adjusts to this member's share."""
        return self._rate

    @property
    def refused_applications(self) -> frozenset[int]:
        """Applications whose key the API refuses now (403); the bridge is not ready while any is."""
        return frozenset(self._refused_keys)

    async def deliver(self, method: MethodName, application_id: int, body: bytes, rows: int) -> Answer:
        """Send to `method` until the API accepts or refuses the body; transient failures and 403 never return."""
        attempt = 0
        app = str(application_id)
        while True:
            if application_id in self._refused_keys:
                answer = await self._probe(method, application_id, body, rows, attempt)
                attempt += 1
                if answer is None:
                    continue
                outcome = answer
            else:
                attempt += 1
                outcome = await self._send(method, application_id, body, rows, attempt)
            status = outcome.status
            if status == 200:
                self._concurrency.succeeded()
                self._metrics.rows_uploaded.labels(method, app).inc(rows)
                self._metrics.last_success.labels(app).set(time.time())
                return Answer(Verdict.ACCEPTED, 200, "", attempt)
            if status in (400, 413):
                return Answer(Verdict.REFUSED, status, outcome.detail, attempt)
            if status in (401, 403):
                self._refuse_key(application_id, outcome)
                continue
            await self._back_off(method, application_id, outcome, attempt)

    async def _probe(
        self, method: MethodName, application_id: int, body: bytes, rows: int, attempt: int
    ) -> _Attempt | None:
        """One task at a time tries a refused application again after a long wait; None means try as usual."""
        lock = self._probes.setdefault(application_id, asyncio.Lock())
        async with lock:
            if application_id not in self._refused_keys:
                return None
            await asyncio.sleep(self._config.forbidden_retry_s)
            outcome = await self._send(method, application_id, body, rows, attempt + 1)
            if outcome.status not in (401, 403):
                self._refused_keys.discard(application_id)
                self._metrics.key_refused.labels(str(application_id)).set(0)
                log.info("application key accepted again", application=application_id)
            return outcome

    def _refuse_key(self, application_id: int, outcome: _Attempt) -> None:
        if application_id not in self._refused_keys:
            self._refused_keys.add(application_id)
            self._metrics.key_refused.labels(str(application_id)).set(1)
            log.error(
                "Post API refused the application's key; uploads for it stop until it works again",
                application=application_id,
                status=outcome.status,
                detail=outcome.detail,
                retry_every_s=self._config.forbidden_retry_s,
            )

    async def _back_off(self, method: MethodName, application_id: int, outcome: _Attempt, attempt: int) -> None:
        self._concurrency.pushed_back()
        app = str(application_id)
        self._metrics.upload_retries.labels(method, app, outcome.label).inc()
        ceiling = min(self._config.retry_max_s, self._config.retry_base_s * 2 ** min(attempt - 1, 30))
        delay = self._rng.uniform(0, ceiling)
        if outcome.retry_after is not None:
            self._rate.hold(outcome.retry_after)
            self._metrics.retry_after_wait.labels(method, app).inc(outcome.retry_after)
            delay = max(delay, outcome.retry_after)
        log.warning(
            "upload failed, retrying",
            method=method,
            application=application_id,
            status=outcome.label,
            attempt=attempt,
            retry_in_s=round(delay, 3),
            retry_after_s=outcome.retry_after,
            detail=outcome.detail,
        )
        await asyncio.sleep(delay)

    async def _send(self, method: MethodName, application_id: int, body: bytes, rows: int, attempt: int) -> _Attempt:
        key = self._keys.for_application(application_id)
        if key is None:
            return _Attempt(403, "403", "no key is configured for this application", None)
        params = {"post_api_key": key.get_secret_value(), "application_id": str(application_id)}
        app = str(application_id)
        async with self._concurrency:
            await self._rate.acquire()
            self._metrics.uploads_in_flight.inc()
            started = time.monotonic()
            try:
                async with self._session.post(
                    self._urls[method],
                    params=params,
                    data=body,
                    headers={"Content-Type": CONTENT_TYPE},
                    timeout=self._timeout,
                ) as response:
                    text = await response.text(errors="replace")
                    outcome = _Attempt(
                        response.status,
                        str(response.status),
                        # Redacted whole before it is cut, so no part of a key survives at the cut.
                        self._keys.redact(text[:_REDACT_LIMIT])[:_DETAIL_LIMIT].strip(),
                        retry_after_s(response.headers.get("Retry-After")),
                    )
            except TimeoutError:
                outcome = _Attempt(None, "timeout", f"no answer within {self._config.timeout_s:g} s", None)
            except aiohttp.ClientError as exc:
                # The exception's text can carry the request URL and with it the key: name its type only.
                outcome = _Attempt(None, "connection_error", type(exc).__name__, None)
            finally:
                self._metrics.uploads_in_flight.dec()
        latency = time.monotonic() - started
        self._metrics.upload_requests.labels(method, app, outcome.label).inc()
        self._metrics.upload_latency.labels(method, app).observe(latency)
        log.info(
            "upload",
            method=method,
            application=application_id,
            rows=rows,
            bytes=len(body),
            status=outcome.label,
            latency_ms=round(latency * 1000, 1),
            attempt=attempt,
        )
        return outcome
