"""The supervisor's pages: the live wallboard (`/console/wallboard`, pushed over `/console/wallboard/ws`)
and the KPI reports with charts (`/console/reports`, reading /api/reports/kpis). Supervisors and admins
only; sign-in is the console's (/console/).

The socket gets the wallboard picture (reports/monitor.py) at once and again whenever it changes, and a
`heartbeat` every HEARTBEAT_S; like the agent's socket it is closed with 4001 when the session ends. Its
query string is the page's filter (`channel`, `queue`, `team`, `slot`, `group`: reports/wallboard_view.py),
applied on the server, cut to the subscriber's scope (routing/scope.py, read when the socket opens): a
supervisor only receives their teams' agents, their queues and what waits in them, and one without teams
none of it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable

from aiohttp import WSCloseCode, WSMsgType, web

from console.desk import PAGE_HEADERS, STATIC_DIR
from console.ws import HEARTBEAT_S, SESSION_ENDED, SOCKETS
from hilo.actions import audit
from hilo.web.auth import STAFF, authenticate, same_origin, session_store, unauthorized
from hilo.web.sessions import Principal
from reports.monitor import WALLBOARD
from reports.wallboard_view import FilterError, parse_filter
from routing.scope import scope_of

Send = Callable[[str], Awaitable[None]]
CLOSE_SLOW_S = 2.0  # for the close frame to a page the wallboard dropped as too slow


async def wallboard_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "wallboard.html", headers=PAGE_HEADERS)


async def reports_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "reports.html", headers=PAGE_HEADERS)


async def wallboard_ws(request: web.Request) -> web.StreamResponse:
    who = await authenticate(request)
    if who is None:
        return unauthorized("sign in first (console session cookie or bearer token)")
    if who.role not in STAFF:
        return web.json_response({"error": "forbidden", "reason": "the wallboard is for supervisors"}, status=403)
    if not same_origin(request):
        return web.json_response({"error": "forbidden", "reason": "cross-origin WebSocket refused"}, status=403)
    monitor = request.app.get(WALLBOARD)
    if monitor is None:
        return web.json_response({"error": "unavailable", "reason": "the wallboard is not running"}, status=503)
    try:
        scope = await scope_of(monitor.wallboard.pool, who)
        subscription = parse_filter(request.query).limited_to(scope.teams_shown)
    except FilterError as exc:
        status = 403 if exc.field == "team" else 400
        if status == 403:  # a team outside theirs: a refusal of the scope, audited as every one
            asked = request.query.get("team", "")[:200]
            detail = {"reason": exc.reason, "read": "wallboard"}
            await audit(monitor.wallboard.pool, who, "read", "team", asked, ok=False, detail=detail)
        return web.json_response({"error": "invalid", "field": exc.field, "reason": exc.reason}, status=status)

    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)  # closed with the others when the server shuts down
    lock = asyncio.Lock()

    async def send(text: str) -> None:
        async with lock:
            if not ws.closed:
                await ws.send_str(text)

    closing: set[asyncio.Task[None]] = set()

    def too_slow() -> None:  # the monitor gave up on this page: close it, the page reconnects
        task = asyncio.create_task(_close_slow(ws))
        closing.add(task)
        task.add_done_callback(closing.discard)

    beats = asyncio.create_task(_heartbeats(request, who, ws, send))
    try:
        await send(
            json.dumps({"type": "hello", "username": who.username, "role": who.role, "heartbeat_s": HEARTBEAT_S})
        )
        await monitor.add_viewer(send, subscription, on_drop=too_slow)
        async for message in ws:  # the page only pings
            if message.type == WSMsgType.TEXT and message.data == "ping":
                await send(json.dumps({"type": "pong"}))
    finally:
        monitor.remove_viewer(send)
        beats.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await beats
        request.app[SOCKETS].discard(ws)
    return ws


async def _close_slow(ws: web.WebSocketResponse) -> None:
    """Close a socket that cannot keep up; if even the close frame cannot be sent in time, the connection is
    cut (aiohttp closes the transport when the close is timed out)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_SLOW_S):
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")


async def _heartbeats(request: web.Request, who: Principal, ws: web.WebSocketResponse, send: Send) -> None:
    sessions = session_store(request)
    while not ws.closed:
        await asyncio.sleep(HEARTBEAT_S)
        if who.session is not None and sessions is not None and await sessions.by_hash(who.session) is None:
            await ws.close(code=SESSION_ENDED, message=b"session ended")
            return
        await send(json.dumps({"type": "heartbeat"}))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/wallboard", wallboard_page)
    app.router.add_get("/console/reports", reports_page)
    app.router.add_get("/console/wallboard/ws", wallboard_ws)
