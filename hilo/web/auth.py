"""Authentication with roles. Every /api/ and /console/api/ route names the roles it admits.

Two kinds of credentials: the configured API bearer tokens (tools, scripts; role from configuration) and
console sessions (people signed in at /console/: role and agent id from their user, see
hilo/web/sessions.py), presented as the `hilo_session` cookie or as a bearer token. The handler finds who
is asking with `principal(request)`, and names them in audit rows with `hilo.audit.actor(principal)`: the
principal knows the door it came through (the cookie: `console`; a bearer token: `api`)."""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hilo.web.forwarded import proxies
from hilo.web.sessions import COOKIE, SESSIONS, Principal, SessionStore

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The role sets routes admit (`requires(*STAFF)`, `roles=STAFF` on a declared route).
ADMIN = ("admin",)
STAFF = ("admin", "supervisor")
EVERYONE = ("agent", "supervisor", "admin")


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


def session_store(request: web.Request) -> SessionStore | None:
    return request.app.get(SESSIONS)  # None until Redis is open


def same_origin(request: web.Request) -> bool:
    # SameSite=Strict already keeps the cookie off cross-site requests; a browser's Origin header that
    # names another host is refused as well, for older browsers and odd proxies. The host is the one the
    # browser asked for: a trusted proxy's X-Forwarded-Host, else Host (hilo/web/forwarded.py).
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin.split("://", 1)[-1] == proxies(request).host(request)


async def authenticate(request: web.Request) -> Principal | None:
    header = request.headers.get("Authorization")
    auth: TokenAuth = request.app[AUTH_KEY]
    role = auth.role_of(header)
    if role is not None:
        return Principal(role)
    sessions = session_store(request)
    if sessions is None:
        return None
    if header and header.startswith("Bearer "):
        return await sessions.lookup(header.removeprefix("Bearer ").strip())
    cookie = request.cookies.get(COOKIE)
    if cookie is None:
        return None
    if request.method not in ("GET", "HEAD", "OPTIONS") and not same_origin(request):
        return None
    who = await sessions.lookup(cookie)
    return dataclasses.replace(who, door="console") if who is not None else None


def principal(request: web.Request) -> Principal:
    """Who made this request (set by `requires`)."""
    return request[PRINCIPAL_KEY]


def requires(*roles: str) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            who = await authenticate(request)
            if who is None:
                return unauthorized("missing or invalid bearer token or console session")
            if who.role not in roles:
                return web.json_response(
                    {"error": "forbidden", "reason": f"role {who.role!r} may not do this"}, status=403
                )
            request[PRINCIPAL_KEY] = who
            return await handler(request)

        guarded.__name__ = handler.__name__
        return guarded

    return wrap


AUTH_KEY: web.AppKey[Any] = web.AppKey("auth", TokenAuth)
PRINCIPAL_KEY = web.RequestKey("principal", Principal)
