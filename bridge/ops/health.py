"""The operator's HTTP endpoints: `/healthz` (the loop turns), `/readyz` (able to move events), `/metrics`."""

from __future__ import annotations

import time
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class Observed(Protocol):
    @property
    def heartbeat(self) -> float:
        """`time.monotonic()` of the owner loop's last turn."""
        ...

    def not_ready(self) -> list[str]:
        """Why the bridge cannot move events now; empty when it can."""
        ...

    def stalled(self) -> list[str]:
        """Partitions that stopped moving, with why: listed, but not failing readiness by themselves."""
        ...


def make_app(observed: Observed, registry: CollectorRegistry, stale_after_s: float) -> web.Application:
    """The endpoints' aiohttp application; the loop counts as stuck after `stale_after_s` without a turn."""

    async def healthz(_: web.Request) -> web.Response:
        silent = time.monotonic() - observed.heartbeat
        if silent > stale_after_s:
            return web.json_response({"alive": False, "loop_silent_s": round(silent, 1)}, status=503)
        return web.json_response({"alive": True})

    async def readyz(_: web.Request) -> web.Response:
        reasons = observed.not_ready()
        body = {"ready": not reasons, "reasons": reasons, "stalled": observed.stalled()}
        return web.json_response(body, status=503 if reasons else 200)

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
