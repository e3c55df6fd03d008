"""What the unauthenticated `/healthz` and `/metrics` give away: each part's ok and the aggregate series,
nothing more; the details (`/api/health`, staff) and the per-agent series (the scrape token) need
credentials."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Gauge
from pydantic import SecretStr

from hilo.settings import Settings
from hilo.web.api import add_api, build_api
from hilo.web.auth import AUTH_KEY, TokenAuth
from hilo.web.keys import REGISTRY, SETTINGS
from reports.kpis import Kpis
from reports.metrics import KpiCollector
from server import health
from server.services import SERVICES, Services

ADMIN_TOKEN = "admin-token-for-this-test"
SCRAPE_TOKEN = "scrape-token-for-this-test"
AMI_ERROR = "cannot reach 10.9.8.7:5038 as hilo"


class FakeAri:
    connections = 3

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.connected.set()

    async def asterisk_info(self) -> dict[str, Any]:
        return {"system": {"version": "22.5.1"}}


class FakeAmi:
    async def ping(self) -> bool:
        raise ConnectionRefusedError(AMI_ERROR)


class FakeStore:
    async def fetchval(self, sql: str) -> int:
        return 1

    async def ping(self) -> bool:
        return True


def monitor() -> Any:
    figures = Kpis(contacts=4, offered=4, answered=3, aht_s=61.5, csat=0.75)
    return SimpleNamespace(
        today={"none": {"": figures}, "queue": {"support": figures}, "agent": {"bob": figures}},
        latest={"queues": [{"queue": "support", "waiting": 2, "service_level": 0.9, "agents": {"available": 1}}]},
    )


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    settings = Settings(metrics_token=SecretStr(SCRAPE_TOKEN), api_token=SecretStr(ADMIN_TOKEN))
    registry = CollectorRegistry()
    Gauge("hilo_calls_active", "Calls in progress on this node", registry=registry).set(2)
    registry.register(KpiCollector(monitor))
    services = Services(settings=settings, registry=registry)
    services.ari, services.ami = cast(Any, FakeAri()), cast(Any, FakeAmi())
    services.pool, services.redis = cast(Any, FakeStore()), cast(Any, FakeStore())
    app = web.Application()
    app[SERVICES], app[SETTINGS], app[REGISTRY] = services, settings, registry
    app[AUTH_KEY] = TokenAuth({ADMIN_TOKEN: "admin"})
    add_api(app, build_api(health.ROUTES))
    health.add_routes(app)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_healthz_says_ok_or_not_per_part_and_nothing_else(client: TestClient) -> None:  # type: ignore[type-arg]
    resp = await client.get("/healthz")
    text = await resp.text()
    assert resp.status == 503
    assert await resp.json() == {
        "ok": False,
        "ari": {"ok": True},
        "ami": {"ok": False},
        "postgres": {"ok": True},
        "redis": {"ok": True},
    }
    assert "22.5" not in text and "10.9.8.7" not in text and "Refused" not in text


async def test_the_details_are_for_staff(client: TestClient) -> None:  # type: ignore[type-arg]
    assert (await client.get("/api/health")).status == 401
    resp = await client.get("/api/health", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    body = await resp.json()
    assert resp.status == 503
    assert body["ari"] == {"ok": True, "error": None, "asterisk": "22.5.1", "connections": 3}
    assert body["ami"]["ok"] is False and body["ami"]["error"] == f"ConnectionRefusedError: {AMI_ERROR}"


async def test_an_anonymous_scrape_gets_no_series_about_an_agent(client: TestClient) -> None:  # type: ignore[type-arg]
    resp = await client.get("/metrics")
    text = await resp.text()
    assert resp.status == 200
    assert "hilo_calls_active 2.0" in text
    assert 'hilo_kpi_aht_seconds{by="queue",key="support"} 61.5' in text
    assert 'hilo_kpi_csat_ratio{by="none",key="all"} 0.75' in text
    assert 'by="agent"' not in text and "bob" not in text


async def test_the_scrape_token_gives_the_per_agent_series(client: TestClient) -> None:  # type: ignore[type-arg]
    resp = await client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert resp.status == 200
    assert 'hilo_kpi_aht_seconds{by="agent",key="bob"} 61.5' in await resp.text()
    for wrong in (f"Bearer {ADMIN_TOKEN}", "Bearer nope", SCRAPE_TOKEN):
        resp = await client.get("/metrics", headers={"Authorization": wrong})
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_without_a_configured_token_no_token_opens_the_per_agent_series(
    client: TestClient,  # type: ignore[type-arg]
) -> None:
    client.app[SETTINGS].metrics_token = SecretStr("")
    resp = await client.get("/metrics", headers={"Authorization": "Bearer "})
    assert resp.status == 401
    assert 'by="agent"' not in await (await client.get("/metrics")).text()
