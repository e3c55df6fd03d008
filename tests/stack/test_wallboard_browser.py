"""The supervisor wallboard in a real browser (Debian's headless chromium driven by Playwright): a real call
queues for support while its only agent is away, the page shows it waiting at once (pushed over the
WebSocket), the queue's waiting alert fires on the page and as a signed `alert.raised` webhook, and when
the caller gives up the page shows the abandoned call and the alert clears (`alert.cleared`)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from console.users import add_user
from crm_bridge import webhooks
from reports.config import load_kpi_config
from reports.monitor import WallboardMonitor
from tests.stack.conftest import Stack
from tests.stack.test_calls import KNOWN_CALLER, place
from tests.stack.test_console_browser import SCREENSHOTS, browser, sign_in_on_the_page  # noqa: F401 (fixture)
from tests.stack.test_kpis import kpi_monitor, scripted_day  # noqa: F401 (fixture)
from tests.stack.test_screenpop import new_password, sign_in
from tests.stack.test_webhooks import Receiver

# An alert as soon as one caller waits for support (more than 0); nothing else is watched.
KPIS_YAML = """
timezone: Europe/Madrid
rolling_window_minutes: 30
refresh_s: 2
queues:
  support:
    alerts:
      waiting_above: 0
"""


@pytest.fixture
async def alerting(stack: Stack, tmp_path: Path) -> AsyncIterator[WallboardMonitor]:
    monitor = stack.services.wallboard
    assert monitor is not None
    before = monitor.config
    (tmp_path / "kpis.yaml").write_text(KPIS_YAML)
    monitor.set_config(load_kpi_config(tmp_path, {"support": 30, "sales": 20}))
    yield monitor
    monitor.set_config(before)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    one = Receiver()
    await one.server.start_server()
    yield one
    await one.server.close()


async def test_a_queued_call_shows_live_and_raises_then_clears_the_alert(
    stack: Stack,
    browser: Browser,  # noqa: F811 (the fixture imported above)
    alerting: WallboardMonitor,
    receiver: Receiver,
) -> None:
    auth = {"Authorization": f"Bearer {stack.token}"}
    resp = await stack.client.post(
        "/api/webhooks",
        json={"url": receiver.url, "event_types": ["alert.*"], "description": "wallboard"},
        headers=auth,
    )
    assert resp.status == 201, await resp.text()
    secret = (await resp.json())["secret"]

    password = new_password()
    await add_user(stack.pool, "kpi-supervisor", password, "supervisor", None, teams=["front-office", "back-office"])
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        await sign_in_on_the_page(page, str(stack.client.make_url("/console/")), "kpi-supervisor", password)
        await page.goto(str(stack.client.make_url("/console/wallboard")))
        await expect(page.locator("#board")).to_be_visible(timeout=5000)
        await expect(page.locator("#link")).to_have_text("live", timeout=5000)
        support = page.locator("#queues tr[data-queue=support]")
        await expect(support.locator("td.waiting")).to_have_text("0", timeout=5000)
        await expect(page.locator("#alerts li")).to_have_count(0)

        assert stack.services.board is not None
        assert await stack.services.board.set_state("bob", "away")
        bob = page.locator("#agents tr[data-agent=bob]")
        await expect(bob.locator(".state")).to_have_text("away", timeout=10_000)

        call, started = await place(stack, KNOWN_CALLER, "2")
        interaction = started["interaction_id"]
        await stack.hilo_events.expect("routing.queued", within=15, interaction_id=interaction, data__queue="support")
        # pushed on the routing.queued event, not at the next periodic refresh
        await expect(support.locator("td.waiting")).to_have_text("1", timeout=2000)
        await expect(support.locator("td.waiting")).to_have_class("waiting over")
        await expect(support).to_have_class("alerting")
        alert = page.locator("#alerts li[data-queue=support][data-kind=waiting]")
        await expect(alert).to_contain_text("Support: waiting 1 (threshold 0)")
        await expect(page.locator("#channels tr[data-channel=voice] td.waiting")).to_have_text("1")
        await expect(support.locator("td.longest")).to_have_text(re.compile(r"^\d+:\d\d$"))  # ticking
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "wallboard-alert.png"), full_page=True)

        raised = await receiver.requests.expect("webhook", within=10, body__type="alert.raised")
        assert raised["body"]["data"] == {
            "alert_id": raised["body"]["data"]["alert_id"],
            "queue": "support",
            "kind": "waiting",
            "value": 1,
            "threshold": 0,
        }
        assert raised["headers"]["Hilo-Event-Type"] == "alert.raised"
        assert webhooks.verify(secret, raised["headers"], raised["raw"])
        # an alert is about a queue, on no customer's timeline
        assert await stack.pool.fetchval("SELECT count(*) FROM timeline_events WHERE type LIKE 'alert.%'") == 0

        await stack.observer.hangup(call.caller_leg)
        ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
        assert ended["data"]["outcome"] == "abandoned"
        await expect(support.locator("td.waiting")).to_have_text("0", timeout=3000)
        await expect(support.locator("td.abandoned")).to_have_text("1")
        await expect(page.locator("#alerts li")).to_have_count(0)
        cleared = await receiver.requests.expect("webhook", within=10, body__type="alert.cleared")
        assert (cleared["body"]["data"]["queue"], cleared["body"]["data"]["value"]) == ("support", 0)
        rows = await stack.pool.fetch("SELECT kind, raised_value, cleared_value FROM queue_alerts")
        assert [tuple(r) for r in rows] == [("waiting", 1.0, 0.0)]  # raised once, cleared once
        assert errors == [], errors
    finally:
        await page.close()


async def test_the_wallboard_socket_is_for_supervisors(stack: Stack) -> None:
    agent = await sign_in(stack, "kpi-agent", "agent", "bob")
    resp = await stack.client.get("/console/wallboard/ws", headers={"Authorization": f"Bearer {agent}"})
    assert resp.status == 403
    assert (await stack.client.get("/console/wallboard/ws")).status == 401
    supervisor = await sign_in(stack, "kpi-supervisor", "supervisor", teams=["front-office", "back-office"])
    async with stack.client.ws_connect(
        "/console/wallboard/ws", headers={"Authorization": f"Bearer {supervisor}"}
    ) as ws:
        hello = json.loads((await ws.receive()).data)
        assert (hello["type"], hello["role"]) == ("hello", "supervisor")
        picture = json.loads((await ws.receive(timeout=10)).data)
        assert picture["type"] == "wallboard"
        assert {q["queue"] for q in picture["queues"]} >= {"sales", "support"}
        assert {a["id"] for a in picture["agents"]} == {"alice", "bob"}
    api = await stack.client.get("/api/reports/wallboard", headers={"Authorization": f"Bearer {supervisor}"})
    assert api.status == 200
    assert (await api.json())["type"] == "wallboard"


async def test_the_reports_page_charts_a_period(stack: Stack, browser: Browser, kpi_monitor: WallboardMonitor) -> None:  # noqa: F811
    script = await scripted_day(stack)
    password = new_password()
    # of both teams: the figures of every queue, without the contacts no team had (never queued, no agent)
    await add_user(stack.pool, "kpi-supervisor", password, "supervisor", None, teams=["front-office", "back-office"])
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        await sign_in_on_the_page(page, str(stack.client.make_url("/console/")), "kpi-supervisor", password)
        await page.goto(str(stack.client.make_url("/console/reports")))
        await expect(page.locator("#reports")).to_be_visible(timeout=5000)
        day = script.day.date().isoformat()
        await page.fill("#from", day)
        await page.fill("#to", day)
        await page.select_option("#interval", "15m")
        await page.select_option("#by", "queue")
        await page.click("#query button[type=submit]")
        rows = page.locator("#rows tbody tr")
        await expect(rows).to_have_count(script.quarter_hours() * 2, timeout=10_000)  # quarters x (sales, support)
        # the service level of support's three offered contacts: one in time
        support_points = page.locator("#chart circle.point[data-group=support]")
        await expect(support_points).to_have_count(3)
        await expect(page.locator("#chart polyline.series[data-group=support]")).to_have_count(1)
        await expect(page.locator("#csv")).to_have_attribute("href", re.compile(r"^/api/reports/kpis\.csv\?from="))

        await page.select_option("#interval", "period")
        await page.click("#query button[type=submit]")
        await expect(rows).to_have_count(2)
        support_row = rows.filter(has_text="support")
        await expect(support_row.locator("td").nth(5)).to_have_text("33.3%")
        await page.select_option("#figure", "contacts")
        await expect(page.locator("#chart circle.point")).to_have_count(2)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "reports.png"), full_page=True)
        assert errors == [], errors
    finally:
        await page.close()
