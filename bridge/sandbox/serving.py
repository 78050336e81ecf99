"""Running an aiohttp application on a local port, in process, for the sandbox and the registry."""

from __future__ import annotations

import ssl
from pathlib import Path
from types import TracebackType
from typing import Self

from aiohttp import web


class LocalServer:
    """An aiohttp application started and stopped in the caller's event loop; it may start again after a stop."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._url is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._url

    async def start(self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None) -> str:
        """Listen on ``host:port`` (0: a free port), over TLS when given, and return the server's URL."""
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        # aiohttp's access log prints the query string, which carries the Post API key.
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, ssl_context=tls).start()
        except BaseException:
            await runner.cleanup()
            raise
        bound_port = runner.addresses[0][1]
        self._runner = runner
        scheme = "https" if tls is not None else "http"
        self._url = f"{scheme}://[{host}]:{bound_port}" if ":" in host else f"{scheme}://{host}:{bound_port}"
        return self._url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner, self._url = self._runner, None, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def server_tls(cert_file: Path, key_file: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A TLS server context from a PEM certificate chain and its key; with `client_ca`, clients must present a
    certificate that CA issued (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
