"""The ARI events socket outlives bad frames (a frame that is not JSON, or JSON that is not an object, is
logged and skipped, and the events after it still arrive on the same connection), and carries several apps'
events, each to its own app's handlers."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from asterisk.ari import AriClient
from asterisk.events import Event


async def test_a_bad_frame_is_skipped_and_the_events_go_on(caplog: pytest.LogCaptureFixture) -> None:
    frames = [
        "{not json",
        "[1, 2, 3]",
        '"a string"',
        json.dumps({"type": "StasisStart", "application": "hilo", "channel": {"id": "c1", "name": "PJSIP/x"}}),
    ]
    done = asyncio.Event()
    connections = 0

    async def events(request: web.Request) -> web.WebSocketResponse:
        nonlocal connections
        connections += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for frame in frames:
            await ws.send_str(frame)
        await done.wait()
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ari/events", events)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    client = AriClient(str(server.make_url("/ari")), "u", "p", "hilo", heartbeat=30)
    seen: asyncio.Queue[Event] = asyncio.Queue()
    client.handlers.append(seen.put_nowait)
    caplog.set_level(logging.ERROR, logger="asterisk.ari")
    await client.start()
    try:
        event = await asyncio.wait_for(seen.get(), 5)
        assert event.type == "StasisStart"
        assert client._task is not None and not client._task.done(), "the events task died"
        assert connections == 1, "the socket was dropped for a bad frame"
        assert client.connected.is_set()
        skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
        assert len(skipped) == 3, skipped
    finally:
        done.set()
        await client.close()
        await server.close()


def _frame(app: str, kind: str, **fields: object) -> str:
    return json.dumps({"type": kind, "application": app, **fields})


async def test_another_app_on_the_socket_gets_only_its_own_events() -> None:
    """One socket serves the call app and presence's app (`app=hilo,hilo-presence`): each event goes to the
    handlers of the app ARI sent it for, so the call app never sees an event twice through the other's
    subscriptions (a trunk caller's key read twice), whatever the other app follows."""
    key = {"digit": "1", "channel": {"id": "c1", "name": "PJSIP/carrier-test-00000001"}}
    frames = [
        _frame("hilo", "ChannelDtmfReceived", **key),
        _frame("hilo-presence", "ChannelDtmfReceived", **key),  # were presence to follow the trunk's endpoint
        _frame("hilo-presence", "EndpointStateChange", endpoint={"technology": "PJSIP", "resource": "agent-bob"}),
    ]
    done = asyncio.Event()
    apps: list[str] = []

    async def events(request: web.Request) -> web.WebSocketResponse:
        apps.append(request.query["app"])
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for frame in frames:
            await ws.send_str(frame)
        await done.wait()
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ari/events", events)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    client = AriClient(str(server.make_url("/ari")), "u", "p", "hilo", heartbeat=30)
    calls: list[Event] = []
    presence: asyncio.Queue[Event] = asyncio.Queue()
    client.handlers.append(calls.append)
    client.add_app("hilo-presence", presence.put_nowait)
    await client.start()
    try:
        got = [await asyncio.wait_for(presence.get(), 5) for _ in range(2)]
        assert apps == ["hilo,hilo-presence"]
        assert [e.type for e in got] == ["ChannelDtmfReceived", "EndpointStateChange"]
        assert [(e.type, e.application) for e in calls] == [("ChannelDtmfReceived", "hilo")]
    finally:
        done.set()
        await client.close()
        await server.close()


def test_the_main_app_cannot_be_added_again() -> None:
    client = AriClient("http://127.0.0.1:1/ari", "u", "p", "hilo")
    with pytest.raises(ValueError, match="'hilo' is already"):
        client.add_app("hilo", lambda _: None)
