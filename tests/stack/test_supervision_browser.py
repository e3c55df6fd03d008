"""Supervisor actions from the wallboard page in a real browser: on a live call with bob, the supervisor
gives their phone, listens, switches to whisper and stops; and moves a waiting caller to another queue.
Each click is on the audit with the supervisor's name."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from console.users import add_user
from tests.stack.calls import KNOWN_CALLER, hang_up, place
from tests.stack.conftest import Stack
from tests.stack.test_console_browser import browser, sign_in_on_the_page  # noqa: F401 (fixture)
from tests.stack.test_screenpop import new_password
from tests.stack.test_supervision import call_with_bob


async def test_listen_whisper_stop_from_the_wallboard(stack: Stack, browser: Browser) -> None:  # noqa: F811
    call, interaction, _ = await call_with_bob(stack)
    password = new_password()
    await add_user(stack.pool, "wall-sup", password, "supervisor", None, teams=["back-office"])  # bob's team
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        await sign_in_on_the_page(page, str(stack.client.make_url("/console/")), "wall-sup", password)
        await page.goto(str(stack.client.make_url("/console/wallboard")))
        await page.fill("#my-phone", "Local/silent@hilo-phone-sim")
        bob = page.locator('#agents tr[data-agent="bob"]')
        await bob.locator("button.supervise.listen").click(timeout=10_000)
        await expect(page.locator("#supervision")).to_have_text(f"listen on {interaction[:8]}", timeout=15_000)
        await expect(bob.locator("button.supervise.listen")).to_have_class("supervise listen active")
        await bob.locator("button.supervise.whisper").click()
        await expect(page.locator("#supervision")).to_have_text(f"whisper on {interaction[:8]}", timeout=10_000)
        await page.click("#stop-supervision")
        await expect(page.locator("#supervision")).to_have_text("not on a call", timeout=10_000)
        assert errors == []
    finally:
        await page.close()
    await stack.ari_events.expect("ChannelDestroyed", within=5, channel__name=lambda n: "hilo-phone-sim" in n)
    await hang_up(stack, call, interaction)
    rows = await stack.pool.fetch("SELECT actor, action, target_kind, ok FROM supervisor_actions ORDER BY id")
    assert [(r["actor"], r["action"], r["target_kind"], r["ok"]) for r in rows] == [
        ("user:wall-sup@console", "listen", "interaction", True),
        ("user:wall-sup@console", "whisper", "supervision", True),
        ("user:wall-sup@console", "supervision-end", "supervision", True),
    ]


async def test_moving_a_waiting_caller_from_the_wallboard(stack: Stack, browser: Browser) -> None:  # noqa: F811
    assert stack.services.board is not None
    await stack.services.board.set_state("bob", "away")  # nobody takes support: the caller waits
    call, started = await place(stack, KNOWN_CALLER, "2")
    interaction = started["interaction_id"]
    await stack.hilo_events.expect("routing.queued", within=20, interaction_id=interaction, data__queue="support")
    password = new_password()
    teams = ["front-office", "back-office"]  # from support (bob's) to sales (alice's)
    await add_user(stack.pool, "wall-mover", password, "supervisor", None, teams=teams)
    page = await browser.new_page()
    try:
        await sign_in_on_the_page(page, str(stack.client.make_url("/console/")), "wall-mover", password)
        await page.goto(str(stack.client.make_url("/console/wallboard")))
        row = page.locator(f'#waiting tr[data-interaction="{interaction}"]')
        await row.locator("select").select_option("queue:sales", timeout=10_000)
        await row.locator("button").click()
        await expect(page.locator("#action-status")).to_have_text("moved to queue sales", timeout=10_000)
    finally:
        await page.close()
    moved = await stack.hilo_events.expect("routing.moved", within=5, interaction_id=interaction)
    assert moved["data"] == {"queue": "sales", "from": "support", "by": "user:wall-mover@console"}
    # alice serves sales: the caller is offered to her and answered
    await stack.hilo_events.expect("agent.answered", within=20, interaction_id=interaction, data__agent="alice")
    await hang_up(stack, call, interaction)
    routed = await stack.pool.fetchval(
        "SELECT queue FROM routing_interactions WHERE interaction_id = $1::uuid", interaction
    )
    assert routed == "sales"
    audit = await stack.pool.fetch("SELECT actor, action, detail FROM supervisor_actions")
    assert [(a["actor"], a["action"], a["detail"]["queue"], a["detail"]["status"]) for a in audit] == [
        ("user:wall-mover@console", "move", "sales", "offered")
    ]


async def test_the_agent_holds_the_caller_from_the_console(stack: Stack, browser: Browser) -> None:  # noqa: F811
    password = new_password()
    await add_user(stack.pool, "bob-page", password, "agent", "bob")
    page = await browser.new_page()
    try:
        await sign_in_on_the_page(page, str(stack.client.make_url("/console/")), "bob-page", password)
        await expect(page.locator("#link")).to_have_text("live", timeout=10_000)
        call, interaction, _ = await call_with_bob(stack)
        await expect(page.locator("#pop-card")).to_have_attribute("data-interaction", interaction, timeout=30_000)
        await page.click("#hold")
        await expect(page.locator("#hold-status")).to_have_text("The caller is on hold.", timeout=5_000)
        await stack.hilo_events.expect(
            "call.held", within=5, interaction_id=interaction, data__by="user:bob-page@console"
        )
        await page.click("#unhold")
        await expect(page.locator("#hold-status")).to_have_text("The caller is back.", timeout=5_000)
        await stack.hilo_events.expect(
            "call.unheld", within=5, interaction_id=interaction, data__by="user:bob-page@console"
        )
    finally:
        await page.close()
    await hang_up(stack, call, interaction)
    rows = await stack.pool.fetch("SELECT actor, actor_role, action FROM supervisor_actions ORDER BY id")
    assert [tuple(r) for r in rows] == [
        ("user:bob-page@console", "agent", "hold"),
        ("user:bob-page@console", "agent", "unhold"),
    ]
