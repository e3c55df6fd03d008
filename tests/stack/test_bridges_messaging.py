"""Messaging bridges against the real PostgreSQL, with the provider fakes on loopback as Twilio's and
Meta's servers: signed/unsigned/forged webhooks, duplicates, a restart between receipt and processing,
provider outages, statuses out of order, and WhatsApp's 24-hour window.

Each test runs messaging-only Hilo servers of its own (bridges.http.messaging_app, restarted at will) on
the test database; the stack's Hilo server stops processing and sending meanwhile so it takes no part."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestServer, unused_port
from pydantic import SecretStr

from bridges.fakes.server import Failure
from bridges.fakes.twilio import FakeTwilio
from bridges.fakes.whatsapp import FakeWhatsApp, meta_json, new_wamid
from bridges.http import MESSAGING_KEY, Messaging, messaging_app
from bridges.messages import InboundHandler, InboundMessage, OutboundMessage, OutsideWindow
from bridges.outbox import window_state
from hilo.settings import Settings
from tests.stack.conftest import Stack
from tests.stack.expect import eventually

ACCOUNT = "AC" + secrets.token_hex(16)
SMS_NUMBER = "+34910000100"  # dialplans/channels.yaml
WA_TWILIO_NUMBER = "whatsapp:+34910000101"
PHONE_ID = "109876543210001"
CUSTOMER = "+34600111222"
WA_CUSTOMER = "34600111222"


@dataclass
class Env:
    stack: Stack
    twilio: FakeTwilio
    meta: FakeWhatsApp
    secrets: dict[str, str]
    handled: list[InboundMessage] = field(default_factory=list)
    servers: list[TestServer] = field(default_factory=list)
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "public_base_url": self.base,
            "twilio_account_sid": ACCOUNT,
            "twilio_auth_token": SecretStr(self.secrets["twilio"]),
            "twilio_api_base": self.twilio.base_url,
            "whatsapp_app_secret": SecretStr(self.secrets["app"]),
            "whatsapp_verify_token": SecretStr(self.secrets["verify"]),
            "whatsapp_access_token": SecretStr(self.secrets["access"]),
            "whatsapp_api_base": self.meta.base_url,
            "messaging_send_timeout_s": 1.0,
            "messaging_backoff_s": 0.1,
            "messaging_backoff_max_s": 0.5,
            "messaging_handler_timeout_s": 1.0,
        }
        values.update(overrides)
        return self.stack.settings.model_copy(update=values)

    async def record(self, message: InboundMessage) -> None:
        self.handled.append(message)

    async def start(
        self, *, handler: InboundHandler | None = None, workers: bool = True, port: int | None = None, **overrides: Any
    ) -> Messaging:
        """A messaging node; `port`: a second node behind the same public URL (default: the public port)."""
        app = messaging_app(self.settings(**overrides), handler=handler or self.record, workers=workers)
        server = TestServer(app, host="127.0.0.1", port=port or self.port)
        await server.start_server()
        self.servers.append(server)
        messaging: Messaging = app[MESSAGING_KEY]["messaging"]
        return messaging

    async def stop(self) -> None:
        """Stop every server of this test (like a node going away: work in hand keeps its lease)."""
        while self.servers:
            await self.servers.pop().close()

    async def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.stack.pool.fetch(sql, *args)]


@pytest.fixture
async def env(stack: Stack) -> AsyncIterator[Env]:
    keys = {k: secrets.token_hex(16) for k in ("twilio", "app", "verify", "access")}
    twilio, meta = FakeTwilio(ACCOUNT, keys["twilio"]), FakeWhatsApp(keys["access"], keys["app"])
    await twilio.start()
    await meta.start()
    node: Messaging | None = getattr(stack.services, "messaging", None)
    if node is not None:
        await node.stop()  # the stack's own server leaves the test database's messages to this test's
    environment = Env(stack, twilio, meta, keys, port=unused_port())
    try:
        yield environment
    finally:
        await environment.stop()
        await twilio.close()
        await meta.close()
        if node is not None:
            await node.start()


async def test_twilio_webhooks_signed_unsigned_forged_and_malformed(env: Env) -> None:
    await env.start()
    url = env.base + "/webhooks/twilio/messages"
    params = env.twilio.inbound_params(CUSTOMER, SMS_NUMBER, "Hola, ¿me ayudáis?")

    status, body = await env.twilio.post_signed(url, params, token="not-the-token")
    assert status == 403 and "X-Twilio-Signature" in body
    status, _ = await env.twilio.post_signed(
        url, {**params, "Body": "tampered"}, signed_url=None, headers={"X-Twilio-Signature": ""}
    )
    assert status == 401
    tampered_sig = await _signature_for(env, url, params)
    status, _ = await env.twilio.post_signed(
        url, {**params, "Body": "tampered"}, headers={"X-Twilio-Signature": tampered_sig}
    )
    assert status == 403
    assert await env.rows("SELECT id FROM messages") == []

    bad = {k: v for k, v in params.items() if k != "From"}
    status, body = await env.twilio.post_signed(url, bad)
    assert status == 400 and json.loads(body)["field"] == "From"
    assert await env.rows("SELECT id FROM messages") == []

    status, body = await env.twilio.post_signed(url, params)
    assert status == 200 and body.endswith("<Response/>")
    [row] = await env.rows("SELECT * FROM messages")
    assert (row["channel"], row["channel_name"], row["sender"], row["recipient"], row["text"]) == (
        "sms",
        "sms-demo",
        CUSTOMER,
        SMS_NUMBER,
        "Hola, ¿me ayudáis?",
    )
    await eventually(lambda: _processed(env, row["id"]), within=5, what="the message processed")
    assert [m.provider_message_id for m in env.handled] == [params["MessageSid"]]


async def _signature_for(env: Env, url: str, params: dict[str, str]) -> str:
    from bridges.twilio import signature

    return signature(env.secrets["twilio"], url, params.items())


async def _processed(env: Env, message_id: int) -> bool:
    return bool(await env.stack.pool.fetchval("SELECT state = 'processed' FROM messages WHERE id = $1", message_id))


async def test_twilio_signature_over_the_public_url_port_and_proxy(env: Env) -> None:
    path = "/webhooks/twilio/messages"
    params = env.twilio.inbound_params(CUSTOMER, SMS_NUMBER, "via the proxy")
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hilo.example.com"}
    # Behind a trusted proxy: Twilio signed https://hilo.example.com/..., the proxy called us over http.
    await env.start(public_base_url="", trusted_proxies="127.0.0.1")
    status, _ = await env.twilio.post_signed(
        env.base + path, params, signed_url="https://hilo.example.com" + path, headers=forwarded
    )
    assert status == 200
    await env.stop()
    # The same request from an address that is no trusted proxy: its X-Forwarded-* are ignored.
    await env.start(public_base_url="", trusted_proxies="10.255.255.1")
    status, _ = await env.twilio.post_signed(
        env.base + path, params, signed_url="https://hilo.example.com" + path, headers=forwarded
    )
    assert status == 403
    await env.stop()
    # Configured public base URL; Twilio signed it with the default port written out, or without it.
    await env.start(public_base_url="https://hilo.example.com")
    with_port = env.twilio.inbound_params(CUSTOMER, SMS_NUMBER, "port")
    status, _ = await env.twilio.post_signed(
        env.base + path, with_port, signed_url="https://hilo.example.com:443" + path
    )
    assert status == 200
    status, _ = await env.twilio.post_signed(env.base + path, params, signed_url="https://hilo.example.com" + path)
    assert status == 200  # a redelivery of the first one
    status, _ = await env.twilio.post_signed(env.base + path, params, signed_url="https://hilo.example.com:8443" + path)
    assert status == 403
    assert len(await env.rows("SELECT id FROM messages")) == 2


async def test_whatsapp_handshake_signatures_raw_bytes_and_batches(env: Env) -> None:
    await env.start()
    url = env.base + "/webhooks/whatsapp"
    import aiohttp

    async with aiohttp.ClientSession() as session:
        query = {"hub.mode": "subscribe", "hub.verify_token": env.secrets["verify"], "hub.challenge": "987654"}
        async with session.get(url, params=query) as response:
            assert (response.status, await response.text()) == (200, "987654")
        async with session.get(url, params={**query, "hub.verify_token": "guess"}) as response:
            assert response.status == 403
        payload = env.meta.envelope(PHONE_ID, messages=[env.meta.text_message(WA_CUSTOMER, "¿Hola? https://a/b")])
        async with session.post(url, data=meta_json(payload), headers={"Content-Type": "application/json"}) as response:
            assert response.status == 401

    raw = meta_json(payload)
    status, _ = await env.meta.post_signed(url, payload, secret="forged-secret")
    assert status == 403
    # The signature of the raw bytes does not cover the same JSON written differently.
    from bridges.whatsapp import signature

    async with aiohttp.ClientSession() as session:
        reencoded = json.dumps(json.loads(raw), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature(env.secrets["app"], raw)}
        async with session.post(url, data=reencoded, headers=headers) as response:
            assert response.status == 403
    assert await env.rows("SELECT id FROM messages") == []

    bad = env.meta.envelope(PHONE_ID, messages=[{"from": WA_CUSTOMER, "type": "text", "text": {"body": "x"}}])
    status, body = await env.meta.post_signed(url, bad)
    assert status == 400 and json.loads(body)["field"] == "entry[0].changes[0].value.messages[0].id"

    button = {
        "from": WA_CUSTOMER,
        "id": new_wamid(),
        "type": "interactive",
        "interactive": {"type": "button_reply", "button_reply": {"id": "billing", "title": "Billing"}},
    }
    audio = {
        "from": "34600999888",
        "id": new_wamid(),
        "type": "audio",
        "audio": {"id": "4455", "mime_type": "audio/ogg; codecs=opus"},
    }
    batch = env.meta.envelope(
        PHONE_ID, messages=[payload["entry"][0]["changes"][0]["value"]["messages"][0], button, audio]
    )
    status, _ = await env.meta.post_signed(url, batch)
    assert status == 200
    rows = await env.rows("SELECT sender, text, choice_id, media, channel_name FROM messages ORDER BY id")
    assert [(r["text"], r["choice_id"]) for r in rows] == [
        ("¿Hola? https://a/b", None),
        ("Billing", "billing"),
        (None, None),
    ]
    assert rows[2]["media"] == [{"type": "audio", "id": "4455", "mime_type": "audio/ogg; codecs=opus", "caption": None}]
    assert {r["channel_name"] for r in rows} == {"whatsapp-demo"}
    await eventually(lambda: _all_processed(env, 3), within=5, what="3 messages processed")


async def _all_processed(env: Env, count: int) -> bool:
    return bool(await env.stack.pool.fetchval("SELECT count(*) FROM messages WHERE state = 'processed'") == count)


async def test_duplicate_deliveries_have_one_effect(env: Env) -> None:
    await env.start()
    twilio_url, meta_url = env.base + "/webhooks/twilio/messages", env.base + "/webhooks/whatsapp"
    params = env.twilio.inbound_params(f"whatsapp:{CUSTOMER}", WA_TWILIO_NUMBER, "once")
    answers = await asyncio.gather(*(env.twilio.post_signed(twilio_url, params) for _ in range(5)))
    assert [status for status, _ in answers] == [200] * 5
    message = env.meta.text_message(WA_CUSTOMER, "only once")
    for _ in range(2):  # twice in one batch, then the batch again
        assert (await env.meta.post_signed(meta_url, env.meta.envelope(PHONE_ID, messages=[message, message])))[
            0
        ] == 200
    await eventually(lambda: _all_processed(env, 2), within=5, what="2 messages processed")
    assert sorted(m.text or "" for m in env.handled) == ["once", "only once"]
    assert len(await env.rows("SELECT id FROM messages")) == 2


async def test_a_restart_between_receipt_and_processing_loses_nothing_and_repeats_nothing(env: Env) -> None:
    url = env.base + "/webhooks/twilio/messages"
    # A node that stores but stops before processing (its processor never ran).
    await env.start(workers=False)
    sent = [env.twilio.inbound_params(CUSTOMER, SMS_NUMBER, f"message {i}") for i in range(3)]
    for params in sent:
        assert (await env.twilio.post_signed(url, params))[0] == 200
    await env.stop()
    assert [r["state"] for r in await env.rows("SELECT state FROM messages ORDER BY id")] == ["received"] * 3

    # A node that stops in the middle of the conversation layer's handling of the next message.
    started = asyncio.Event()

    async def stuck(message: InboundMessage) -> None:
        env.handled.append(message)
        started.set()
        await asyncio.Event().wait()

    await env.start(handler=stuck)
    await asyncio.wait_for(started.wait(), 5)
    await env.stop()
    assert [m.text for m in env.handled] == ["message 0"]  # order per conversation: only the first began
    env.handled.clear()

    # The next node processes all three, in order, once each (the interrupted one once its lease is over).
    await env.start()
    await eventually(lambda: _all_processed(env, 3), within=15, what="3 messages processed after the restart")
    assert [m.text for m in env.handled] == ["message 0", "message 1", "message 2"]
    assert [m.provider_message_id for m in env.handled] == [p["MessageSid"] for p in sent]


async def open_window(env: Env, sender: str = WA_CUSTOMER) -> None:
    status, _ = await env.meta.post_signed(
        env.base + "/webhooks/whatsapp", env.meta.envelope(PHONE_ID, messages=[env.meta.text_message(sender, "hi")])
    )
    assert status == 200


def wa_message(text: str, conversation: str = "conv-wa", **changes: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "channel": "whatsapp",
        "provider": "whatsapp_cloud",
        "sender": PHONE_ID,
        "recipient": WA_CUSTOMER,
        "text": text,
        "conversation_id": conversation,
    }
    fields.update(changes)
    return OutboundMessage(**fields)


async def _state(env: Env, outbox_id: int) -> str:
    return str(await env.stack.pool.fetchval("SELECT state FROM outbound_messages WHERE id = $1", outbox_id))


async def test_whatsapp_statuses_out_of_order_never_go_backwards(env: Env) -> None:
    messaging = await env.start()
    await open_window(env)
    outbox_id = await messaging.outbox.enqueue(wa_message("Your order shipped"))
    await eventually(lambda: _state_is(env, outbox_id, "accepted"), within=5, what="sent to the Cloud API")
    wamid = env.meta.messages[-1]["id"]
    url = env.base + "/webhooks/whatsapp"
    for status in ("read", "sent", "delivered"):
        assert (
            await env.meta.post_signed(
                url, env.meta.envelope(PHONE_ID, statuses=[env.meta.status(wamid, status, WA_CUSTOMER)])
            )
        )[0] == 200
    found = await messaging.outbox.get(outbox_id)
    assert found is not None and found["state"] == "read"
    assert [s["provider_status"] for s in found["statuses"]] == ["read", "sent", "delivered"]
    # failed is final; a late delivered after it changes nothing; a repeated status is one history line
    batch = [
        env.meta.status(wamid, "failed", WA_CUSTOMER, error_code=131026),
        env.meta.status(wamid, "delivered", WA_CUSTOMER),
    ]
    assert (await env.meta.post_signed(url, env.meta.envelope(PHONE_ID, statuses=batch)))[0] == 200
    found = await messaging.outbox.get(outbox_id)
    assert found is not None and (found["state"], found["error_code"]) == ("failed", "131026")
    assert len(found["statuses"]) == 4


async def _state_is(env: Env, outbox_id: int, state: str) -> bool:
    return await _state(env, outbox_id) == state


async def test_twilio_send_and_signed_status_callbacks(env: Env) -> None:
    messaging = await env.start()
    outbox_id = await messaging.outbox.enqueue(
        OutboundMessage(
            channel="sms",
            provider="twilio",
            sender=SMS_NUMBER,
            recipient=CUSTOMER,
            text="Hi",
            conversation_id="conv-sms",
        )
    )
    await eventually(lambda: _state_is(env, outbox_id, "accepted"), within=5, what="sent to Twilio")
    [sent] = env.twilio.messages
    assert sent["form"]["StatusCallback"] == env.base + "/webhooks/twilio/status"
    assert await env.twilio.send_status(sent["sid"], "delivered") == 200
    assert await env.twilio.send_status(sent["sid"], "sent") == 200  # late: changes nothing
    found = await messaging.outbox.get(outbox_id)
    assert found is not None and found["state"] == "delivered" and found["provider_message_id"] == sent["sid"]
    status, _ = await env.twilio.post_signed(
        env.base + "/webhooks/twilio/status",
        env.twilio.status_params(sent["sid"], "failed", to=CUSTOMER),
        token="forged",
    )
    assert status == 403
    assert await _state(env, outbox_id) == "delivered"


async def test_provider_outage_then_recovery_keeps_order_per_conversation(env: Env) -> None:
    messaging = await env.start()
    env.twilio.fail_next(Failure(status=503, message="Service unavailable"), count=2)
    env.twilio.fail_next(Failure(status=429, message="Too many requests", retry_after=0.5))
    env.twilio.fail_next(Failure(hang=True))  # no answer: the send times out (1 s here)
    ids = []
    for i in range(3):
        for conversation in ("conv-a", "conv-b"):
            ids.append(
                await messaging.outbox.enqueue(
                    OutboundMessage(
                        channel="sms",
                        provider="twilio",
                        sender=SMS_NUMBER,
                        recipient=CUSTOMER if conversation == "conv-a" else "+34600333444",
                        text=f"{conversation} {i}",
                        conversation_id=conversation,
                    )
                )
            )

    async def drained() -> bool:
        states = {r["state"] for r in await env.rows("SELECT state FROM outbound_messages")}
        return states == {"accepted"}

    await eventually(drained, within=20, what="the outbox drained after the outage")
    bodies = [m["form"]["Body"] for m in env.twilio.messages]
    assert [b for b in bodies if b.startswith("conv-a")] == ["conv-a 0", "conv-a 1", "conv-a 2"]
    assert [b for b in bodies if b.startswith("conv-b")] == ["conv-b 0", "conv-b 1", "conv-b 2"]
    attempts = await env.rows("SELECT attempts FROM outbound_messages ORDER BY id")
    assert sum(r["attempts"] for r in attempts) == 6 + 4  # every failure was one more attempt
    assert len(env.twilio.received) == 6 + 4


async def test_whatsapp_window_refusal_and_templates(env: Env) -> None:
    messaging = await env.start()
    with pytest.raises(OutsideWindow, match="never opened"):
        await messaging.outbox.enqueue(wa_message("hello?"))
    assert await env.rows("SELECT id FROM outbound_messages") == []
    await open_window(env)
    state = await window_state(env.stack.pool, f"whatsapp:+{WA_CUSTOMER}")
    assert state.open and state.closes_at is not None and state.last_inbound_at is not None
    assert state.closes_at - state.last_inbound_at == dt.timedelta(hours=24)
    # 25 hours later
    await env.stack.pool.execute("UPDATE messages SET received_at = received_at - interval '25 hours'")
    with pytest.raises(OutsideWindow, match="closed at") as caught:
        await messaging.outbox.enqueue(wa_message("still there?"))
    assert WA_CUSTOMER not in str(caught.value)  # the address is masked
    template_id = await messaging.outbox.enqueue(wa_message("", template="order_update"))
    await eventually(lambda: _state_is(env, template_id, "accepted"), within=5, what="template sent")
    assert env.meta.messages[-1]["body"]["template"]["name"] == "order_update"

    # The provider's own refusal (the window closed between enqueue and send): failed, not retried.
    await open_window(env)
    env.meta.fail_next(Failure(status=400, code=131047, message="Re-engagement message"))
    refused = await messaging.outbox.enqueue(wa_message("late", conversation="conv-late"))
    await eventually(lambda: _state_is(env, refused, "failed"), within=5, what="refused outside the window")
    row = (await env.rows("SELECT attempts, error_code, last_error FROM outbound_messages WHERE id = $1", refused))[0]
    assert (row["attempts"], row["error_code"]) == (1, "131047") and "24-hour window" in row["last_error"]

    # The window is the customer's with the number they wrote to: not open on another of our numbers.
    with pytest.raises(OutsideWindow):
        await messaging.outbox.enqueue(
            OutboundMessage(
                channel="whatsapp",
                provider="twilio",
                sender=WA_TWILIO_NUMBER,
                recipient=f"whatsapp:+{WA_CUSTOMER}",
                text="from another number",
                conversation_id="conv-other",
            )
        )


async def test_a_failing_handler_is_retried_and_its_conversation_waits(env: Env) -> None:
    failures = {"left": 2}

    async def flaky(message: InboundMessage) -> None:
        if message.text == "first" and failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("conversation layer not ready")
        env.handled.append(message)

    await env.start(handler=flaky, messaging_max_attempts=3)
    url = env.base + "/webhooks/twilio/messages"
    for text in ("first", "second"):
        assert (await env.twilio.post_signed(url, env.twilio.inbound_params(CUSTOMER, SMS_NUMBER, text)))[0] == 200
    await eventually(lambda: _all_processed(env, 2), within=10, what="both processed after the retries")
    assert [m.text for m in env.handled] == ["first", "second"]
    [first] = await env.rows("SELECT attempts, last_error FROM messages WHERE text = 'first'")
    assert first["attempts"] == 3 and first["last_error"] is None

    # A message whose handler never succeeds is marked failed after the last attempt; its conversation goes on.
    async def broken(message: InboundMessage) -> None:
        if message.text == "poison":
            raise ValueError("cannot handle this")
        env.handled.append(message)

    await env.stop()
    env.handled.clear()
    await env.start(handler=broken, messaging_max_attempts=2)
    for text in ("poison", "after"):
        assert (await env.twilio.post_signed(url, env.twilio.inbound_params(CUSTOMER, SMS_NUMBER, text)))[0] == 200

    async def settled() -> bool:
        states = await env.rows("SELECT text, state FROM messages WHERE text IN ('poison', 'after') ORDER BY id")
        return [r["state"] for r in states] == ["failed", "processed"]

    await eventually(settled, within=10, what="poison failed, the next processed")
    [poison] = await env.rows("SELECT attempts, last_error FROM messages WHERE text = 'poison'")
    assert poison["attempts"] == 2 and "cannot handle this" in poison["last_error"]
    assert [m.text for m in env.handled] == ["after"]


async def test_two_nodes_share_the_work_once_each_in_order_per_conversation(env: Env) -> None:
    second_port = unused_port()
    await env.start()
    await env.start(port=second_port)  # another node behind the same public URL (a load balancer)
    path = "/webhooks/twilio/messages"
    customers = [f"+3460055500{i}" for i in range(4)]
    sent: dict[str, list[str]] = {c: [] for c in customers}

    async def conversation(customer: str, node: int) -> None:
        for n in range(12):  # alternate nodes: arrival order is the order of the customer's messages
            params = env.twilio.inbound_params(customer, SMS_NUMBER, f"{customer} {n}")
            port = env.port if (n + node) % 2 == 0 else second_port
            status, _ = await env.twilio.post_signed(
                f"http://127.0.0.1:{port}{path}", params, signed_url=env.base + path
            )
            assert status == 200
            sent[customer].append(params["MessageSid"])

    await asyncio.gather(*(conversation(c, i) for i, c in enumerate(customers)))
    await eventually(lambda: _all_processed(env, 48), within=15, what="48 messages processed by two nodes")
    handled = [m.provider_message_id for m in env.handled]
    assert sorted(handled) == sorted(sid for sids in sent.values() for sid in sids)  # each once
    for customer, sids in sent.items():
        assert [m.provider_message_id for m in env.handled if m.sender == customer] == sids


def sms(text: str, conversation: str, recipient: str = CUSTOMER) -> OutboundMessage:
    return OutboundMessage(
        channel="sms",
        provider="twilio",
        sender=SMS_NUMBER,
        recipient=recipient,
        text=text,
        conversation_id=conversation,
    )


async def test_a_retry_after_of_inf_or_a_billion_seconds_holds_the_provider_no_longer_than_the_cap(env: Env) -> None:
    messaging = await env.start(messaging_retry_after_max_s=1.0)
    env.twilio.fail_next(Failure(status=429, message="Too many requests", retry_after=math.inf))  # "inf"
    env.twilio.fail_next(Failure(status=429, message="Too many requests", retry_after=1e9))  # "1e+09"
    ids = [await messaging.outbox.enqueue(sms(f"m{i}", f"conv-{i}", f"+3460044400{i}")) for i in range(3)]

    async def drained() -> bool:
        states = await env.rows("SELECT state FROM outbound_messages WHERE id = ANY($1::bigint[])", ids)
        return {r["state"] for r in states} == {"accepted"}

    await eventually(drained, within=10, what="every message sent once the capped holds are over")
    assert sorted(m["form"]["Body"] for m in env.twilio.messages) == ["m0", "m1", "m2"]
    assert len(env.twilio.received) == 3 + 2


async def test_a_wait_longer_than_the_lease_does_not_send_a_message_twice(env: Env) -> None:
    messaging = await env.start(messaging_retry_after_max_s=30.0)
    messaging.outbox.lease_s = 3.0  # sends time out after 1 s here: a claimed message may wait 1 s for a token
    env.twilio.fail_next(Failure(status=429, message="Too many requests", retry_after=4))  # longer than the lease
    first = await messaging.outbox.enqueue(sms("first", "conv-a"))
    await eventually(lambda: _attempted(env, first), within=5, what="the first send refused with Retry-After")
    # Claimed while the provider is held: given back until the hold is over, not kept past its lease (where
    # the loop would claim it again and both would send it).
    second = await messaging.outbox.enqueue(sms("second", "conv-b", "+34600333444"))
    await eventually(lambda: _state_is(env, second, "accepted"), within=15, what="the second message sent")
    await eventually(lambda: _state_is(env, first, "accepted"), within=5, what="the first message sent")
    assert sorted(m["form"]["Body"] for m in env.twilio.messages) == ["first", "second"]  # each once
    assert len(env.twilio.received) == 1 + 2
    [row] = await env.rows("SELECT attempts FROM outbound_messages WHERE id = $1", second)
    assert row["attempts"] == 1  # given back while held: not an attempt


async def _attempted(env: Env, outbox_id: int) -> bool:
    return bool(
        await env.stack.pool.fetchval("SELECT last_error IS NOT NULL FROM outbound_messages WHERE id = $1", outbox_id)
    )
