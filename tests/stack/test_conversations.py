"""Text conversations on the real stack: WhatsApp messages through the signed Cloud API webhook (a fake Meta
server receives what Hilo sends), the flow answering, routing an agent, the agent's console, web chat over
a real WebSocket, a restart mid-flow, and a customer who wrote on WhatsApp and then calls."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridges.conversations import Conversations
from bridges.fakes.whatsapp import FakeWhatsApp
from bridges.webchat import visitor_id
from tests.stack.conftest import Stack
from tests.stack.expect import EventStream, eventually
from tests.stack.test_calls import place
from tests.stack.test_screenpop import bearer, console_feed, sign_in

PHONE_NUMBER_ID = "109876543210001"  # the whatsapp-demo channel of dialplans/channels.yaml (flow: demo)
GREETING = "Welcome to Hilo."
HOLD = "Please hold while we connect you to an agent."


def another_node(running: Conversations, **limits: Any) -> Conversations:
    """A conversation layer with nothing in memory on this server's stores, as after a restart or on
    another node (`limits`: its own timeouts)."""
    return Conversations(
        pool=running.pool,
        redis=running.redis,
        namespace=running.namespace,
        publish=running.publish,
        engine=running.engine,
        outbox=running.outbox,
        live_flows=running.live_flows,
        pick_flow=running.pick_flow,
        default_region=running.default_region,
        on_offer=running.on_offer,
        tell_agent=running.tell_agent,
        **limits,
    )


class WhatsAppCustomer:
    """A customer's phone on WhatsApp: writes through Meta's signed webhook, reads what the fake received."""

    def __init__(self, stack: Stack, fake: FakeWhatsApp, number: str, phone_number_id: str = PHONE_NUMBER_ID) -> None:
        self.stack, self.fake, self.wa_id = stack, fake, number.removeprefix("+")
        self.phone_number_id = phone_number_id  # which of our WhatsApp numbers they write to

    async def write(self, text: str | None = None, *, button: tuple[str, str] | None = None) -> None:
        message = self.fake.text_message(self.wa_id, text or "")
        if button is not None:
            message.update(
                type="interactive",
                interactive={"type": "button_reply", "button_reply": dict(zip(("id", "title"), button, strict=True))},
            )
            del message["text"]
        url = str(self.stack.client.make_url("/webhooks/whatsapp"))
        status, body = await self.fake.post_signed(url, self.fake.envelope(self.phone_number_id, messages=[message]))
        assert status == 200, body

    def received(self) -> list[dict[str, Any]]:
        return [m["body"] for m in self.fake.messages if m["body"]["to"] == self.wa_id]

    def texts(self) -> list[str]:
        out = []
        for body in self.received():
            if body["type"] == "text":
                out.append(body["text"]["body"])
            else:
                out.append(body["interactive"]["body"]["text"])
        return out

    async def expect_texts(self, count: int, within: float = 15) -> list[str]:
        await eventually(
            lambda: len(self.received()) >= count, within=within, what=f"{count} WhatsApp messages to {self.wa_id}"
        )
        return self.texts()


@pytest.fixture
async def whatsapp(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeWhatsApp]:
    """The fake Cloud API, with this server's messaging pointed at it for the test."""
    token, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    fake = FakeWhatsApp(token, secret, version=stack.settings.whatsapp_api_version)
    await fake.start()
    messaging = stack.services.messaging
    assert messaging is not None
    monkeypatch.setattr(messaging.cloud_sender, "base_url", fake.base_url)
    monkeypatch.setattr(messaging.cloud_sender, "access_token", token)
    monkeypatch.setattr(messaging, "whatsapp_app_secret", secret)
    try:
        yield fake
    finally:
        await fake.close()


def number() -> str:
    return f"+3460070{secrets.randbelow(10_000):04d}"


async def interaction_of(stack: Stack, wa_id: str) -> str:
    started = await stack.hilo_events.expect(
        "interaction.started",
        within=15,
        channel="whatsapp",
        data__dialed=PHONE_NUMBER_ID,
        customer_id=lambda c: c is not None,
    )
    row = await stack.pool.fetchrow(
        "SELECT interaction_id FROM conversations WHERE address = $1 AND closed_at IS NULL", wa_id
    )
    assert row is not None and str(row["interaction_id"]) == started["interaction_id"]
    return str(row["interaction_id"])


async def test_whatsapp_customer_is_served_by_the_flow_then_an_agent(stack: Stack, whatsapp: FakeWhatsApp) -> None:
    ana = WhatsAppCustomer(stack, whatsapp, number())
    bob = await sign_in(stack, "bob", "agent", "bob")
    alice = await sign_in(stack, "alice", "agent", "alice")
    async with console_feed(stack, bob) as console:
        await ana.write("Hola")
        interaction = await interaction_of(stack, ana.wa_id)
        assert await ana.expect_texts(2) == [
            GREETING,
            "For sales, say sales or press 1. For technical support, say technical support or press 2.",
        ]
        menu = ana.received()[1]
        assert menu["type"] == "interactive" and menu["interactive"]["type"] == "button"
        assert [b["reply"] for b in menu["interactive"]["action"]["buttons"]] == [
            {"id": "1", "title": "Sales"},
            {"id": "2", "title": "Support"},
        ]

        await ana.write(button=("2", "Support"))
        assert (await ana.expect_texts(3))[2] == HOLD
        await stack.hilo_events.expect("routing.queued", within=10, interaction_id=interaction, data__queue="support")
        await stack.hilo_events.expect("routing.offered", within=10, interaction_id=interaction, data__agent="bob")
        pop = await console.messages.expect("screenpop", within=10, interaction_id=interaction)
        assert pop["call"]["channel"] == "whatsapp"

        # Waiting for the agent, and then with the agent: the flow stays silent.
        mark = stack.hilo_events.mark()
        await ana.write("are you there?")
        await stack.hilo_events.expect("message.received", within=10, since=mark, data__text="are you there?")
        resp = await stack.client.post(f"/console/api/chats/{interaction}/accept", headers=bearer(bob))
        assert resp.status == 200, await resp.json()
        assert (await resp.json())["state"] == "agent"
        await stack.hilo_events.expect("agent.answered", within=5, interaction_id=interaction, data__agent="bob")
        assert stack.services.board is not None
        assert (await stack.services.board.agent("bob"))["state"] == "busy"
        await ana.write("I need help with my router")
        seen = await console.messages.expect(
            "chat.message", within=10, interaction_id=interaction, event__data__text="I need help with my router"
        )
        assert seen["event"]["type"] == "message.received"
        assert [e["data"].get("by") for e in stack.hilo_events.events[mark:] if e["type"] == "message.sent"] == []
        assert len(ana.received()) == 3

        # Only the agent who has it replies; the customer gets it at the provider.
        resp = await stack.client.post(
            f"/console/api/chats/{interaction}/reply", json={"text": "Hi, this is Bob."}, headers=bearer(alice)
        )
        assert resp.status == 403
        resp = await stack.client.post(
            f"/console/api/chats/{interaction}/reply", json={"text": "Hi, this is Bob."}, headers=bearer(bob)
        )
        assert resp.status == 201, await resp.json()
        assert (await ana.expect_texts(4))[3] == "Hi, this is Bob."

        resp = await stack.client.get(f"/console/api/chats/{interaction}", headers=bearer(bob))
        chat = await resp.json()
        assert resp.status == 200, chat
        assert chat["window"]["open"] is True and chat["window"]["closes_at"]
        lines = [(e["type"], e["data"].get("by"), e["data"].get("text")) for e in chat["thread"]]
        assert lines[0] == ("message.received", None, "Hola")
        assert ("message.sent", "user:bob@api", "Hi, this is Bob.") in lines
        assert lines.index(("message.received", None, "are you there?")) > lines.index(("message.sent", "bot", HOLD))

        # 24 hours after the customer's last message only a template may go: the console says so.
        await stack.pool.execute(
            "UPDATE messages SET received_at = received_at - interval '25 hours' WHERE address = $1", "+" + ana.wa_id
        )
        resp = await stack.client.post(
            f"/console/api/chats/{interaction}/reply", json={"text": "Still there?"}, headers=bearer(bob)
        )
        refused = await resp.json()
        assert resp.status == 409 and refused["error"] == "outside_window", refused
        assert "only an approved template" in refused["reason"]

        resp = await stack.client.post(f"/console/api/chats/{interaction}/close", headers=bearer(bob))
        assert resp.status == 200, await resp.json()
    ended = await stack.hilo_events.expect("interaction.ended", within=5, interaction_id=interaction)
    assert ended["data"] == {"outcome": "completed", "hangup_by": "agent"}
    assert (await stack.services.board.agent("bob"))["state"] == "available"
    resp = await stack.client.post(
        f"/console/api/interactions/{interaction}/wrapup", json={"disposition": "resolved"}, headers=bearer(bob)
    )
    assert resp.status == 201, await resp.json()


async def test_a_restart_mid_flow_resumes_without_repeating_or_losing(
    stack: Stack, whatsapp: FakeWhatsApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    ana = WhatsAppCustomer(stack, whatsapp, number())
    await ana.write("Hello")
    await ana.expect_texts(2)
    # A new conversation layer, as after a restart (or another node): it has nothing in memory.
    running = stack.services.conversations
    assert running is not None
    fresh = another_node(running)
    monkeypatch.setattr(stack.services, "conversations", fresh)
    await ana.write("pizza")
    await ana.expect_texts(4)
    await ana.write("sales")
    texts = await ana.expect_texts(5)
    menu = "For sales, say sales or press 1. For technical support, say technical support or press 2."
    assert texts == [GREETING, menu, "Sorry, that is not a valid choice.", menu, HOLD]
    interaction = str(
        await stack.pool.fetchval("SELECT interaction_id FROM conversations WHERE address = $1", ana.wa_id)
    )
    await stack.hilo_events.expect("routing.queued", within=10, interaction_id=interaction, data__queue="sales")
    # Each fact once on the timeline: the replays wrote nothing twice.
    says = await stack.pool.fetchval(
        "SELECT count(*) FROM timeline_events WHERE interaction_id = $1 AND type = 'ivr.say'", uuid.UUID(interaction)
    )
    assert says == 1

    # The inbox hands a message over again (its node stopped before marking it processed): no second effect.
    from bridges.inbox import inbound_message

    row = await stack.pool.fetchrow(
        "SELECT * FROM messages WHERE address = $1 ORDER BY id DESC LIMIT 1", "+" + ana.wa_id
    )
    assert row is not None
    # What a message can cause (routing goes on by itself meanwhile: an offer to alice may land any moment).
    caused = "SELECT count(*) FROM timeline_events WHERE type LIKE 'message.%' OR type LIKE 'ivr.%'"
    events_before = await stack.pool.fetchval(caused)
    await fresh(inbound_message(row))
    assert await stack.pool.fetchval(caused) == events_before
    assert len(ana.received()) == 5

    # A reply decided but not handed to the outbox when the node stopped goes out when one starts.
    await stack.pool.execute(
        "INSERT INTO conversation_replies (conversation_id, text) SELECT id, 'Left behind' FROM conversations"
        " WHERE address = $1",
        ana.wa_id,
    )
    await fresh.start()
    await fresh.close()
    assert (await ana.expect_texts(6))[5] == "Left behind"


async def test_a_customer_who_wrote_on_whatsapp_and_then_calls_sees_the_thread_on_the_pop(
    stack: Stack, whatsapp: FakeWhatsApp
) -> None:
    caller = number()
    customer = WhatsAppCustomer(stack, whatsapp, caller)
    await customer.write("Do you open on Sundays?")
    await customer.expect_texts(2)
    bob = await sign_in(stack, "bob", "agent", "bob")
    async with console_feed(stack, bob) as console:
        call, started = await place(stack, caller, "2")
        interaction = started["interaction_id"]
        identified = await stack.hilo_events.expect("customer.identified", within=10, interaction_id=interaction)
        assert identified["data"]["new"] is False  # the WhatsApp customer, found by the phone number
        pop = await console.messages.expect("screenpop", within=30, interaction_id=interaction)
        await stack.hilo_events.expect("agent.answered", within=15, interaction_id=interaction)
        await stack.observer.hangup(call.caller_leg)
        await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    assert pop["call"]["channel"] == "voice"
    thread = [(m["channel"], m["direction"], m["text"]) for m in pop["messages"]]
    assert thread[0] == ("whatsapp", "in", "Do you open on Sundays?")
    assert ("whatsapp", "out", GREETING) in thread
    assert {"kind": "whatsapp", "value": caller} in pop["customer"]["identities"]
    assert any(h["channel"] == "whatsapp" for h in pop["history"])


class Visitor:
    """A browser's web chat socket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames = EventStream("web chat socket")
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type == aiohttp.WSMsgType.TEXT:
                self.frames.add(json.loads(frame.data))

    async def say(self, client_id: str, text: str | None = None, choice_id: str | None = None) -> dict[str, Any]:
        mark = self.frames.mark()
        await self.ws.send_json({"type": "message", "id": client_id, "text": text, "choice_id": choice_id})
        return await self.frames.expect("ack", within=10, since=mark, id=client_id)

    async def replies(self, count: int, within: float = 15) -> list[dict[str, Any]]:
        await eventually(lambda: len(self._replies()) >= count, within=within, what=f"{count} web chat replies")
        return self._replies()

    def _replies(self) -> list[dict[str, Any]]:
        return [f for f in self.frames.events if f["type"] == "message"]


async def _mailbox_has(webchat: Any, token: str, text: str) -> bool:
    return any(json.loads(body)["text"] == text for body in await webchat.mailbox(visitor_id(token)))


@contextlib.asynccontextmanager
async def visitor(stack: Stack, token: str | None = None) -> AsyncIterator[tuple[Visitor, str]]:
    ws = await stack.client.ws_connect("/chat/ws")
    chat = Visitor(ws)
    try:
        await ws.send_json({"type": "hello", "token": token})
        welcome = await chat.frames.expect("welcome", within=5)
        yield chat, str(welcome["token"])
    finally:
        await ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await chat.task


async def test_web_chat_over_a_real_websocket_with_an_agent_who_hands_back(stack: Stack) -> None:
    alice = await sign_in(stack, "alice", "agent", "alice")
    async with visitor(stack) as (chat, token):
        first = await chat.say("m1", "hi")
        assert first["duplicate"] is False and first["message_id"] > 0
        again = await chat.say("m1", "hi")  # a resend after a lost ack: the same message, no second effect
        assert (again["message_id"], again["duplicate"]) == (first["message_id"], True)
        greeting, menu = await chat.replies(2)
        assert greeting["text"] == GREETING
        assert [c["id"] for c in menu["choices"]] == ["1", "2"]
        assert menu["text"].endswith("\n1. Sales\n2. Support")  # typed answers work as well as the buttons
        await chat.ws.send_json({"type": "delivered", "ids": [greeting["id"], menu["id"]]})
        await chat.say("m2", "Sales", choice_id="1")
        hold = (await chat.replies(3))[2]
        assert hold["text"] == HOLD
        await chat.ws.send_json({"type": "message", "id": "m3", "text": "  "})
        error = await chat.frames.expect("error", within=5, id="m3")
        assert error["field"] == "text"
    conversation = await stack.pool.fetchrow("SELECT * FROM conversations WHERE channel = 'webchat'")
    assert conversation is not None
    interaction = str(conversation["interaction_id"])
    await stack.hilo_events.expect("routing.offered", within=10, interaction_id=interaction, data__agent="alice")
    resp = await stack.client.post(f"/console/api/chats/{interaction}/accept", headers=bearer(alice))
    assert resp.status == 200, await resp.json()
    resp = await stack.client.post(
        f"/console/api/chats/{interaction}/reply", json={"text": "Alice here, how can I help?"}, headers=bearer(alice)
    )
    assert resp.status == 201, await resp.json()
    # The visitor was away: the hold message (never marked delivered) and the agent's reply wait for them
    # (the reply is sent by the outbox: in the mailbox before the visitor is back, not also live after it).
    assert stack.services.webchat is not None
    webchat = stack.services.webchat
    await eventually(
        lambda: _mailbox_has(webchat, token, "Alice here, how can I help?"),
        within=10,
        what="the agent's reply in the visitor's mailbox",
    )
    async with visitor(stack, token) as (chat, same):
        assert same == token
        texts = [r["text"] for r in await chat.replies(2)]
        assert texts == [HOLD, "Alice here, how can I help?"]
        await chat.ws.send_json({"type": "delivered", "ids": [r["id"] for r in chat._replies()]})
        resp = await stack.client.post(f"/console/api/chats/{interaction}/handback", headers=bearer(alice))
        assert resp.status == 200, await resp.json()
        assert (await resp.json())["state"] == "bot"
        texts = [r["text"] for r in await chat.replies(4)]
        assert texts[2:] == [GREETING, menu["text"]]  # the flow starts again
        await stack.hilo_events.expect("agent.handed_back", within=5, interaction_id=interaction, data__agent="alice")
        ended = await stack.hilo_events.expect("interaction.ended", within=5, interaction_id=interaction)
        assert ended["data"] == {"outcome": "handed-back", "hangup_by": "agent"}
        assert stack.services.board is not None
        assert (await stack.services.board.agent("alice"))["state"] == "available"
        # The flow goes on in a new interaction, which routing takes again.
        await chat.say("m4", "1")
        assert (await chat.replies(5))[4]["text"] == HOLD
    current = str(await stack.pool.fetchval("SELECT interaction_id FROM conversations WHERE channel = 'webchat'"))
    assert current != interaction
    await stack.hilo_events.expect("routing.offered", within=10, interaction_id=current, data__agent="alice")
    resp = await stack.client.get(f"/console/api/chats/{interaction}", headers=bearer(alice))
    earlier = await resp.json()
    assert resp.status == 200, earlier
    assert ("message.sent", "user:alice@api") in [(e["type"], e["data"].get("by")) for e in earlier["thread"]]
    resp = await stack.client.post(
        f"/console/api/interactions/{interaction}/wrapup", json={"disposition": "resolved"}, headers=bearer(alice)
    )
    assert resp.status == 201, await resp.json()


async def test_after_a_hand_back_the_next_agent_cannot_read_the_earlier_interaction(stack: Stack) -> None:
    alice = await sign_in(stack, "alice", "agent", "alice")
    bob = await sign_in(stack, "bob", "agent", "bob")
    async with visitor(stack) as (chat, _):
        await chat.say("m1", "hi")
        await chat.replies(2)
        await chat.say("m2", "Sales", choice_id="1")
        await chat.replies(3)
        first = str(await stack.pool.fetchval("SELECT interaction_id FROM conversations WHERE channel = 'webchat'"))
        await stack.hilo_events.expect("routing.offered", within=10, interaction_id=first, data__agent="alice")
        resp = await stack.client.post(f"/console/api/chats/{first}/accept", headers=bearer(alice))
        assert resp.status == 200, await resp.json()
        resp = await stack.client.post(
            f"/console/api/chats/{first}/reply", json={"text": "For alice's thread only"}, headers=bearer(alice)
        )
        assert resp.status == 201, await resp.json()
        resp = await stack.client.post(f"/console/api/chats/{first}/handback", headers=bearer(alice))
        assert resp.status == 200, await resp.json()
        await chat.replies(6)  # alice's reply, then the flow's greeting and menu again
        await chat.say("m3", "Support", choice_id="2")  # this time bob's queue
        await chat.replies(7)
    current = str(await stack.pool.fetchval("SELECT interaction_id FROM conversations WHERE channel = 'webchat'"))
    assert current != first
    await stack.hilo_events.expect("routing.offered", within=10, interaction_id=current, data__agent="bob")
    resp = await stack.client.post(f"/console/api/chats/{current}/accept", headers=bearer(bob))
    assert resp.status == 200, await resp.json()
    # bob has the conversation now, but the earlier interaction was never offered to him.
    resp = await stack.client.get(f"/console/api/chats/{first}", headers=bearer(bob))
    assert resp.status == 403, await resp.json()
    resp = await stack.client.get(f"/console/api/chats/{current}", headers=bearer(bob))
    assert resp.status == 200, await resp.json()
    resp = await stack.client.get(f"/console/api/chats/{first}", headers=bearer(alice))
    assert resp.status == 200 and "For alice's thread only" in json.dumps((await resp.json())["thread"])
    resp = await stack.client.post(f"/console/api/chats/{current}/close", headers=bearer(bob))
    assert resp.status == 200, await resp.json()


CHECKS_FLOW = """
flow: chatcheck
start: menu
nodes:
  menu:
    kind: menu
    prompt: Pick one.
    choices:
      "1": {label: Account, next: account}
      "2": {label: Message, next: message}
      "3": {label: Call me, next: call_me}
      "4": {label: Transfer, next: transfer}
    no_match: Sorry, that is not a valid choice.
    no_input: Sorry, I did not get your choice.
    fallback: bye
  account:
    kind: gather
    prompt: Your account number?
    min_digits: 4
    max_digits: 10
    into: account
    next: holder
    no_input: bye
  holder:
    kind: lookup
    by: variable
    variable: account
    identity: account
    into: holder
    verify:
      prompt: Your date of birth as DDMMYYYY?
      field: birth_date
      min_digits: 8
      max_digits: 8
      attempts: 2
      retry: That does not match.
      verified: thanks
      not_verified: bye
    not_found: bye
  thanks:
    kind: hangup
    text: Thank you {{ holder.name }}, you are verified.
  message:
    kind: voicemail
    prompt: Please leave your message after the tone.
  call_me:
    kind: callback
    prompt: We will call you back.
  transfer:
    kind: transfer
    to: "+34910000999"
  bye:
    kind: hangup
    text: Goodbye.
"""


@pytest.fixture
async def checks_flow(stack: Stack) -> AsyncIterator[None]:
    """A flow for the text equivalents of call-only nodes, applied as a flow version (conftest restores), and
    a web chat site `chatcheck` that runs it (as a `webchat` channel of channels.yaml would)."""
    from bridges.channels import ChannelConfig
    from flows.bundle import FlowBundle

    assert stack.services.flows is not None and stack.services.messaging is not None
    bundle = FlowBundle.from_dir(stack.settings.dialplans_dir).changed({"flows/chatcheck.yaml": CHECKS_FLOW})
    await stack.services.flows.versions.apply(bundle, applied_by="system:tests@system", comment="chat checks")
    assert not isinstance(await stack.services.flows.reload(), list)
    channels = stack.services.messaging.channels
    site = ChannelConfig(name="webchat-chatcheck", provider="webchat", site="chatcheck", flow="chatcheck")
    channels.all.append(site)
    try:
        yield
    finally:
        channels.all.remove(site)


async def chat_on(stack: Stack, site: str) -> AsyncIterator[tuple[Visitor, str]]:
    ws = await stack.client.ws_connect(f"/chat/ws?site={site}")
    chat = Visitor(ws)
    await ws.send_json({"type": "hello", "token": None})
    welcome = await chat.frames.expect("welcome", within=5)
    try:
        yield chat, str(welcome["token"])
    finally:
        await ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await chat.task


async def test_a_web_chat_site_not_listed_is_refused_even_when_named_like_a_flow(
    stack: Stack, checks_flow: None
) -> None:
    from bridges.channels import ChannelConfig

    assert stack.services.flows is not None and "feedback" in stack.services.flows.current.flows
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await stack.client.ws_connect("/chat/ws?site=feedback")  # a flow, but no webchat channel names it
    assert refused.value.status == 404
    # A listed site opens, and runs its channel's flow, whatever the site is called.
    assert stack.services.messaging is not None
    stack.services.messaging.channels.all.append(
        ChannelConfig(name="webchat-shop", provider="webchat", site="shop", flow="chatcheck")
    )
    try:
        async with contextlib.asynccontextmanager(chat_on)(stack, "shop") as (chat, _):
            await chat.say("a", "hello")
            assert (await chat.replies(1))[0]["text"].startswith("Pick one.")
    finally:
        stack.services.messaging.channels.all.pop()
    assert await stack.pool.fetchval("SELECT flow FROM conversations WHERE our_address = 'shop'") == "chatcheck"
    assert not await stack.pool.fetchval("SELECT count(*) FROM conversations WHERE our_address = 'feedback'")


async def test_a_web_chat_visitor_who_verifies_becomes_the_known_customer(stack: Stack, checks_flow: None) -> None:
    async with contextlib.asynccontextmanager(chat_on)(stack, "chatcheck") as (chat, token):
        await chat.say("a", "hello")
        assert (await chat.replies(1))[0]["text"] == "Pick one.\n1. Account\n2. Message\n3. Call me\n4. Transfer"
        await chat.say("b", "account")
        await chat.say("c", "10001")
        await chat.say("d", "15031985")
        texts = [r["text"] for r in await chat.replies(4)]
    assert texts[1:] == [
        "Your account number?",
        "Your date of birth as DDMMYYYY?",
        "Thank you Ana García, you are verified.",
    ]
    linked = await stack.hilo_events.expect("customer.linked", within=5, data__by="verification")
    ana = await stack.pool.fetchval(
        "SELECT customer_id FROM identities WHERE kind = 'phone' AND value = '+34911222333'"
    )
    assert linked["data"]["customer"] == str(ana)
    # The visitor's token now finds Ana; the date of birth is nowhere in the conversation or the timeline.
    owner = await stack.pool.fetchval(
        "SELECT customer_id FROM identities WHERE kind = 'webchat' AND value = $1", visitor_id(token)
    )
    assert owner == ana
    stored = await stack.pool.fetchval("SELECT inputs::text FROM conversations WHERE our_address = 'chatcheck'")
    assert "15031985" not in stored
    timeline = await stack.pool.fetchval("SELECT string_agg(data::text, ' ') FROM timeline_events")
    assert "15031985" not in timeline


@pytest.mark.parametrize(
    ("choice", "answers", "expected", "outcome"),
    [
        (
            "2",
            ["My router is broken"],
            [
                "Please leave your message after the tone.",
                "Please write your message here and we will get back to you.",
                "Thank you, we have your message.",
            ],
            "voicemail",
        ),
        (
            "3",
            [],
            [
                "We will call you back.",
                "We cannot call you back from a web chat. Please call us, or write here and an agent will answer.",
            ],
            "callback-unavailable",
        ),
        ("4", [], ["This request cannot continue in a chat. Please call +34910000999."], "transfer-unavailable"),
    ],
)
async def test_call_only_nodes_have_a_text_equivalent(
    stack: Stack, checks_flow: None, choice: str, answers: list[str], expected: list[str], outcome: str
) -> None:
    async with contextlib.asynccontextmanager(chat_on)(stack, "chatcheck") as (chat, _):
        await chat.say("a", "hello")
        await chat.say("b", choice)
        for i, answer in enumerate(answers):
            await chat.say(f"c{i}", answer)
        texts = [r["text"] for r in await chat.replies(1 + len(expected))]
    assert texts[1:] == expected
    ended = await stack.hilo_events.expect("interaction.ended", within=5, channel="webchat")
    assert ended["data"]["outcome"] == outcome
    if outcome == "voicemail":
        left = await stack.hilo_events.expect("voicemail.recorded", within=5, channel="webchat")
        assert left["data"]["text"] == "My router is broken"


async def test_a_known_caller_who_writes_is_greeted_by_name_and_the_agent_sees_the_call(
    stack: Stack, whatsapp: FakeWhatsApp
) -> None:
    from crm_bridge import customers
    from tests.stack.test_calls import KNOWN_CALLER

    assert stack.services.timeline is not None
    ana = await customers.identify(stack.pool, "phone", KNOWN_CALLER)
    call = await stack.services.timeline.start_interaction(
        ana.customer_id, "voice", "inbound", dialed="100", context={"caller_number": KNOWN_CALLER}
    )
    await stack.services.timeline.end_interaction(call, "completed", "caller")
    bob = await sign_in(stack, "bob", "agent", "bob")
    customer = WhatsAppCustomer(stack, whatsapp, KNOWN_CALLER)
    async with console_feed(stack, bob) as console:
        await customer.write("hola")
        greeted = (await customer.expect_texts(3))[:2]
        assert greeted == ["Welcome to Hilo.", "Good to hear from you again, Ana García."]
        await customer.write("2")
        pop = await console.messages.expect("screenpop", within=15, call__channel="whatsapp")
    assert pop["customer"]["name"] == "Ana García"
    assert [(h["interaction_id"], h["channel"]) for h in pop["history"]] == [(str(call.id), "voice")]


async def test_an_offer_not_accepted_goes_back_and_a_long_wait_ends_politely(
    stack: Stack, whatsapp: FakeWhatsApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = stack.services.conversations
    assert running is not None and stack.services.board is not None
    # This node's conversations with short limits; the sweep is run by hand, once per expectation.
    quick = another_node(running, offer_timeout_s=0, queue_max_wait_s=3600)
    monkeypatch.setattr(stack.services, "conversations", quick)
    customer = WhatsAppCustomer(stack, whatsapp, number())
    await customer.write("hello")
    await customer.write("1")  # sales: alice
    interaction = await interaction_of(stack, customer.wa_id)
    await stack.hilo_events.expect("routing.offered", within=10, interaction_id=interaction, data__agent="alice")
    await quick.sweep()  # alice did not accept in time
    await stack.hilo_events.expect("routing.not_answered", within=5, interaction_id=interaction, data__agent="alice")
    assert (await stack.services.board.agent("alice"))["state"] == "away"  # as after a ring-no-answer
    state = await stack.pool.fetchval(
        "SELECT state FROM conversations WHERE interaction_id = $1", uuid.UUID(interaction)
    )
    assert state == "queued"
    # Nobody else serves sales: after the queue's longest wait the customer is told and the conversation ends.
    await stack.pool.execute(
        "UPDATE conversations SET queued_at = now() - interval '2 hours' WHERE interaction_id = $1",
        uuid.UUID(interaction),
    )
    await quick.sweep()
    ended = await stack.hilo_events.expect("interaction.ended", within=5, interaction_id=interaction)
    assert ended["data"]["outcome"] == "no-agent"
    texts = await customer.expect_texts(4)
    assert texts[3] == "Sorry, no agent is available right now. Please write again later."


async def test_an_sms_customer_gets_the_menu_as_numbered_lines_and_answers_by_number(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridges.fakes.twilio import FakeTwilio

    messaging = stack.services.messaging
    assert messaging is not None
    account = messaging.channels.default_account_sid
    token = secrets.token_urlsafe(16)
    fake = FakeTwilio(account, token)
    await fake.start()
    monkeypatch.setattr(messaging.twilio_sender, "base_url", fake.base_url)
    monkeypatch.setattr(messaging.twilio_sender, "auth_token", token)
    monkeypatch.setattr(messaging, "twilio_auth_token", token)
    monkeypatch.setattr(messaging, "public_base_url", "")
    phone = number()
    url = str(stack.client.make_url("/webhooks/twilio/messages"))

    def bodies() -> list[str]:
        return [m["form"]["Body"] for m in fake.messages if m["form"]["To"] == phone]

    try:
        status, _ = await fake.post_signed(url, fake.inbound_params(phone, "+34910000100", "hi"))
        assert status == 200
        await eventually(lambda: len(bodies()) >= 2, within=15, what="two SMS")
        assert bodies()[1].endswith("\n1. Sales\n2. Support")
        status, _ = await fake.post_signed(url, fake.inbound_params(phone, "+34910000100", "2"))
        assert status == 200
        await eventually(lambda: len(bodies()) >= 3, within=15, what="three SMS")
        assert bodies()[2] == HOLD
        queued = await stack.hilo_events.expect("routing.queued", within=10, channel="sms", data__queue="support")
        customer = await stack.pool.fetchval(
            "SELECT customer_id FROM identities WHERE kind = 'phone' AND value = $1", phone
        )
        assert queued["customer_id"] == str(customer)
    finally:
        await fake.close()
