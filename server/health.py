"""`/healthz` and `/metrics`: the whole server's health (ARI, AMI, PostgreSQL, Redis, each probed within a
bound) and its Prometheus registry. The root registers them; they read the root's `Services`."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.services import SERVICES


async def _probe(check: Any, timeout: float = 2.0) -> dict[str, Any]:
    try:
        detail = await asyncio.wait_for(check(), timeout)
        return {"ok": True, **(detail or {})}
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__ + (f": {exc}" if str(exc) else "")}


async def healthz(request: web.Request) -> web.Response:
    s = request.app[SERVICES]

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
    body = generate_latest(request.app[SERVICES].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
