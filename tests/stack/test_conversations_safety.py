"""Text conversations, what must not happen on the real stack: a secret typed in a chat kept or shown in clear,
a reply sent twice, the pool deadlocked by handlers, and a public web chat socket without limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import uuid
from typing import Any

import pytest

from bridges.conversations import Conversations
from bridges.fakes.whatsapp import FakeWhatsApp
from bridges.messages import InboundMessage, OutboundMessage
from bridges.webchat import WebChatSender, mailbox_key, visitor_id
from bridges.webchat_limits import ChatLimiter, ChatLimits, OpenSockets
from hilo.db import create_pool
from tests.stack.conftest import Stack, quote_ident
from tests.stack.test_conversations import (  # noqa: F401 (fixtures)
    Visitor,
    WhatsAppCustomer,
    checks_flow,
    number,
    whatsapp,
)
from tests.stack.test_screenpop import bearer

BIRTH_DATE = "15031985"  # Ana García's, in dialplans/demo-customers.yaml; the chatcheck flow asks for it


async def everything_stored(stack: Stack) -> str:
    """Every row of every table of the test database, as text."""
    rows = await stack.pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    parts = []
    for table in (quote_ident(r["tablename"]) for r in rows):
        query = f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t"  # noqa: S608 (names from pg_tables)
        parts.append(await stack.pool.fetchval(query))
    return " ".join(parts)


async def test_a_date_of_birth_typed_on_whatsapp_is_kept_nowhere_and_each_reply_is_sent_once(
    stack: Stack,
    whatsapp: FakeWhatsApp,  # noqa: F811
    checks_flow: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    conversations = stack.services.conversations
    assert conversations is not None
    monkeypatch.setattr(conversations, "pick_flow", lambda message: "chatcheck")
    ana = WhatsAppCustomer(stack, whatsapp, number())
    await ana.write("Hola")
    await ana.expect_texts(1)
    menu = ana.received()[0]
    assert menu["interactive"]["type"] == "list"  # four options: a list, its rows keyed by the menu's keys
    assert [r["id"] for r in menu["interactive"]["action"]["sections"][0]["rows"]] == ["1", "2", "3", "4"]
    await ana.write("account")  # the title, typed
    assert (await ana.expect_texts(2))[1] == "Your account number?"
    await ana.write("10001")
    assert (await ana.expect_texts(3))[2] == "Your date of birth as DDMMYYYY?"
    await ana.write(BIRTH_DATE)
    assert (await ana.expect_texts(4))[3] == "Thank you Ana García, you are verified."
    await stack.hilo_events.expect("interaction.ended", within=10, channel="whatsapp")

    # At rest: the stored message holds the mask, and says it was redacted; nothing else holds the digits.
    row = await stack.pool.fetchrow(
        "SELECT text, redacted_at FROM messages WHERE address = $1 ORDER BY id DESC LIMIT 1", "+" + ana.wa_id
    )
    assert row is not None and row["text"] == "00000000" and row["redacted_at"] is not None
    assert BIRTH_DATE not in await everything_stored(stack)
    # ... nor any log line, nor the console's thread, nor what went out.
    assert BIRTH_DATE not in caplog.text
    interaction = await stack.pool.fetchval("SELECT interaction_id FROM conversations WHERE address = $1", ana.wa_id)
    resp = await stack.client.get(f"/console/api/chats/{interaction}", headers=bearer(stack.token))
    thread = await resp.text()
    assert resp.status == 200, thread
    assert "00000000" in thread and BIRTH_DATE not in thread
    assert BIRTH_DATE not in json.dumps(whatsapp.messages)

    # Every reply went to the outbox once, keyed by its reply row, in the transaction that wrote it.
    replies = await stack.pool.fetch(
        "SELECT r.id, r.outbox_id, o.idempotency_key FROM conversation_replies r"
        " JOIN outbound_messages o ON o.id = r.outbox_id ORDER BY r.id"
    )
    assert len(replies) == 4 and all(r["idempotency_key"] == f"conversation-reply:{r['id']}" for r in replies)
    # A reply handed over again (as after a crash that lost the mark) is the same outbox message.
    last = replies[-1]
    await stack.pool.execute("UPDATE conversation_replies SET outbox_id = NULL WHERE id = $1", last["id"])
    conversation_id = await stack.pool.fetchval("SELECT id FROM conversations WHERE address = $1", ana.wa_id)
    await conversations.flush(conversation_id)
    assert (
        await stack.pool.fetchval("SELECT outbox_id FROM conversation_replies WHERE id = $1", last["id"])
        == (last["outbox_id"])
    )
    assert await stack.pool.fetchval("SELECT count(*) FROM outbound_messages") == 4


async def test_an_outbox_key_has_one_effect_and_rides_the_callers_transaction(stack: Stack) -> None:
    messaging = stack.services.messaging
    assert messaging is not None
    visitor = "v1-" + secrets.token_hex(20)

    def reply(text: str, key: str | None) -> OutboundMessage:
        return OutboundMessage("webchat", "webchat", "web", visitor, text, "conv-key", idempotency_key=key)

    first = await messaging.outbox.enqueue(reply("one", "k-1"))
    again = await messaging.outbox.enqueue(reply("one, changed", "k-1"))
    assert again == first
    assert await stack.pool.fetchval("SELECT text FROM outbound_messages WHERE id = $1", first) == "one"
    # Written in the caller's transaction: rolled back with it, committed with it.
    with contextlib.suppress(RuntimeError):
        async with stack.pool.acquire() as conn, conn.transaction():
            await messaging.outbox.enqueue(reply("two", "k-2"), conn=conn)
            raise RuntimeError("the caller fails before its commit")
    assert await stack.pool.fetchval("SELECT count(*) FROM outbound_messages WHERE idempotency_key = 'k-2'") == 0
    unkeyed = [await messaging.outbox.enqueue(reply("three", None)) for _ in range(2)]
    assert unkeyed[0] != unkeyed[1]
    assert await stack.pool.fetchval("SELECT count(*) FROM outbound_messages WHERE recipient = $1", visitor) == 3


async def test_handlers_cannot_deadlock_a_small_pool(stack: Stack, checks_flow: None) -> None:  # noqa: F811
    """Six conversations at once on a pool of two, each turn looking up and verifying a customer: a handler
    holding one connection while its flow waited for a second would wait forever here."""
    live = stack.services
    assert live.routing is not None and live.timeline is not None and live.flows is not None
    assert live.messaging is not None and live.redis is not None and live.screenpops is not None
    flows = live.flows
    pool = await create_pool(stack.settings.database_url.get_secret_value(), min_size=1, max_size=2)
    conversations = Conversations(
        pool=pool,
        redis=live.redis,
        namespace=stack.settings.namespace,
        publish=live.timeline.publish,
        engine=live.routing,
        outbox=live.messaging.outbox,
        live_flows=lambda: flows.current,
        on_offer=live.screenpops.on_offer,
        tell_agent=live.screenpops.tell,
        pick_flow=lambda message: "chatcheck",  # the web chat site `chatcheck` (checks_flow) runs it
    )
    visitors = ["v1-" + secrets.token_hex(20) for _ in range(6)]
    ids = iter(range(10**12 + secrets.randbelow(10**9), 10**13))  # beyond any stored message's id

    def message(sender: str, text: str) -> InboundMessage:
        return InboundMessage(next(ids), "webchat", "webchat", uuid.uuid4().hex, sender, "chatcheck", text)

    try:
        for answer in ("hi", "1", "10001", BIRTH_DATE):
            step = [conversations(message(v, answer)) for v in visitors]
            await asyncio.wait_for(asyncio.gather(*step), 20)
        proved = await stack.pool.fetchval(
            "SELECT count(*) FROM timeline_events WHERE type = 'ivr.verify' AND data->>'result' = 'match'"
            " AND interaction_id IN (SELECT interaction_id FROM conversations WHERE our_address = 'chatcheck')"
        )
        assert proved == len(visitors)
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def socket(stack: Stack, token: str | None = None) -> Any:
    ws = await stack.client.ws_connect("/chat/ws")
    chat = Visitor(ws)
    try:
        await ws.send_json({"type": "hello", "token": token})
        yield chat, ws
    finally:
        await ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await chat.task


async def test_the_web_chat_socket_limits_connections_and_messages(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat_side = stack.services.webchat
    assert chat_side is not None and stack.services.redis is not None
    namespace = f"{stack.settings.namespace}-limits-{secrets.token_hex(4)}"  # counts of this test only
    limits = ChatLimits(
        window_s=60, connects_per_address=3, connects_per_visitor=1, messages_per_address=5, messages_per_visitor=3
    )
    monkeypatch.setattr(chat_side, "limiter", ChatLimiter(stack.services.redis, namespace, limits))
    try:
        async with socket(stack) as (ana, _):
            token = str((await ana.frames.expect("welcome", within=5))["token"])
            for i in range(3):
                await ana.say(f"a{i}", "hello")
            await ana.ws.send_json({"type": "message", "id": "a3", "text": "one too many"})
            refused = await ana.frames.expect("error", within=5, id="a3")
            assert refused["field"] == "rate" and 0 < refused["retry_after"] <= 60
            assert refused["reason"].startswith("too many messages of this chat: at most 3 in 60 s")
            await ana.ws.send_json({"type": "ping"})  # the widget's own frames are not counted
            await ana.frames.expect("pong", within=5)
            stored = await stack.pool.fetchval("SELECT count(*) FROM messages WHERE provider_message_id LIKE '%:a3'")
            assert stored == 0  # refused, not kept: it may be sent again later with the same id
        async with socket(stack) as (bob, _):
            await bob.frames.expect("welcome", within=5)
            await bob.say("b0", "hi")
            await bob.say("b1", "hi")
            await bob.ws.send_json({"type": "message", "id": "b2", "text": "hi"})
            refused = await bob.frames.expect("error", within=5, id="b2")
            assert refused["reason"].startswith("too many messages from your address: at most 5 in 60 s")
        # Ana again with her token: her address's third connection, but her second in the window.
        async with socket(stack, token) as (again, ws):
            refused = await again.frames.expect("error", within=5, id=None, field="rate")
            assert refused["reason"].startswith("too many connections of this chat: at most 1 in 60 s")
            await again.task
            assert ws.close_code == 4429
        # A fourth connection from the address is refused before its hello.
        async with socket(stack) as (fourth, ws):
            refused = await fourth.frames.expect("error", within=5, id=None, field="rate")
            assert refused["reason"].startswith("too many connections from your address: at most 3 in 60 s")
            await fourth.task
            assert ws.close_code == 4429
            assert not [f for f in fourth.frames.events if f["type"] == "welcome"]
    finally:
        keys = [k async for k in stack.services.redis.scan_iter(match=f"{namespace}:*")]
        if keys:
            await stack.services.redis.delete(*keys)


async def pubsub_connections(stack: Stack) -> int:
    """The test server's Redis pub/sub connections (its connections are named after its namespace)."""
    assert stack.services.redis is not None
    clients = await stack.services.redis.client_list(_type="pubsub")
    return sum(1 for client in clients if client.get("name") == stack.settings.namespace)


async def test_a_flood_of_web_chat_sockets_is_capped_and_costs_no_redis_connection(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat_side, redis = stack.services.webchat, stack.services.redis
    assert chat_side is not None and redis is not None
    monkeypatch.setattr(chat_side, "sockets", OpenSockets(ChatLimits(sockets_per_address=4)))
    monkeypatch.setattr(chat_side, "limiter", None)  # the rate limits are the test above's
    namespace = stack.settings.namespace
    before = await pubsub_connections(stack)
    tokens: list[str] = []
    try:
        async with contextlib.AsyncExitStack() as open_sockets:
            visitors = []
            for _ in range(4):
                chat, _ = await open_sockets.enter_async_context(socket(stack))
                tokens.append(str((await chat.frames.expect("welcome", within=5))["token"]))
                visitors.append(chat)
            for _ in range(3):  # more from the same address: each refused and closed at once
                async with socket(stack) as (refused, ws):
                    frame = await refused.frames.expect("error", within=5, id=None, field="sockets")
                    assert frame["reason"].startswith("too many open chats from your address: at most 4 at once")
                    await refused.task
                    assert ws.close_code == 4429
            assert await pubsub_connections(stack) == before  # four visitors: no Redis connection of their own
            sender = WebChatSender(redis, namespace)
            for i, token in enumerate(tokens):
                reply = OutboundMessage(
                    channel="webchat",
                    provider="webchat",
                    sender="web",
                    recipient=visitor_id(token),
                    text=f"reply {i}",
                    conversation_id=f"flood-{i}",
                )
                await sender.send(reply, 900_000 + i)
            for i, chat in enumerate(visitors):  # each gets its own reply through the node's one subscription
                got = await chat.frames.expect("message", within=5, id=900_000 + i)
                assert got["text"] == f"reply {i}"
                assert not [f for f in chat.frames.events if f["type"] == "message" and f["id"] != 900_000 + i]
    finally:
        if tokens:
            await redis.delete(*(mailbox_key(namespace, visitor_id(t)) for t in tokens))
    assert chat_side.sockets is not None and chat_side.sockets.total == 0  # every place given back
