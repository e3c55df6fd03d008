"""Web chat in real browsers: a visitor on the widget page picks Sales from the menu's buttons, the sales
agent takes the conversation in the console's chat pane and answers, and the visitor reads the answer."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from console.users import add_user
from tests.stack.conftest import Stack
from tests.stack.test_console_browser import SCREENSHOTS, browser, sign_in_on_the_page  # noqa: F401 (fixture)
from tests.stack.test_screenpop import new_password


async def test_a_visitor_and_an_agent_chat_in_their_browsers(stack: Stack, browser: Browser) -> None:  # noqa: F811
    password = new_password()
    await add_user(stack.pool, "alice", password, "agent", "alice")
    visitor = await browser.new_page()
    agent = await browser.new_page()
    errors: list[str] = []
    for page in (visitor, agent):
        page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        await sign_in_on_the_page(agent, str(stack.client.make_url("/console/")), "alice", password)

        await visitor.goto(str(stack.client.make_url("/chat/")))
        await expect(visitor.locator("#status")).to_have_text("online", timeout=5000)
        await visitor.fill("#text", "Hello there")
        await visitor.click("#composer button[type=submit]")
        await expect(visitor.locator("#thread li.them").first).to_have_text("Welcome to Hilo.", timeout=15_000)
        await expect(visitor.locator("#thread li.me")).to_have_class("me", timeout=5000)  # acknowledged: stored
        await visitor.click("#choices button:has-text('Sales')")

        await expect(agent.locator("#chat-list")).to_contain_text("webchat · offered", timeout=15_000)
        await expect(agent.locator("#chat-thread")).to_contain_text("customer: Hello there", timeout=5000)
        await agent.click("#chat-accept")
        await expect(agent.locator("#chat-state")).to_have_text("agent", timeout=5000)
        await agent.fill("#chat-text", "Hi, Alice from sales here.")
        await agent.click("#chat-reply button[type=submit]")
        await expect(agent.locator("#chat-thread")).to_contain_text("alice: Hi, Alice from sales here.", timeout=5000)

        await expect(visitor.locator("#thread li.them").last).to_have_text("Hi, Alice from sales here.", timeout=15_000)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await agent.screenshot(path=str(SCREENSHOTS / "console-chat.png"), full_page=True)
        await visitor.screenshot(path=str(SCREENSHOTS / "webchat-widget.png"), full_page=True)

        await agent.click("#chat-close")
        await expect(agent.locator("#chat-state")).to_have_text("closed", timeout=5000)
        assert errors == [], errors
    finally:
        await visitor.close()
        await agent.close()
