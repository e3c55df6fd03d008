"""The console's live feed does not die silently: when its Redis subscription fails, the socket is closed
with 1013 (try again later), and the page (console/static/api.js) reconnects and subscribes again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from console.ws import SOCKETS, console_ws
from hilo.settings import Settings
from hilo.web.auth import AUTH_KEY, TokenAuth
from hilo.web.keys import POOL, REDIS, SETTINGS

TOKEN = "admin-token-of-this-test"


class FailingPubSub:
    """A subscription whose connection fails on the test's word."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[dict[str, Any] | Exception] = asyncio.Queue()
        self.patterns: list[str] = []

    async def psubscribe(self, pattern: str) -> None:
        self.patterns.append(pattern)

    async def listen(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            event = await self.events.get()
            if isinstance(event, Exception):
                raise event
            yield event

    async def aclose(self) -> None:
        return None


class OneSubscription:
    def __init__(self) -> None:
        self.subscription = FailingPubSub()

    def pubsub(self) -> FailingPubSub:
        return self.subscription


async def test_a_redis_failure_closes_the_feed_so_the_page_reconnects() -> None:
    redis = OneSubscription()
    app = web.Application()
    app[REDIS] = cast(Any, redis)
    app[POOL] = cast(Any, None)  # an admin's scope (everything) reads nothing
    app[SETTINGS] = Settings(namespace="t")
    app[AUTH_KEY] = TokenAuth({TOKEN: "admin"})
    app[SOCKETS] = set()
    app.router.add_get("/console/ws", console_ws)
    async with TestClient(TestServer(app)) as client:
        ws = await client.ws_connect("/console/ws", headers={"Authorization": f"Bearer {TOKEN}"})
        hello = await ws.receive_json(timeout=5)
        assert hello["type"] == "hello" and hello["role"] == "admin"
        redis.subscription.events.put_nowait({"type": "pmessage", "data": b'{"type": "screenpop"}'})
        assert (await ws.receive_json(timeout=5))["type"] == "screenpop"
        redis.subscription.events.put_nowait(ConnectionError("Connection closed by server."))
        closed = await ws.receive(timeout=5)  # not a socket left open with nothing coming through it
        assert closed.type == WSMsgType.CLOSE and closed.data == WSCloseCode.TRY_AGAIN_LATER
        await ws.close()
