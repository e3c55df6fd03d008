"""Filtering and grouping the wallboard, in a real browser and on its socket: with a real call waiting for
support (bob away), the supervisor filters by team and by channel and sees only the matching rows of every
table, the filter stays in the URL after a reload, queues group by team with subtotals; the server cuts
the picture per subscription, so a supervisor of one team never receives another team's agents."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

from playwright.async_api import Browser, expect

from console.users import add_user
from tests.stack.conftest import Stack
from tests.stack.test_calls import KNOWN_CALLER, place
from tests.stack.test_console_browser import SCREENSHOTS, browser, sign_in_on_the_page  # noqa: F401 (fixture)
from tests.stack.test_screenpop import forget_cookies, new_password


async def test_filters_by_team_and_channel_survive_a_reload(stack: Stack, browser: Browser) -> None:  # noqa: F811
    assert stack.services.board is not None
    assert await stack.services.board.set_state("bob", "away")  # nobody takes support: the caller waits
    call, started = await place(stack, KNOWN_CALLER, "2")
    interaction = started["interaction_id"]
    await stack.hilo_events.expect("routing.queued", within=15, interaction_id=interaction, data__queue="support")

    password = new_password()
    await add_user(stack.pool, "filter-sup", password, "supervisor", None, teams=["front-office", "back-office"])
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    queues, agents = page.locator("#queues tbody tr"), page.locator("#agents tbody tr")
    waiting, channels = page.locator("#waiting tbody tr"), page.locator("#channels tbody tr")
    try:
        await sign_in_on_the_page(page, str(stack.client.make_url("/console/")), "filter-sup", password)
        await page.goto(str(stack.client.make_url("/console/wallboard")))
        await expect(page.locator("#link")).to_have_text("live", timeout=5000)
        await expect(page.locator(f"#waiting tr[data-interaction='{interaction}']")).to_have_count(1, timeout=5000)
        await expect(agents).to_have_count(2)  # alice and bob

        # front office: alice and the sales queue; the support caller is not theirs
        await page.select_option("#f-team", "front-office")
        await expect(agents).to_have_count(1)
        await expect(agents.first).to_have_attribute("data-agent", "alice")
        await expect(queues).to_have_count(1)
        await expect(queues.first).to_have_attribute("data-queue", "sales")
        await expect(waiting).to_have_count(0)
        assert parse_qs(urlparse(page.url).query) == {"team": ["front-office"]}

        # back office, by a reload of a shared URL with the voice channel
        await page.goto(str(stack.client.make_url("/console/wallboard?team=back-office&channel=voice")))
        await expect(page.locator("#link")).to_have_text("live", timeout=5000)
        await expect(agents).to_have_count(1, timeout=5000)
        await expect(agents.first).to_have_attribute("data-agent", "bob")
        await expect(queues).to_have_count(1)
        await expect(queues.first).to_have_attribute("data-queue", "support")
        await expect(queues.first.locator("td.waiting")).to_have_text("1")
        await expect(waiting).to_have_count(1)
        await expect(channels).to_have_count(1)
        await expect(channels.first).to_have_attribute("data-channel", "voice")
        await expect(channels.first.locator("td.waiting")).to_have_text("1")
        await expect(page.locator("#f-team")).to_have_value("back-office")
        await expect(page.locator("#f-channel")).to_have_value("voice")

        # sms only: the waiting caller (voice) goes, from the queue's figures too
        await page.select_option("#f-channel", "sms")
        await expect(channels.first).to_have_attribute("data-channel", "sms")
        await expect(waiting).to_have_count(0)
        await expect(queues.first.locator("td.waiting")).to_have_text("0")
        await page.reload()
        await expect(page.locator("#link")).to_have_text("live", timeout=5000)
        await expect(page.locator("#f-channel")).to_have_value("sms")
        await expect(channels).to_have_count(1, timeout=5000)
        await expect(channels.first).to_have_attribute("data-channel", "sms")
        await expect(waiting).to_have_count(0)
        assert parse_qs(urlparse(page.url).query) == {"team": ["back-office"], "channel": ["sms"]}

        # every team, grouped by team, over the last hour: a subtotal row per team before its queues
        await page.click("#f-clear")
        await page.select_option("#f-group", "team")
        await page.select_option("#f-slot", "1h")
        back = page.locator("#queues tr.group[data-group=back-office]")
        await expect(back.locator("td.waiting")).to_have_text("1", timeout=5000)
        await expect(page.locator("#queues tr.group")).to_have_count(2)
        await expect(page.locator("#queues tr[data-group=back-office][data-queue=support]")).to_have_count(1)
        await expect(page.locator("#queues tr[data-group=front-office][data-queue=sales]")).to_have_count(1)
        await expect(page.locator("#window")).to_contain_text("the last hour")
        assert parse_qs(urlparse(page.url).query) == {"group": ["team"], "slot": ["1h"]}
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "wallboard-grouped.png"), full_page=True)
        assert errors == [], errors
    finally:
        await page.close()
    await stack.observer.hangup(call.caller_leg)
    await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)


async def test_a_team_supervisor_receives_only_their_team(stack: Stack) -> None:
    password = new_password()
    await add_user(stack.pool, "front-sup", password, "supervisor", None, teams=["front-office"])
    resp = await stack.client.post("/console/api/login", json={"username": "front-sup", "password": password})
    assert resp.status == 200
    token = (await resp.json())["token"]
    forget_cookies(stack)
    auth = {"Authorization": f"Bearer {token}"}
    async with stack.client.ws_connect("/console/wallboard/ws", headers=auth) as ws:
        assert json.loads((await ws.receive()).data)["type"] == "hello"
        picture = json.loads((await ws.receive(timeout=10)).data)
    assert [a["id"] for a in picture["agents"]] == ["alice"]
    assert [q["queue"] for q in picture["queues"]] == ["sales"]
    assert picture["choices"]["teams"] == ["front-office"]
    api = await stack.client.get("/api/reports/wallboard", headers=auth)
    assert api.status == 200
    body = await api.json()
    assert ([a["id"] for a in body["agents"]], [q["queue"] for q in body["queues"]]) == (["alice"], ["sales"])
    refused = await stack.client.get("/console/wallboard/ws?team=back-office", headers=auth)
    assert refused.status == 403
    assert (await refused.json())["field"] == "team"
    bad = await stack.client.get("/console/wallboard/ws?channel=fax", headers=auth)
    assert bad.status == 400
    assert await bad.json() == {
        "error": "invalid",
        "field": "channel",
        "reason": "fax: not one of voice, sms, whatsapp, webchat",
    }


async def test_a_supervisor_without_teams_receives_nothing(stack: Stack) -> None:
    """As for every other route (routing/scope.py): no teams is nothing, no longer every team."""
    password = new_password()
    await add_user(stack.pool, "teamless-sup", password, "supervisor", None)
    resp = await stack.client.post("/console/api/login", json={"username": "teamless-sup", "password": password})
    assert resp.status == 200
    auth = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    forget_cookies(stack)
    async with stack.client.ws_connect("/console/wallboard/ws", headers=auth) as ws:
        assert json.loads((await ws.receive()).data)["type"] == "hello"
        picture = json.loads((await ws.receive(timeout=10)).data)
    assert (picture["agents"], picture["queues"], picture["waiting"]) == ([], [], [])
    assert picture["choices"] == {**picture["choices"], "teams": [], "queues": []}
    body = await (await stack.client.get("/api/reports/wallboard", headers=auth)).json()
    assert (body["agents"], body["queues"]) == ([], [])
    refused = await stack.client.get("/console/wallboard/ws?team=front-office", headers=auth)
    reason = (await refused.json())["reason"]
    assert refused.status == 403 and "you supervise no team" in reason
    rows = await stack.pool.fetch("SELECT actor, action, target_kind, target_id, ok, detail FROM supervisor_actions")
    assert [tuple(r) for r in rows] == [
        ("user:teamless-sup@api", "read", "team", "front-office", False, {"reason": reason, "read": "wallboard"})
    ]
