"""The ARI events socket outlives bad frames: a frame that is not JSON, or JSON that is not an object, is
logged and skipped, and the events after it still arrive on the same connection."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from asterisk.ari import AriClient
from asterisk.events import Event

KEYS_TWICE = (
    "ARI sends each event of a trunk caller's channel twice (app and endpoint subscriptions), so keys are"
    " read twice; a frame dedupe in asterisk/ari.py fixed it but stopped agents answering in the load test's"
    " pipeline (tests/stack/test_loadtest.py), so it was taken out until that is understood: docs/limits.md"
)


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


def _key(digit: str, at: str) -> str:
    return json.dumps(
        {
            "type": "ChannelDtmfReceived",
            "timestamp": at,
            "digit": digit,
            "duration_ms": 120,
            "channel": {"id": "c1", "name": "PJSIP/carrier-test-00000001"},
            "application": "hilo",
        }
    )


@pytest.mark.xfail(strict=True, reason=KEYS_TWICE)
def test_an_event_sent_once_per_subscription_is_handled_once() -> None:
    """A trunk caller's channel is in the app and on the PJSIP endpoints the app follows: ARI sends each of
    its events twice. A key pressed twice is two events (two moments), and both count."""
    client = AriClient("http://127.0.0.1:1/ari", "u", "p", "hilo")
    seen: list[Event] = []
    client.handlers.append(seen.append)
    first, again = _key("1", "2026-12-07T20:36:33.156+0000"), _key("1", "2026-12-07T20:36:33.496+0000")
    for frame in (first, first, again, _key("0", "2026-12-07T20:36:33.836+0000"), again):
        client._dispatch_text(frame)
    assert [(e.raw["digit"], e.raw["timestamp"][-10:]) for e in seen] == [
        ("1", "3.156+0000"),
        ("1", "3.496+0000"),
        ("0", "3.836+0000"),
    ]
