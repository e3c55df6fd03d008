"""`/healthz`, `/api/health` and `/metrics`: the whole server's health (ARI, AMI, PostgreSQL, Redis, each
probed within a bound) and its Prometheus registry. The root registers them; they read the root's `Services`.

What anyone can read is kept to what a load balancer or a scraper needs. `/healthz` (no authentication) says
ok or not for each part and nothing else: no versions, no connection counts, no error text (which names
hosts, ports and driver messages). The same probes with their details are `GET /api/health`, for staff.
`/metrics` without credentials has the aggregate series only; the per-agent KPIs need the scrape token
(HILO_METRICS_TOKEN) as `Authorization: Bearer`. A wrong or unexpected token is 401, so a misconfigured
scraper notices instead of silently getting less."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from hilo.web.auth import STAFF, unauthorized
from hilo.web.keys import REGISTRY, SETTINGS
from hilo.web.openapi import Reply, Routes
from reports.metrics import AggregatesOnly
from server.services import SERVICES, Services

ROUTES = Routes()
PARTS = ("ari", "ami", "postgres", "redis")


async def _probe(check: Any, timeout: float = 2.0) -> dict[str, Any]:
    try:
        detail = await asyncio.wait_for(check(), timeout)
        return {"ok": True, **(detail or {})}
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__ + (f": {exc}" if str(exc) else "")}


async def _report(s: Services) -> dict[str, dict[str, Any]]:
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

    checks = {"ari": ari, "ami": ami, "postgres": postgres, "redis": redis}
    return {part: await _probe(checks[part]) for part in PARTS}


async def healthz(request: web.Request) -> web.Response:
    """For anyone (load balancers, `stack/up.sh`): ok or not, per part; 503 when one is down."""
    report = await _report(request.app[SERVICES])
    healthy = all(part["ok"] for part in report.values())
    minimal = {name: {"ok": bool(part["ok"])} for name, part in report.items()}
    return web.json_response({"ok": healthy, **minimal}, status=200 if healthy else 503)


class PartHealth(BaseModel):
    ok: bool
    error: str | None = None  # why the probe failed: the exception and its text
    asterisk: str | None = None  # ari only: Asterisk's version
    connections: int | None = None  # ari only: events-socket connections made since the start


class HealthOut(BaseModel):
    """Each dependency probed within 2 s; `ok` when all are."""

    ok: bool
    ari: PartHealth
    ami: PartHealth
    postgres: PartHealth
    redis: PartHealth


@ROUTES.route(
    "GET",
    "/api/health",
    summary="The server's health with details: Asterisk's version, connection errors",
    tag="meta",
    roles=STAFF,
    ok={200: HealthOut, 503: HealthOut},
)
async def health_details(request: web.Request) -> Reply:
    """What `/healthz` says, with the details it keeps from anonymous callers. 503 when a part is down."""
    report = await _report(request.app[SERVICES])
    healthy = all(part["ok"] for part in report.values())
    body = HealthOut(ok=healthy, **{name: PartHealth.model_validate(part) for name, part in report.items()})
    return Reply(200 if healthy else 503, body)


def _scrape_token_ok(request: web.Request, header: str) -> bool:
    token = request.app[SETTINGS].metrics_token.get_secret_value()
    if not token or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header.removeprefix("Bearer ").strip().encode(), token.encode())


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text: aggregates for anyone, per-agent series too with the scrape token."""
    header = request.headers.get("Authorization")
    registry = request.app[REGISTRY]
    if header is None:
        body = generate_latest(AggregatesOnly(registry))
    elif _scrape_token_ok(request, header):
        body = generate_latest(registry)
    else:
        return unauthorized("the scrape token (HILO_METRICS_TOKEN) is wrong or not configured")
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
