"""`GET /console/ws`: the console's live feed. A signed-in agent receives the screen-pops of their own agent
channel; a supervisor those of the agents of their teams (their scope, routing/scope.py, read when the socket
opens: the page reconnects to follow a change of team), none without teams; an admin every agent's.

Both ends watch the link: the server pings (aiohttp heartbeat) and drops a client that stops answering;
it also sends a `heartbeat` message every HEARTBEAT_S, so the page notices a dead server and reconnects.
A console that (re)connects first gets the latest pop of its agent, if recent. When the session ends
(sign-out elsewhere, expiry, password changed) the socket is closed with code 4001. When the socket's
Redis subscription dies (a Redis restart, a network blip) the socket is closed with 1013 (try again later):
the page reconnects and subscribes again, rather than staying up, heartbeating, and receiving nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import redis.asyncio as aioredis
from aiohttp import WSCloseCode, WSMsgType, web

from console.screenpop import agent_channel, all_agents_pattern, last_pop_key
from hilo.web.auth import authenticate, same_origin, session_store, unauthorized
from hilo.web.keys import POOL, REDIS, SETTINGS
from hilo.web.sessions import Principal
from routing.scope import Scope, scope_of

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
SESSION_ENDED = 4001  # a close code of the application range: the page shows the sign-in form

SOCKETS = web.AppKey("console_sockets", set[web.WebSocketResponse])


async def console_ws(request: web.Request) -> web.StreamResponse:
    who = await authenticate(request)
    if who is None:
        return unauthorized("sign in first (console session cookie or bearer token)")
    if not same_origin(request):
        return web.json_response({"error": "forbidden", "reason": "cross-origin WebSocket refused"}, status=403)
    if who.role == "agent" and not who.agent_id:
        return web.json_response({"error": "forbidden", "reason": "this user has no agent"}, status=403)
    redis, namespace = request.app[REDIS], request.app[SETTINGS].namespace
    scope = await scope_of(request.app[POOL], who)

    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    send_lock = asyncio.Lock()

    async def send(text: str) -> None:
        async with send_lock:
            if not ws.closed:
                await ws.send_str(text)

    pubsub = redis.pubsub()
    tasks: list[asyncio.Task[None]] = []
    try:
        subscribed, replay = await _subscribe(pubsub, redis, namespace, who, scope)
        await send(
            json.dumps(
                {
                    "type": "hello",
                    "username": who.username,
                    "role": who.role,
                    "agent_id": who.agent_id,
                    "heartbeat_s": HEARTBEAT_S,
                }
            )
        )
        if replay is not None:
            await send(replay)
        tasks = [asyncio.create_task(_heartbeats(request, who, ws, send))]
        if subscribed:  # a supervisor of no agent has nothing to relay (and no subscription that could end)
            tasks.append(asyncio.create_task(_relay(pubsub, send, ws)))
        async for message in ws:  # the page only pings; anything else is ignored
            if message.type == WSMsgType.TEXT and message.data == "ping":
                await send(json.dumps({"type": "pong"}))
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await pubsub.aclose()
        request.app[SOCKETS].discard(ws)
    return ws


async def _subscribe(
    pubsub: Any, redis: aioredis.Redis, namespace: str, who: Principal, scope: Scope
) -> tuple[bool, str | None]:
    """Subscribe to the channels of the agents in scope: whether to anything, and for an agent their latest
    pop. Subscribe first, then read the latest pop: a pop published in between arrives twice (the page
    shows each interaction once) rather than not at all."""
    if who.role == "agent" and who.agent_id:
        await pubsub.subscribe(agent_channel(namespace, who.agent_id))
        raw = await redis.get(last_pop_key(namespace, who.agent_id))
        return True, raw.decode() if isinstance(raw, bytes) else raw
    if scope.everything:
        await pubsub.psubscribe(all_agents_pattern(namespace))
        return True, None
    channels = [agent_channel(namespace, agent) for agent in sorted(scope.agents)]
    if channels:
        await pubsub.subscribe(*channels)
    return bool(channels), None


async def _relay(pubsub: Any, send: Any, ws: web.WebSocketResponse) -> None:
    try:
        async for message in pubsub.listen():
            if message["type"] in ("message", "pmessage"):
                data = message["data"]
                await send(data.decode() if isinstance(data, bytes) else data)
        log.warning("console feed: the Redis subscription ended; the page is told to reconnect")
    except Exception as exc:
        log.warning("console feed: the Redis subscription failed (%s); the page is told to reconnect", exc)
    await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"live feed lost: reconnect")


async def _heartbeats(request: web.Request, who: Principal, ws: web.WebSocketResponse, send: Any) -> None:
    sessions = session_store(request)
    while not ws.closed:
        await asyncio.sleep(HEARTBEAT_S)
        if who.session is not None and sessions is not None and await sessions.by_hash(who.session) is None:
            await ws.close(code=SESSION_ENDED, message=b"session ended")
            return
        await send(json.dumps({"type": "heartbeat"}))


async def close_sockets(app: web.Application) -> None:
    """on_shutdown: a server going down says so to every console, which then reconnects elsewhere."""
    sockets = app[SOCKETS]
    for ws in list(sockets):
        with contextlib.suppress(Exception):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
