"""Health, metrics and the JSON API."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from console import desk, wallboard
from console.audit import audit
from hilo.web.auth import principal, requires
from routing.live import MANUAL_STATES
from server.services import SERVICES, Services


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


async def _probe(check: Any, timeout: float = 2.0) -> dict[str, Any]:
    try:
        detail = await asyncio.wait_for(check(), timeout)
        return {"ok": True, **(detail or {})}
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__ + (f": {exc}" if str(exc) else "")}


async def healthz(request: web.Request) -> web.Response:
    s = _services(request)

    async def ari() -> dict[str, Any]:
        assert s.ari is not None
        if not s.ari.connected.is_set():
            raise ConnectionError("events socket not connected")
        info = await s.ari.asterisk_info()
        return {"asterisk": info.get("system", {}).get("version"), "connections": s.ari.connections}

    async def ami() -> None:
        assert s.ami is not None
        if not await s.ami.ping():
            raise ConnectionError("not logged in")

    async def postgres() -> None:
        assert s.pool is not None
        await s.pool.fetchval("SELECT 1")

    async def redis() -> None:
        assert s.redis is not None
        await s.redis.ping()

    report = {
        "ari": await _probe(ari),
        "ami": await _probe(ami),
        "postgres": await _probe(postgres),
        "redis": await _probe(redis),
    }
    healthy = all(part["ok"] for part in report.values())
    return web.json_response({"ok": healthy, **report}, status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(_services(request).registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _bad_request(reason: str, field: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=web.json_response({"error": "bad_request", "field": field, "reason": reason}).text,
        content_type="application/json",
    )


# The customer routes (/api/customers...) live in crm_bridge/rest.py, with the OpenAPI document.


@requires("admin", "supervisor")
async def list_agents(request: web.Request) -> web.Response:
    s = _services(request)
    assert s.pool is not None and s.board is not None
    rows = await s.pool.fetch("SELECT id, name, sip_endpoint, queues FROM agents ORDER BY id")
    agents = []
    for row in rows:
        live = await s.board.agent(row["id"])
        agents.append({**dict(row), "state": live.get("state", "offline"), "since_ms": live.get("since")})
    return web.json_response({"agents": agents})


@requires("admin", "supervisor")
async def set_agent_state(request: web.Request) -> web.Response:
    s = _services(request)
    assert s.board is not None
    try:
        body = await request.json()
    except ValueError as exc:
        raise _bad_request('body must be JSON like {"state": "available"}', "body") from exc
    state = body.get("state") if isinstance(body, dict) else None
    if state not in MANUAL_STATES:
        raise _bad_request(f"state must be one of {', '.join(MANUAL_STATES)}", "state")
    agent_id = request.match_info["agent_id"]
    done = await s.board.set_state(agent_id, state)
    assert s.pool is not None
    await audit(s.pool, principal(request), "agent-state", "agent", agent_id, ok=done, detail={"state": state})
    if not done:
        return web.json_response({"error": "not_found", "reason": f"no agent {agent_id!r}"}, status=404)
    return web.json_response({"agent": agent_id, "state": state})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/agents", list_agents)
    app.router.add_post("/api/agents/{agent_id}/state", set_agent_state)
    desk.add_routes(app)  # the agent console: page, sign-in, screen-pop WebSocket, wrap-up
    wallboard.add_routes(app)  # the supervisor's wallboard and reports pages (after desk: shares its sockets)
