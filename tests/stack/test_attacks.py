"""The attacks of the threat model (docs/security.md), each sent against the real stack, each refused, and
each leaving the state as it was:

- a SIP REGISTER for an agent's phone without credentials, with a wrong password, and for a name nobody has,
  from an address of the attacker's own: no contact appears in Asterisk, the phone's calls still reach it;
- a parallel burst of wrong console passwords with the right one sent once the limit is hit: no session;
- a parallel burst of dates of birth from many web chats with the right one once the lock is there: the
  customer stays unverified and no visitor is linked to them;
- a supervisor acting outside their teams (an agent's state, listening to a live call): 403, nothing moves;
- an anonymous `/metrics` scrape and one with a wrong token: no per-agent figure;
- forged provider webhooks (Twilio, WhatsApp Cloud API): no message, conversation or timeline event;
- a flood of web chat sockets from one address: the sockets open at once are capped, no Redis connection
  is spent, and nothing is stored.

Other files test each defence in depth; this one sends every attack, as an outsider would."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from bridges.fakes.twilio import FakeTwilio
from bridges.fakes.whatsapp import FakeWhatsApp, meta_json
from bridges.twilio import signature
from bridges.webchat_limits import ChatLimiter, webchat_limits
from bridges.whatsapp import signature as whatsapp_signature
from console.users import add_user
from crm_bridge import verification
from hilo.web.signin import MAX_FAILURES, SIGNIN
from tests.stack.calls import hang_up, place
from tests.stack.conftest import NAMESPACE, Stack
from tests.stack.expect import eventually
from tests.stack.sip import SipPeer
from tests.stack.test_conversations import Visitor, chat_on, checks_flow  # noqa: F401 (fixture)
from tests.stack.test_conversations_safety import BIRTH_DATE, pubsub_connections, socket
from tests.stack.test_screenpop import bearer, forget_cookies, new_password, sign_in
from tests.stack.test_sip_security import ALICE_PHONE, attacker_address, contacts
from tests.stack.test_supervision import call_with_bob

ATTACKERS = "127.0.0.128/26"  # SIP sources of this file (test_sip_security.py takes 127.0.0.64/26)
ANA_PHONE = "+34911222333"  # Ana García of dialplans/demo-customers.yaml; account 10001
SMS_NUMBER = "+34910000100"  # the sms-demo channel of dialplans/channels.yaml
WHATSAPP_NUMBER_ID = "109876543210001"  # the whatsapp-demo channel


async def all_contacts(stack: Stack) -> tuple[list[str], list[str]]:
    """Every AOR's contacts, static or registered ("aor/uri"), and the registered ones alone."""
    assert stack.services.ami is not None
    aors = await stack.services.ami.action({"Action": "PJSIPShowAors"})
    every = sorted(c for m in aors if m.get("Event") == "AorList" for c in str(m["Contacts"]).split(",") if c)
    reply = await stack.services.ami.action({"Action": "PJSIPShowContacts"})
    if not isinstance(reply, list):  # an error answer: "No Contacts found"
        assert reply.get("Message") == "No Contacts found", dict(reply)
        return every, []
    return every, sorted(str(m["Uri"]) for m in reply if m.get("Event") == "ContactList")


async def test_sip_registers_without_or_with_a_wrong_password_add_no_contact(stack: Stack) -> None:
    before = await all_contacts(stack)
    assert f"agent-alice/{ALICE_PHONE}" in before[0]
    peer = await SipPeer(attacker_address(stack, ATTACKERS), (stack.settings.sip_host, stack.settings.sip_port)).open()
    try:
        assert await peer.register("agent-alice") == [401]  # no credentials: challenged, nothing more
        assert await peer.register("agent-alice", "not-alices-password") == [401, 401]  # wrong: refused
        assert await peer.register("agent-mallory", "any-password-at-all") == [401, 401]  # nobody's name: the same
        assert await contacts(stack, "agent-alice") == [ALICE_PHONE]
        after = await all_contacts(stack)  # no contact added, to any AOR, and none registered
        assert after == before and not [c for c in after[0] if peer.address in c], after

        # Alice's calls still ring her phone and only hers.
        mark = stack.ari_events.mark()
        placed, started = await place(stack, "+34911000102", "1")
        interaction = started["interaction_id"]
        await stack.hilo_events.expect("agent.answered", within=20, interaction_id=interaction, data__agent="alice")
        await stack.ari_events.expect(
            "ChannelEnteredBridge", within=5, since=mark, channel__name=lambda n: n.startswith("PJSIP/agent-alice-")
        )
        await stack.observer.hangup(placed.caller_leg)
        await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
        assert peer.requests == []  # Asterisk never sent the attacker anything (no INVITE, no OPTIONS)
    finally:
        peer.close()


@pytest.fixture
async def own_signin_counts(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """The sign-in limiter of the test server on counts of this test only (other tests sign in from the same
    address within the window); the real Redis script, the server's limits. Yields the keys' prefix."""
    assert stack.services.redis is not None
    app = stack.client.app
    assert app is not None
    limiter = app[SIGNIN]
    prefix = f"{NAMESPACE}-attacks-{secrets.token_hex(4)}:console:signin"
    monkeypatch.setattr(limiter, "prefix", prefix)
    try:
        yield prefix
    finally:
        keys = [k async for k in stack.services.redis.scan_iter(match=f"{prefix}:*")]
        if keys:
            await stack.services.redis.delete(*keys)


async def session_keys(stack: Stack) -> list[bytes]:
    assert stack.services.redis is not None
    return [k async for k in stack.services.redis.scan_iter(match=f"{NAMESPACE}:console:session:*")]


async def test_a_parallel_sign_in_burst_gets_no_session_not_even_with_the_right_password(
    stack: Stack, own_signin_counts: str
) -> None:
    assert stack.services.redis is not None
    password = new_password()
    await add_user(stack.pool, "bob", password, "agent", "bob")
    sessions = await session_keys(stack)

    async def attempt(guess: str) -> tuple[int, bool]:
        resp = await stack.client.post("/console/api/login", json={"username": "bob", "password": guess})
        await resp.read()
        return resp.status, "Set-Cookie" in resp.headers

    burst = [asyncio.create_task(attempt(f"wrong password {n}")) for n in range(12)]
    failures = f"{own_signin_counts}:fail:bob:127.0.0.1"

    async def limit_hit() -> bool:
        return int(await stack.services.redis.get(failures) or 0) >= MAX_FAILURES  # type: ignore[union-attr]

    await eventually(limit_hit, within=10, what=f"{MAX_FAILURES} failed sign-ins counted")
    right = await attempt(password)  # while the burst is still being judged
    answers = await asyncio.gather(*burst)
    assert right == (429, False)
    assert sorted(answers) == [(401, False)] * MAX_FAILURES + [(429, False)] * (12 - MAX_FAILURES)
    assert await attempt(password) == (429, False)  # and after it, from this address
    assert await session_keys(stack) == sessions
    assert not stack.client.session.cookie_jar.filter_cookies(stack.client.make_url("/"))
    forget_cookies(stack)


@pytest.fixture
async def own_chat_counts(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """The web chat's rate limits (the server's) on counts of this test only."""
    chat_side, redis = stack.services.webchat, stack.services.redis
    assert chat_side is not None and redis is not None
    namespace = f"{NAMESPACE}-attacks-{secrets.token_hex(4)}"
    monkeypatch.setattr(chat_side, "limiter", ChatLimiter(redis, namespace, webchat_limits(stack.settings)))
    try:
        yield
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{namespace}:*")]
        if keys:
            await redis.delete(*keys)


async def to_the_date_of_birth(chat: Visitor, n: int) -> None:
    await chat.say(f"{n}-a", "hello")
    await chat.say(f"{n}-b", "account")
    await chat.say(f"{n}-c", "10001")
    texts = [r["text"] for r in await chat.replies(3)]
    assert texts[-1] == "Your date of birth as DDMMYYYY?", texts


async def test_a_parallel_burst_of_dates_of_birth_on_web_chat_verifies_nobody(
    stack: Stack,
    checks_flow: None,  # noqa: F811
    own_chat_counts: None,
) -> None:
    ana = await stack.pool.fetchval("SELECT customer_id FROM identities WHERE kind = 'phone' AND value = $1", ANA_PHONE)
    assert ana is not None
    async with contextlib.AsyncExitStack() as chats:
        opened = [await chats.enter_async_context(contextlib.asynccontextmanager(chat_on)(stack, "chatcheck"))]
        for _ in range(7):
            opened.append(await chats.enter_async_context(contextlib.asynccontextmanager(chat_on)(stack, "chatcheck")))
        visitors = [chat for chat, _ in opened]
        await asyncio.wait_for(asyncio.gather(*(to_the_date_of_birth(v, n) for n, v in enumerate(visitors))), 30)

        # Seven wrong dates at once, from seven chats; the right one from the eighth once the lock is there.
        guessers, last = visitors[:-1], visitors[-1]
        wrong = [f"{day:02}011990" for day in range(1, len(guessers) + 1)]
        burst = [asyncio.create_task(v.say("guess", d)) for v, d in zip(guessers, wrong, strict=True)]

        async def locked() -> bool:
            row = await stack.pool.fetchrow(
                "SELECT failures, locked_until > now() AS locked FROM customer_secrets"
                " WHERE customer_id = $1 AND field = 'birth_date'",
                ana,
            )
            return row is not None and bool(row["locked"])

        await eventually(locked, within=20, what="Ana's verification locked")
        await last.say("right", BIRTH_DATE)
        await asyncio.gather(*burst)
        for chat in visitors:  # every chat was answered: not verified (a retry, or goodbye)
            replies = await chat.replies(4)
            assert "verified" not in replies[3]["text"], replies[3]
        assert "does not match" in (await last.replies(4))[3]["text"]

    row = await stack.pool.fetchrow(
        "SELECT failures, locked_until > now() AS locked FROM customer_secrets"
        " WHERE customer_id = $1 AND field = 'birth_date'",
        ana,
    )
    assert row is not None and row["locked"] and row["failures"] == verification.MAX_FAILURES
    assert not await stack.pool.fetchval(
        "SELECT count(*) FROM identities WHERE kind = 'webchat' AND customer_id = $1", ana
    )
    matched = await stack.pool.fetchval(
        "SELECT count(*) FROM timeline_events WHERE type = 'ivr.verify' AND data->>'result' = 'match'"
    )
    assert matched == 0
    assert not [e for e in stack.hilo_events.events if e["type"] == "customer.linked"]


async def test_a_supervisor_cannot_act_on_an_agent_or_a_call_outside_their_teams(stack: Stack) -> None:
    assert stack.services.board is not None and stack.services.calls is not None
    front = await sign_in(stack, "front-sup", "supervisor", teams=["front-office"])  # bob is back-office's

    resp = await stack.client.post("/api/agents/bob/state", json={"state": "offline"}, headers=bearer(front))
    assert resp.status == 403 and "outside your teams" in (await resp.json())["reason"]
    assert (await stack.services.board.agent("bob"))["state"] == "available"

    call, interaction, _ = await call_with_bob(stack)
    mark = stack.ari_events.mark()
    for mode in ("listen", "whisper", "barge"):
        resp = await stack.client.post(
            f"/api/calls/{interaction}/supervision",
            json={"mode": mode, "phone": "PJSIP/supervisor-demo"},
            headers=bearer(front),
        )
        assert resp.status == 403, await resp.text()
    resp = await stack.client.post(f"/api/calls/{interaction}/hold", headers=bearer(front))
    assert resp.status == 403
    assert not stack.services.calls.supervisions.active
    created = [e["channel"]["id"] for e in stack.ari_events.events[mark:] if e["type"] == "ChannelCreated"]
    assert not [c for c in created if c.startswith(f"{NAMESPACE}-supervisor-")], created
    assert (await stack.services.board.agent("bob"))["state"] == "busy"  # still on the call, not held
    await hang_up(stack, call, interaction)

    rows = await stack.pool.fetch("SELECT action, ok FROM supervisor_actions ORDER BY id")
    assert [(r["action"], r["ok"]) for r in rows] == [
        ("agent-state", False),
        ("listen", False),
        ("whisper", False),
        ("barge", False),
        ("hold", False),
    ]


async def test_an_anonymous_metrics_scrape_gets_no_agents_figures(stack: Stack) -> None:
    timeline, monitor = stack.services.timeline, stack.services.wallboard
    assert timeline is not None and monitor is not None
    customer = await stack.pool.fetchval(
        "SELECT customer_id FROM identities WHERE kind = 'phone' AND value = $1", ANA_PHONE
    )
    start = datetime.now(UTC) - timedelta(seconds=90)
    one = await timeline.start_interaction(customer, "voice", "inbound", started_at=start)
    await timeline.record(one, "interaction.started", {}, at=start)
    await timeline.record(one, "routing.queued", {"queue": "support"}, at=start + timedelta(seconds=5))
    await timeline.record(one, "agent.answered", {"agent": "bob"}, at=start + timedelta(seconds=10))
    await timeline.end_interaction(one, "completed", "caller", ended_at=start + timedelta(seconds=70))
    await monitor.refresh_today()
    token = stack.settings.metrics_token.get_secret_value()
    assert token, "HILO_METRICS_TOKEN (make stack generates it into .run/env)"

    with_token = await stack.client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert 'by="agent",key="bob"' in await with_token.text()  # what there is to hide
    anonymous = await stack.client.get("/metrics")
    text = await anonymous.text()
    assert anonymous.status == 200 and 'by="agent"' not in text
    assert 'hilo_kpi_contacts{by="channel",key="voice"}' in text  # the aggregates stay public
    for header in ("Bearer not-the-scrape-token", f"Basic {token}", token):
        forged = await stack.client.get("/metrics", headers={"Authorization": header})
        assert forged.status == 401 and "hilo_kpi" not in await forged.text()
    health = await stack.client.get("/healthz")
    assert set(await health.json()) == {"ok", "ari", "ami", "postgres", "redis"}
    assert "22." not in await health.text()  # no Asterisk version for anonymous callers


async def stored(stack: Stack) -> dict[str, int]:
    counts = {}
    for table in ("messages", "conversations", "interactions", "timeline_events", "identities", "customers"):
        counts[table] = await stack.pool.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608 (names above)
    return counts


async def test_forged_provider_webhooks_store_nothing(stack: Stack) -> None:
    before = await stored(stack)
    mark = stack.hilo_events.mark()
    token = stack.settings.twilio_auth_token.get_secret_value()
    assert token, "HILO_TWILIO_AUTH_TOKEN (make stack generates one into .run/env)"
    twilio = FakeTwilio(stack.settings.twilio_account_sid, token)
    url = str(stack.client.make_url("/webhooks/twilio/messages"))
    forged = twilio.inbound_params("+34600700999", SMS_NUMBER, "forged")
    status, _ = await twilio.post_signed(url, forged, token="not-the-auth-token")  # signed with another key
    assert status == 403
    status, _ = await twilio.post_signed(url, forged, headers={"X-Twilio-Signature": ""})  # unsigned
    assert status == 401
    # A genuine signature of another request (replayed onto a changed one): the signature covers the body.
    genuine = twilio.inbound_params("+34600700999", SMS_NUMBER, "genuine")
    status, _ = await twilio.post_signed(
        url, forged, headers={"X-Twilio-Signature": signature(token, url, genuine.items())}
    )
    assert status == 403

    secret = stack.settings.whatsapp_app_secret.get_secret_value()
    assert secret, "HILO_WHATSAPP_APP_SECRET (make stack generates one into .run/env)"
    meta = FakeWhatsApp("no-access-token", secret)
    envelope = meta.envelope(WHATSAPP_NUMBER_ID, messages=[meta.text_message("34600700998", "forged")])
    status, _ = await meta.post_signed(str(stack.client.make_url("/webhooks/whatsapp")), envelope, secret="not-it")
    assert status == 403
    body = meta_json(envelope)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            str(stack.client.make_url("/webhooks/whatsapp")),
            data=body.replace(b"forged", b"jiggle"),  # rightly signed, then changed on the way
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": whatsapp_signature(secret, body)},
        ) as resp,
    ):
        assert resp.status == 403

    assert await stored(stack) == before  # no message, conversation, interaction, event, identity, customer
    published = [e["type"] for e in stack.hilo_events.events[mark:]]
    assert not [t for t in published if t.startswith(("message.", "interaction.", "customer."))], published


async def test_a_flood_of_web_chat_sockets_from_one_address_is_capped(stack: Stack, own_chat_counts: None) -> None:
    chat_side = stack.services.webchat
    assert chat_side is not None and chat_side.sockets is not None
    cap = stack.settings.webchat_sockets_per_address
    assert chat_side.sockets.total == 0 and cap > 0
    connections = await pubsub_connections(stack)
    flood = cap + 8

    async def one(chats: contextlib.AsyncExitStack) -> tuple[dict[str, Any], Visitor, aiohttp.ClientWebSocketResponse]:
        chat, ws = await chats.enter_async_context(socket(stack))

        def first() -> dict[str, Any] | None:
            return next((f for f in chat.frames.events if f["type"] in ("welcome", "error")), None)

        frame: dict[str, Any] = await eventually(first, within=10, what="a welcome or a refusal")
        return frame, chat, ws

    async with contextlib.AsyncExitStack() as chats:
        opened = await asyncio.gather(*(one(chats) for _ in range(flood)))
        welcomed = [f for f, _, _ in opened if f["type"] == "welcome"]
        refused = [f for f, _, _ in opened if f["type"] == "error"]
        assert len(welcomed) == cap and len(refused) == flood - cap, [f for f, _, _ in opened]
        assert {f["field"] for f in refused} == {"sockets"}
        assert all(f["reason"].startswith(f"too many open chats from your address: at most {cap}") for f in refused)
        for frame, chat, ws in opened:
            if frame["type"] == "error":  # closed by the server at once
                await chat.task
                assert ws.close_code == 4429
        assert chat_side.sockets.total == cap
        assert await pubsub_connections(stack) == connections  # no Redis connection per socket
        assert not await stack.pool.fetchval("SELECT count(*) FROM conversations")
        assert not await stack.pool.fetchval("SELECT count(*) FROM messages")
    await eventually(lambda: chat_side.sockets.total == 0, within=5, what="every socket's place given back")  # type: ignore[union-attr]
