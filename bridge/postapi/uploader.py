"""CSV bodies to the Post API: one keep-alive session, a rate limit, an adaptive concurrency limit, retries.

The answer rules are hand-written because no HTTP client knows them: 200 is done; 400 goes back to the
caller (the batch holds a row the API refuses); 403 stops the application until its key works again;
408, 420, 429, 5xx, timeouts and broken connections are retried forever with exponential backoff and full
jitter, waiting at least `Retry-After`, while the concurrency limit is lowered.

What is sent is asked of the caller's payload once the request has its concurrency slot and its rate token, right
before it goes on the wire, since rows leave a body while it waits (their partition was revoked, they expired); a
payload with nothing left ends the delivery at once, also while it waits on a refused key. An answer's body is read
as bytes and decoded leniently: a 200 is accepted whatever its body or its charset says.

The HTTP exchange itself is behind `Transport` (aiohttp in the service, a scripted Post API in the runtime's tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import aiohttp
import structlog

from bridge.config.model import PostApiConfig, PostApiKeys, UploadConfig
from bridge.ops.metrics import Metrics
from bridge.postapi.csv_body import CONTENT_TYPE
from bridge.postapi.methods import METHODS, MethodName
from bridge.runtime.clock import Clock

log = structlog.get_logger("bridge.upload")

_RETRY_AFTER_CAP_S = 3600.0
_EARLY_S = 0.001
_DETAIL_LIMIT = 500
_REDACT_LIMIT = 65_536
"""Characters of an answer searched for keys: enough for any key past the detail's cut, bounded for a huge body."""


class Verdict(Enum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    """400 (or 413): the body holds something the API will never take."""
    WITHDRAWN = "withdrawn"
    """The payload had nothing left to send."""


class Payload(Protocol):
    """What one delivery sends, as it is at each attempt."""

    async def body(self) -> tuple[bytes, int] | None:
        """The body to send now and its row count, or None when nothing is left to send."""
        ...

    def withdrawn(self) -> bool:
        """Nothing is left to send (every row's partition was revoked): checked while the delivery waits."""
        ...


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    retry_after: str | None
    body: bytes


class Transport(Protocol):
    async def post(self, url: str, params: Mapping[str, str], body: bytes, timeout_s: float) -> Reply:
        """One request; raises TimeoutError when no answer came in time, ConnectionError when the connection broke
        (its text names the failure's kind only: an exception's own text can carry the URL and the key)."""
        ...


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: Verdict
    status: int
    detail: str
    attempts: int


class RateLimit:
    """Spaces requests at most `rate` a second, and holds them all while the API asked us to wait."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
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
            # An event loop wakes a sleeper up to its clock's resolution early: a millisecond early is on time.
            if start <= now + _EARLY_S:
                self._next = max(now, start) + self._interval
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


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None when absent or unreadable; `now` is
    Unix time."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), _RETRY_AFTER_CAP_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - now), _RETRY_AFTER_CAP_S)


def post_api_tls(config: PostApiConfig) -> ssl.SSLContext | bool:
    """Certificate checks for the Post API: against `post_api.ca_file` when given, else the system's CAs."""
    if config.ca_file is None:
        return True
    return ssl.create_default_context(cafile=str(config.ca_file))


class AiohttpTransport:
    """The service's transport: one keep-alive aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def post(self, url: str, params: Mapping[str, str], body: bytes, timeout_s: float) -> Reply:
        try:
            async with self._session.post(
                url,
                params=params,
                data=body,
                headers={"Content-Type": CONTENT_TYPE},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                return Reply(response.status, response.headers.get("Retry-After"), await _body(response))
        except aiohttp.ClientError as exc:
            raise ConnectionError(type(exc).__name__) from None


@dataclass(frozen=True, slots=True)
class _Attempt:
    status: int | None
    """None for a timeout or a broken connection."""
    label: str
    detail: str
    retry_after: float | None


@dataclass
class _Refusal:
    """An application whose key the API refuses: when it is probed next, and whether a probe is under way."""

    next_probe: float
    probing: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: list[object] = field(default_factory=list)
    """The deliveries waiting on the key, longest first: the first probes, so each batch is looked at in turn (and its
    expired rows dead-lettered) rather than the newest one first."""

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class _Unsent(Enum):
    WITHDRAWN = "nothing was left to send"
    REFUSED = "the key was refused while the request waited for its turn"


REFUSAL_CHECK_S = 1.0
"""How often a delivery waiting on a refused key looks whether its rows left it (their partitions were revoked)."""


class Uploader:
    """Sends CSV bodies of one application at a time and returns only a final answer (200, or a refusal)."""

    def __init__(
        self,
        transport: Transport,
        base_url: str,
        keys: PostApiKeys,
        config: UploadConfig,
        metrics: Metrics,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self._transport = transport
        self._urls = {name: base_url + method.csv_path for name, method in METHODS.items()}
        self._keys = keys
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._rng = rng or random.Random()
        self._rate = RateLimit(config.requests_per_second, clock.now)
        metrics.rate_limit.set(config.requests_per_second)
        self._concurrency = ConcurrencyLimit(config.max_in_flight, metrics.concurrency_limit.set)
        self._refusals: dict[int, _Refusal] = {}
        self._failing = False

    @property
    def failing(self) -> bool:
        """The last request answered with a failure the bridge retries (timeout, 429, 5xx, a broken connection)."""
        return self._failing

    @property
    def rate_limit(self) -> RateLimit:
        """The requests-a-second limit, which a group budget adjusts to this member's share."""
        return self._rate

    @property
    def refused_applications(self) -> frozenset[int]:
        """Applications whose key the API refuses now (403); the bridge is not ready while any is."""
        return frozenset(self._refusals)

    async def deliver(self, method: MethodName, application_id: int, payload: Payload) -> Answer:
        """Send to `method` until the API accepts or refuses the payload, or it empties; transient failures and 403
        never return. A key the API refuses stops its application's uploads of every method: one delivery probes it
        every `forbidden_retry_s`, the others wait for its answer."""
        attempt = 0
        while True:
            probing = False
            if application_id in self._refusals:
                turn = await self._refusal_turn(application_id, payload)
                if turn is None:
                    return Answer(Verdict.WITHDRAWN, 0, "", attempt)
                probing = turn
            attempt += 1
            try:
                outcome = await self._attempt(method, application_id, payload, attempt, probing)
            finally:
                if probing and (refusal := self._refusals.get(application_id)) is not None:
                    refusal.probing = False
                    refusal.notify()
            if isinstance(outcome, Answer):
                return outcome
            if outcome is not None:
                await self._back_off(method, application_id, outcome, attempt)

    async def _refusal_turn(self, application_id: int, payload: Payload) -> bool | None:
        """Wait while the application's key is refused: True when this delivery is to probe it now, False once the
        key works again, None when the payload emptied meanwhile."""
        refusal = self._refusals.get(application_id)
        if refusal is None:
            return False
        turn = object()
        refusal.waiting.append(turn)
        try:
            while self._refusals.get(application_id) is refusal:
                if payload.withdrawn():
                    return None
                now = self._clock.now()
                if not refusal.probing and now >= refusal.next_probe and refusal.waiting[0] is turn:
                    refusal.probing = True
                    return True
                wait = REFUSAL_CHECK_S if refusal.probing else min(REFUSAL_CHECK_S, max(0.0, refusal.next_probe - now))
                changed = refusal.changed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), wait)
            # A new refusal of the same application (the key refused again): wait on that one.
            return await self._refusal_turn(application_id, payload) if application_id in self._refusals else False
        finally:
            first = refusal.waiting[0] is turn
            refusal.waiting.remove(turn)
            if first:
                refusal.notify()

    async def _attempt(
        self, method: MethodName, application_id: int, payload: Payload, attempt: int, probing: bool
    ) -> Answer | _Attempt | None:
        """One request of the payload as it is now: a final answer, a failure to back off from, or None (403)."""
        sent = await self._send(method, application_id, payload, attempt, probing)
        if sent is _Unsent.WITHDRAWN:
            return Answer(Verdict.WITHDRAWN, 0, "", attempt - 1)
        if sent is _Unsent.REFUSED:
            return None
        outcome, rows = sent
        status = outcome.status
        if probing and (refusal := self._refusals.get(application_id)) is not None:
            if status in (200, 400, 413):
                del self._refusals[application_id]
                refusal.notify()
                self._metrics.key_refused.labels(str(application_id)).set(0)
                log.info("application key accepted again", application=application_id)
            elif status not in (401, 403):
                # A 429, a 5xx or a timeout says nothing of the key: it stays refused, probed again an interval on.
                refusal.next_probe = self._clock.now() + self._config.forbidden_retry_s
        if status == 200:
            app = str(application_id)
            self._failing = False
            self._concurrency.succeeded()
            self._metrics.rows_uploaded.labels(method, app).inc(rows)
            self._metrics.last_success.labels(app).set(self._clock.wall())
            return Answer(Verdict.ACCEPTED, 200, "", attempt)
        if status in (400, 413):
            return Answer(Verdict.REFUSED, status, outcome.detail, attempt)
        if status in (401, 403):
            self._refuse_key(application_id, outcome)
            return None
        return outcome

    def _refuse_key(self, application_id: int, outcome: _Attempt) -> None:
        next_probe = self._clock.now() + self._config.forbidden_retry_s
        refusal = self._refusals.get(application_id)
        if refusal is not None:
            refusal.next_probe = next_probe
            return
        self._refusals[application_id] = _Refusal(next_probe)
        self._metrics.key_refused.labels(str(application_id)).set(1)
        log.error(
            "Post API refused the application's key; uploads for it stop until it works again",
            application=application_id,
            status=outcome.status,
            detail=outcome.detail,
            retry_every_s=self._config.forbidden_retry_s,
        )

    async def _back_off(self, method: MethodName, application_id: int, outcome: _Attempt, attempt: int) -> None:
        self._failing = True
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

    def _detail(self, answer: bytes) -> str:
        """The readable start of an answer's body, whatever its bytes; the one place an answer becomes text.

        Redacted whole before it is cut, so no part of a key survives at the cut.
        """
        text = answer[: _REDACT_LIMIT * 4].decode("utf-8", "replace")
        return self._keys.redact(text[:_REDACT_LIMIT])[:_DETAIL_LIMIT].strip()

    async def _send(
        self, method: MethodName, application_id: int, payload: Payload, attempt: int, probing: bool
    ) -> tuple[_Attempt, int] | _Unsent:
        """One request, its body asked for once it has its slot and its token (unless a probe, it is not sent when the
        key was refused meanwhile)."""
        key = self._keys.for_application(application_id)
        if key is None:
            return _Attempt(403, "403", "no key is configured for this application", None), 0
        params = {"post_api_key": key.get_secret_value(), "application_id": str(application_id)}
        app = str(application_id)
        async with self._concurrency:
            await self._rate.acquire()
            if not probing and application_id in self._refusals:
                return _Unsent.REFUSED
            current = await payload.body()
            if current is None:
                return _Unsent.WITHDRAWN
            body, rows = current
            self._metrics.uploads_in_flight.inc()
            started = self._clock.now()
            try:
                reply = await self._transport.post(self._urls[method], params, body, self._config.timeout_s)
                outcome = _Attempt(
                    reply.status,
                    str(reply.status),
                    self._detail(reply.body),
                    retry_after_s(reply.retry_after, self._clock.wall()),
                )
            except TimeoutError:
                outcome = _Attempt(None, "timeout", f"no answer within {self._config.timeout_s:g} s", None)
            except ConnectionError as exc:
                outcome = _Attempt(None, "connection_error", str(exc), None)
            finally:
                self._metrics.uploads_in_flight.dec()
        latency = self._clock.now() - started
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
        return outcome, rows


async def _body(response: aiohttp.ClientResponse) -> bytes:
    """The answer's body as bytes, not text(): a charset that decodes no text would raise. A body that cannot be
    read at all (a broken Content-Encoding, a connection cut or stalled mid-body) changes nothing: the status line
    already said what the API did with the request, and a 200 sent again would count its events twice."""
    try:
        return await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"(the answer's body could not be read: {type(exc).__name__})".encode()
