"""Bearer-token authentication with roles. Every /api/ route names the roles it admits."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TokenAuth:
    def __init__(self, tokens: dict[str, str]) -> None:
        # token -> role; empty tokens are never accepted
        self.tokens = {t: r for t, r in tokens.items() if t}

    def role_of(self, header: str | None) -> str | None:
        if not header or not header.startswith("Bearer "):
            return None
        presented = header.removeprefix("Bearer ").strip()
        for token, role in self.tokens.items():
            if hmac.compare_digest(presented.encode(), token.encode()):
                return role
        return None


def unauthorized(reason: str) -> web.Response:
    return web.json_response(
        {"error": "unauthorized", "reason": reason},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="hilo"'},
    )


def requires(*roles: str) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            auth: TokenAuth = request.app[AUTH_KEY]
            role = auth.role_of(request.headers.get("Authorization"))
            if role is None:
                return unauthorized("missing or invalid bearer token")
            if role not in roles:
                return web.json_response({"error": "forbidden", "reason": f"role {role!r} may not do this"}, status=403)
            return await handler(request)

        guarded.__name__ = handler.__name__
        return guarded

    return wrap


AUTH_KEY: web.AppKey[Any] = web.AppKey("auth", TokenAuth)
