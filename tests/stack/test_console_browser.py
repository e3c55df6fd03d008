"""The agent console in a real browser: Debian's headless chromium driven by Playwright signs in as the
support agent, a real call reaches that agent's SIPp phone, the pop with the caller's IVR answer shows on
the page, and the disposition given on the page lands on the timeline."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from console.users import add_user
from console.ws import close_sockets
from hilo.settings import REPO_ROOT
from tests.stack.conftest import Stack
from tests.stack.test_calls import KNOWN_CALLER, place
from tests.stack.test_screenpop import new_password

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_PRESENT = CHROMIUM.exists()
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = REPO_ROOT / ".run" / "screenshots"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM_PRESENT:
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `make test` installs the Debian package chromium")
        pytest.skip(f"{CHROMIUM} is missing (Debian package chromium; `make stack` installs it)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


async def sign_in_on_the_page(page: Page, url: str, username: str, password: str) -> None:
    await page.goto(url)
    await expect(page.locator("#signin")).to_be_visible(timeout=5000)
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#signin-form button[type=submit]")
    await expect(page.locator("#desk")).to_be_visible(timeout=5000)
    await expect(page.locator("#link")).to_have_text("live", timeout=5000)


async def test_the_agent_sees_the_pop_in_the_browser_and_wraps_up(stack: Stack, browser: Browser) -> None:
    password = new_password()
    await add_user(stack.pool, "bob", password, "agent", "bob")
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        await sign_in_on_the_page(page, str(stack.client.make_url("/console/")), "bob", password)
        await expect(page.locator("#who-name")).to_have_text("bob (agent, agent bob)")
        # The server drops every console socket (as when it restarts): the page opens a new one by itself.
        app = stack.client.app
        assert app is not None
        async with page.expect_websocket(timeout=10_000):
            await close_sockets(app)
        await expect(page.locator("#link")).to_have_text("live", timeout=10_000)

        call, started = await place(stack, KNOWN_CALLER, "2")
        interaction = started["interaction_id"]
        card = page.locator("#pop-card")
        await expect(card).to_have_attribute("data-interaction", interaction, timeout=30_000)
        await expect(page.locator("#pop-customer-name")).to_have_text("Ana García")
        await expect(page.locator("#pop-ivr-path")).to_contain_text("main_menu: pressed 2 (Support)")
        await expect(page.locator("#pop-identities")).to_contain_text(f"phone: {KNOWN_CALLER}")
        await expect(page.locator("#pop-verified")).to_have_text("not verified: identified by caller number")
        # The call really reached bob's phone (SIPp answering agent-bob).
        await stack.hilo_events.expect("agent.answered", within=15, interaction_id=interaction, data__agent="bob")
        await stack.ari_events.expect(
            "ChannelEnteredBridge", within=5, channel__name=lambda n: n.startswith("PJSIP/agent-bob-")
        )

        await page.select_option("#disposition", "resolved")
        await page.fill("#note", "Asked about her invoice; explained the charges.")
        await page.click("#wrapup-submit")
        await expect(page.locator("#wrapup-result")).to_have_text("Wrap-up saved.", timeout=5000)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "console-pop.png"), full_page=True)

        await stack.hilo_events.expect(
            "agent.disposition",
            within=5,
            interaction_id=interaction,
            data__disposition="resolved",
            data__by="user:bob@console",
        )
        await stack.observer.hangup(call.caller_leg)
        await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
        resp = await stack.client.get(
            f"/api/customers/{started['customer_id']}/timeline", headers={"Authorization": f"Bearer {stack.token}"}
        )
        events = [e for e in (await resp.json())["events"] if e["interaction_id"] == interaction]
        call_facts = ("agent.answered", "agent.call_ended")  # when talk began and ended, not the wrap-up
        wrapup = [
            (e["type"], e["data"]) for e in events if e["type"].startswith("agent.") and e["type"] not in call_facts
        ]
        ended = [e["data"] for e in events if e["type"] == "agent.call_ended"]
        assert ended == [{"agent": "bob", "hangup_by": "caller"}]
        assert wrapup == [
            ("agent.disposition", {"agent": "bob", "by": "user:bob@console", "disposition": "resolved"}),
            (
                "agent.note",
                {"agent": "bob", "by": "user:bob@console", "note": "Asked about her invoice; explained the charges."},
            ),
        ]
        assert errors == [], errors
    finally:
        await page.close()
