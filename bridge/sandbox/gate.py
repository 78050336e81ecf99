"""Who may ask the registry stand-in: HTTP basic auth or a bearer token, as a secured schema registry demands."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import BasicAuth, web


class Gate:
    """An aiohttp middleware that refuses a request without the configured credentials (none configured: all pass)."""

    def __init__(
        self, basic_auth: tuple[str, str] | None, bearer_token: str | None, refusal: Callable[[], Exception]
    ) -> None:
        self._basic_auth = basic_auth
        self._bearer_token = bearer_token
        self._refusal = refusal
        self.refused = 0

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        demands = self._basic_auth is not None or self._bearer_token is not None
        if demands and not self._authorized(request.headers.get("Authorization", "")):
            self.refused += 1
            raise self._refusal()
        return await handler(request)

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme == "Bearer" and self._bearer_token is not None:
            return hmac.compare_digest(token.encode(), self._bearer_token.encode())
        if self._basic_auth is None:
            return False
        try:
            given = BasicAuth.decode(header, encoding="utf-8")
        except ValueError:
            return False
        user, password = self._basic_auth
        # Both compared whatever the first gives, so the timing tells nothing.
        return hmac.compare_digest(given.login.encode(), user.encode()) & hmac.compare_digest(
            given.password.encode(), password.encode()
        )
