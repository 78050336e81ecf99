"""The Post API sandbox: answers every method's import endpoints as AppMetrica documents them.

It judges rows by its own reading of the Post API pages (``documented``), never by the bridge's declaration, injects
faults on request, and keeps what it accepted so tests and benchmarks can compare it with what was sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import structlog
from aiohttp import web
from multidict import MultiMapping
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bridge.postapi.methods import METHODS, Method, Window
from bridge.postapi.rules import MAX_BODY_BYTES
from bridge.sandbox.config import Faults, Keys, explain
from bridge.sandbox.faults import FaultInjector
from bridge.sandbox.intake import BadRequestError, Batch, read_csv_batch, read_query_batch
from bridge.sandbox.serving import LocalServer
from bridge.sandbox.state import RequestRecord, SandboxState

_log = structlog.get_logger("bridge.sandbox")

_Reader = Callable[[Method, MultiMapping[str], bytes], Batch]
_PAGE = 1000
_BY_NAME: dict[str, Method] = {name: method for name, method in METHODS.items()}
_Settings = TypeVar("_Settings", Faults, Keys)


class SandboxOptions(BaseModel):
    """How a sandbox starts; keys and faults can change while it runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keys: Keys = Keys()
    faults: Faults = Faults()
    seed: int | None = None
    """Seeds the fault draws so a run can be replayed."""
    max_future_s: float | None = Field(None, ge=0)
    """Refuse rows stamped further ahead of the sandbox's clock than this (the real API does not say)."""
    keep_events: bool = True
    """Benchmarks sending millions of rows can keep counters only."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Answer:
    status: int | None
    rows: int = 0
    detail: str = ""
    retry_after: int | None = None

    def response(self, faults: Faults) -> web.Response:
        assert self.status is not None, "a dropped connection gets no response"
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        if faults.answer_encoding is not None:
            headers["Content-Encoding"] = faults.answer_encoding
        charset = faults.answer_charset
        if charset is None:
            return web.Response(status=self.status, text=self.detail, headers=headers)
        # A header, not charset=: aiohttp would encode the text with it, and fail for a charset it does not know.
        headers["Content-Type"] = f"text/plain; charset={charset}"
        return web.Response(status=self.status, body=self.detail.encode(), headers=headers)


class Sandbox(LocalServer):
    """A local AppMetrica Post API for every method, in process: ``url = await Sandbox().start()``."""

    def __init__(self, options: SandboxOptions | None = None) -> None:
        self.options = options or SandboxOptions()
        self._keys = self.options.keys
        self.state = SandboxState()
        self._injector = FaultInjector(self.options.faults, self.options.seed)
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        for method in METHODS.values():
            app.router.add_post(method.path, self._importer(method, read_query_batch))
            app.router.add_post(method.csv_path, self._importer(method, read_csv_batch))
        app.router.add_get("/sandbox/stats", self._stats)
        app.router.add_get("/sandbox/events", self._events)
        app.router.add_get("/sandbox/rows/{method}", self._rows)
        app.router.add_get("/sandbox/requests", self._requests)
        app.router.add_post("/sandbox/control", self._control)
        app.router.add_post("/sandbox/reset", self._reset)
        super().__init__(app)

    @property
    def faults(self) -> Faults:
        return self._injector.faults

    @property
    def keys(self) -> Keys:
        return self._keys

    def set_faults(self, **changes: Any) -> Faults:
        """Change some fault settings, keeping the others; raises pydantic.ValidationError."""
        self._injector.faults = _changed(self.faults, changes)
        return self.faults

    def set_keys(self, **changes: Any) -> Keys:
        """Change the accepted key(s), e.g. ``set_keys(post_api_key="new")``; raises pydantic.ValidationError."""
        self._keys = _changed(self._keys, changes)
        return self._keys

    def reset(self) -> None:
        """Forget accepted events, the request log and the counters; keys and faults stay."""
        self.state.clear()
        self._injector.reset()

    def _importer(self, method: Method, read: _Reader) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._import(request, method, read)

        return handle

    async def _import(self, request: web.Request, method: Method, read: _Reader) -> web.StreamResponse:
        arrived = time.monotonic()
        state = self.state
        state.in_flight += 1
        state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
        answer = _Answer(None, detail="unanswered: the request failed before an answer was made")
        try:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                answer = _Answer(413, detail=f"the body is larger than {MAX_BODY_BYTES} bytes")
                return answer.response(self.faults)
            fault = self._injector.decide(arrived)
            if self.faults.latency_ms:
                await asyncio.sleep(self.faults.latency_ms / 1000)
            if fault is None:
                answer = self._accept(method, request.query, body, read)
            else:
                answer = _Answer(fault.status, detail=fault.detail, retry_after=fault.retry_after)
                if fault.status is None:
                    assert request.transport is not None  # the handler runs on an open connection
                    request.transport.close()
                    # aiohttp wants a response all the same; none reaches the closed connection.
                    return web.Response()
            return answer.response(self.faults)
        finally:
            state.in_flight -= 1
            answered = time.monotonic()
            state.record(
                RequestRecord(
                    arrived, answered, request.path, answer.rows, answer.status, answer.retry_after, answer.detail
                )
            )
            _log.info(
                "postapi_request",
                path=request.path,
                status=answer.status or "dropped",
                rows=answer.rows,
                retry_after=answer.retry_after,
                detail=answer.detail,
                ms=round((answered - arrived) * 1000, 1),
            )

    def _accept(self, method: Method, query: MultiMapping[str], body: bytes, read: _Reader) -> _Answer:
        key = query.get("post_api_key", "")
        refusal = self._keys.refusal(key, ())
        if refusal is not None:
            return _Answer(403, detail=refusal)
        try:
            batch = read(method, query, body)
        except BadRequestError as exc:
            return _Answer(400, detail=str(exc))
        refusal = self._keys.refusal(key, batch.application_ids())
        if refusal is not None:
            return _Answer(403, len(batch), refusal)
        try:
            batch.check(Window(time.time(), self.options.max_future_s), self.faults.refuse_event_names)
        except BadRequestError as exc:
            return _Answer(400, len(batch), str(exc))
        self.state.accept(method.name, len(batch), batch.events() if self.options.keep_events else None)
        return _Answer(200, len(batch))

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.stats())

    async def _events(self, request: web.Request) -> web.Response:
        events = self.state.events
        window = _window(request)
        return web.json_response({"total": len(events), "offset": window.start, "events": events[window]})

    async def _rows(self, request: web.Request) -> web.Response:
        name = request.match_info["method"]
        method = _BY_NAME.get(name)
        if method is None:
            raise web.HTTPNotFound(text=f"no method {name!r}; the methods are {', '.join(METHODS)}")
        rows = self.state.kept[method.name]
        window = _window(request)
        return web.json_response({"method": name, "total": len(rows), "offset": window.start, "rows": rows[window]})

    async def _requests(self, request: web.Request) -> web.Response:
        requests = self.state.requests
        window = _window(request)
        page = [dataclasses.asdict(entry) for entry in requests[window]]
        return web.json_response({"total": len(requests), "offset": window.start, "requests": page})

    async def _control(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="the body is not JSON") from None
        if not isinstance(changes, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object")
        unknown = sorted(set(changes) - set(Faults.model_fields) - set(Keys.model_fields))
        if unknown:
            raise web.HTTPBadRequest(text=f"unknown setting {', '.join(map(repr, unknown))}")
        try:
            # Both are validated before either applies, so a refused change changes nothing.
            faults = _changed(self.faults, {k: v for k, v in changes.items() if k in Faults.model_fields})
            keys = _changed(self._keys, {k: v for k, v in changes.items() if k in Keys.model_fields})
        except ValidationError as exc:
            raise web.HTTPBadRequest(text=explain(exc)) from None
        self._injector.faults, self._keys = faults, keys
        return web.json_response(self._settings())

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response(self.state.stats())

    def _settings(self) -> dict[str, object]:
        """The current settings, keys reduced to which applications have one."""
        return {
            "faults": self.faults.model_dump(mode="json"),
            "keys": {
                "post_api_key_set": self.keys.post_api_key is not None,
                "application_id": self.keys.application_id,
                "apps": sorted(self.keys.apps),
            },
        }


def _window(request: web.Request) -> slice:
    """The ``offset``/``limit`` query of a listing endpoint as a slice."""
    try:
        offset = int(request.query.get("offset", "0"))
        limit = int(request.query.get("limit", str(_PAGE)))
    except ValueError:
        raise web.HTTPBadRequest(text="offset and limit must be integers") from None
    if offset < 0 or limit < 0:
        raise web.HTTPBadRequest(text="offset and limit must not be negative")
    return slice(offset, offset + limit)


def _changed(settings: _Settings, changes: Mapping[str, Any]) -> _Settings:
    return type(settings).model_validate({**settings.model_dump(), **changes})
