"""Who is asking: the API bearer token, or a console session as bearer token or cookie (cookie-carried
changes only from the page's own origin)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import fakeredis
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from hilo.audit import actor
from hilo.web.auth import AUTH_KEY, TokenAuth, authenticate, same_origin
from hilo.web.sessions import COOKIE, SESSIONS, Principal, SessionStore


@pytest.fixture
async def app() -> AsyncIterator[web.Application]:
    app = web.Application()
    redis = fakeredis.FakeAsyncRedis()
    app[SESSIONS] = SessionStore(redis, "unit")
    app[AUTH_KEY] = TokenAuth({"admin-token-123": "admin"})
    yield app
    await redis.aclose()


async def new_session(app: web.Application) -> str:
    token, _ = await app[SESSIONS].create("bob", "agent", "bob")
    return token


def request(app: web.Application, method: str = "GET", **headers: str) -> web.Request:
    return make_mocked_request(method, "/console/api/me", headers={"Host": "127.0.0.1:8080", **headers}, app=app)


async def test_the_api_token_is_an_admin(app: web.Application) -> None:
    assert await authenticate(request(app, Authorization="Bearer admin-token-123")) == Principal("admin")


async def test_a_session_token_works_as_bearer_or_cookie(app: web.Application) -> None:
    token = await new_session(app)
    by_header = await authenticate(request(app, Authorization=f"Bearer {token}"))
    by_cookie = await authenticate(request(app, Cookie=f"{COOKIE}={token}"))
    assert by_header is not None and by_cookie is not None
    assert (by_header.role, by_header.agent_id, by_header.username) == ("agent", "bob", "bob")
    # the same person, through another door: the cookie is the console's, a bearer token the API's
    assert (by_header.door, by_cookie.door) == ("api", "console")
    assert replace(by_cookie, door="api") == by_header
    assert (actor(by_header), actor(by_cookie)) == ("user:bob@api", "user:bob@console")


async def test_the_api_token_is_named_by_its_role_through_the_api(app: web.Application) -> None:
    who = await authenticate(request(app, Authorization="Bearer admin-token-123"))
    assert who is not None and actor(who) == "token:admin@api"
    assert "admin-token-123" not in actor(who)


async def test_nothing_or_a_wrong_token_is_nobody(app: web.Application) -> None:
    assert await authenticate(request(app)) is None
    assert await authenticate(request(app, Authorization="Bearer nope")) is None
    assert await authenticate(request(app, Cookie=f"{COOKIE}=nope")) is None


async def test_a_cookie_carried_change_from_another_origin_is_refused(app: web.Application) -> None:
    token = await new_session(app)
    cookie = f"{COOKIE}={token}"
    assert await authenticate(request(app, "POST", Cookie=cookie, Origin="http://127.0.0.1:8080")) is not None
    assert await authenticate(request(app, "POST", Cookie=cookie)) is not None  # no Origin: same-site tools
    assert await authenticate(request(app, "POST", Cookie=cookie, Origin="http://evil.example")) is None
    # A bearer token is not sent by browsers on their own, so it needs no origin check.
    assert await authenticate(request(app, "POST", Authorization=f"Bearer {token}", Origin="http://x")) is not None


def test_same_origin_compares_host_and_port(app: web.Application) -> None:
    assert same_origin(request(app, Origin="http://127.0.0.1:8080"))
    assert same_origin(request(app, Origin="https://127.0.0.1:8080"))
    assert not same_origin(request(app, Origin="http://127.0.0.1:9090"))
    assert not same_origin(request(app, Origin="null"))
