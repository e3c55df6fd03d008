"""The stack's PostgreSQL itself stopped and started again (tests/stack/outages.py: `pg_ctl` as stack/up.sh
runs it), not only the test server's pool pointed elsewhere. Every client sees it: the test server's two
pools, its listeners, the tests' own connections (the demo server too: other sessions wait on the stack lock).

- A restart in the middle of calls: one call talking to an agent, one waiting in a queue, one in the IVR all
  go on; their timelines are complete after it, each event once, in order (the spool replays).
- A 30 s outage: a call placed meanwhile goes through the IVR (not identified yet) and reaches an agent once
  the store is back (then identified); the providers' webhooks are answered 503 with Retry-After while they
  cannot be stored, so the provider sends them again; after recovery every message acknowledged is stored
  once, whatever the redeliveries, and so is every call event.

Each test asserts its `figures` (tests/stack/outages.py), what the fault report collects."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridges.fakes.twilio import FakeTwilio
from bridges.fakes.whatsapp import FakeWhatsApp, meta_json
from bridges.twilio import signature as twilio_signature
from bridges.webchat import visitor_id
from bridges.whatsapp import signature as whatsapp_signature
from dialplans.models import load_routing
from routing.engine import RoutingEngine
from server.simcall import SimCall, originate_sim_call
from tests.stack.calls import KNOWN_CALLER, hang_up, place
from tests.stack.conftest import ENV_FILE, NAMESPACE, Stack
from tests.stack.expect import eventually
from tests.stack.faults import FaultReport, record_figures
from tests.stack.outages import figures, postgres_answers, postgres_stopped
from tests.stack.test_conversations import visitor

OUTAGE_S = 30.0
SALES, SUPPORT = "1", "2"  # the demo line's menu keys
SMS_NUMBER, PHONE_NUMBER_ID = "+34910000100", "109876543210001"  # tests/dialplans/channels.yaml
BACK_WITHIN_S = 30.0  # the pools answer again this soon after PostgreSQL started


def caller() -> str:
    return f"+3491100{secrets.randbelow(10_000):04d}"  # a caller new to Hilo


def engine_of(stack: Stack) -> RoutingEngine:
    assert stack.services.routing is not None
    return stack.services.routing


@pytest.fixture
async def queues_wait_long(stack: Stack) -> AsyncIterator[None]:
    """Callers may wait 2 minutes (the stack tests' default is 30 s): the tests are about the store going
    away, not about a queue whose wait is shorter than the outage."""
    engine = engine_of(stack)
    queues = load_routing(stack.settings.dialplans_dir).queues
    for queue in queues:
        await engine.put_queue(queue.model_copy(update={"max_wait_s": 120}))
    yield
    for queue in queues:
        await engine.put_queue(queue)


@pytest.fixture
async def providers(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeTwilio, FakeWhatsApp]]:
    """Twilio and Meta as fakes speaking their wire formats, with this server's messaging pointed at them."""
    messaging = stack.services.messaging
    assert messaging is not None
    twilio = FakeTwilio(messaging.channels.default_account_sid, secrets.token_urlsafe(16))
    meta = FakeWhatsApp(
        secrets.token_urlsafe(16), secrets.token_urlsafe(16), version=stack.settings.whatsapp_api_version
    )
    await twilio.start()
    await meta.start()
    monkeypatch.setattr(messaging.twilio_sender, "base_url", twilio.base_url)
    monkeypatch.setattr(messaging.twilio_sender, "auth_token", twilio.auth_token)
    monkeypatch.setattr(messaging, "twilio_auth_token", twilio.auth_token)
    monkeypatch.setattr(messaging, "public_base_url", "")
    monkeypatch.setattr(messaging.cloud_sender, "base_url", meta.base_url)
    monkeypatch.setattr(messaging.cloud_sender, "access_token", meta.access_token)
    monkeypatch.setattr(messaging, "whatsapp_app_secret", meta.app_secret)
    try:
        yield twilio, meta
    finally:
        await twilio.close()
        await meta.close()


# What each call's timeline must hold, in this order (other events may come between).
TALKED = ["interaction.started", "routing.queued", "agent.answered", "interaction.ended"]
IN_IVR = ["interaction.started", "ivr.menu", "routing.queued", "agent.answered", "interaction.ended"]


async def timeline_of(stack: Stack, interaction: str) -> list[dict[str, Any]]:
    rows = await stack.pool.fetch(
        "SELECT id, type, at, data::text AS data FROM timeline_events WHERE interaction_id = $1::uuid ORDER BY id",
        interaction,
    )
    return [dict(r) for r in rows]


async def check_timeline(stack: Stack, interaction: str, wanted: list[str]) -> tuple[int, int, int]:
    """(events checked, lost, duplicated) of one call: its rows; `wanted` missing from them (in that order);
    rows that are one fact written twice. Also: the rows are in the order the facts were accepted, and each
    was published exactly once (the events a consumer saw are the rows, no more, no fewer)."""
    rows = await timeline_of(stack, interaction)
    types = [r["type"] for r in rows]
    position, lost = 0, 0
    for step in wanted:
        try:
            position = types.index(step, position) + 1
        except ValueError:
            lost += 1
    facts = [(r["type"], r["at"], r["data"]) for r in rows]
    duplicated = len(facts) - len(set(facts))
    assert [r["at"] for r in rows] == sorted(r["at"] for r in rows), f"{interaction}: rows out of order: {types}"
    # Each row is published once it is written (after a replay too): the consumers' view is the store's.
    ids = {r["id"] for r in rows}

    def published() -> list[int]:
        return [
            e["id"]
            for e in stack.hilo_events.events[stack.hilo_events.baseline :]
            if e.get("interaction_id") == interaction and e.get("id") in ids
        ]

    await eventually(lambda: set(published()) == ids, within=15, what=f"every event of {interaction} published")
    assert len(published()) == len(ids), f"{interaction}: an event published twice: {sorted(published())}"
    return len(rows), lost, duplicated


async def legs_of(stack: Stack, call: SimCall, agent: str | None) -> set[str]:
    legs = {call.caller_leg, call.ivr_leg}
    if agent is not None:
        entered = await stack.ari_events.expect(
            "ChannelEnteredBridge", within=10, channel__name=lambda n: n.startswith(f"PJSIP/agent-{agent}-")
        )
        legs.add(entered["channel"]["id"])
    return legs


# A restart mid-calls ---------------------------------------------------------------------------------------


@pytest.mark.fault
async def test_a_postgres_restart_mid_calls_drops_no_call_and_loses_no_event(
    stack: Stack, queues_wait_long: None, fault_report: FaultReport
) -> None:
    loop = asyncio.get_running_loop()
    # One call talking to bob, one waiting for him in support, one at the IVR's menu.
    talking, started = await place(stack, KNOWN_CALLER, SUPPORT)
    talking_id = started["interaction_id"]
    await stack.hilo_events.expect("agent.answered", within=30, interaction_id=talking_id, data__agent="bob")
    legs = await legs_of(stack, talking, "bob")
    waiting, started = await place(stack, caller(), SUPPORT)
    waiting_id = started["interaction_id"]
    await stack.hilo_events.expect("routing.queued", within=20, interaction_id=waiting_id, data__queue="support")
    in_ivr, started = await place(stack, caller(), in_app=True)
    in_ivr_id = started["interaction_id"]
    await stack.hilo_events.expect("ivr.menu", within=15, interaction_id=in_ivr_id)
    legs |= {waiting.caller_leg, waiting.ivr_leg, in_ivr.caller_leg, in_ivr.ivr_leg}
    mark = stack.ari_events.mark()

    began = loop.time()
    async with postgres_stopped(ENV_FILE):
        # While it is down the caller at the menu chooses sales: the IVR goes on, its events are spooled.
        await stack.observer.send_dtmf(in_ivr.caller_leg, SALES)
        await stack.ari_events.expect("ChannelDtmfReceived", within=10, channel__id=in_ivr.ivr_leg, digit=SALES)
    await postgres_answers(stack.pool, BACK_WITHIN_S)
    down_s = loop.time() - began

    # After the restart: the chooser reaches alice; bob's caller hangs up and the waiting one reaches bob.
    await stack.hilo_events.expect("agent.answered", within=30, interaction_id=in_ivr_id, data__agent="alice")
    destroyed = [
        e["channel"]["id"]
        for e in stack.ari_events.events[mark:]
        if e["type"] == "ChannelDestroyed" and e["channel"]["id"] in legs
    ]
    assert not destroyed, f"channels dropped by the restart: {destroyed}"
    ended_talking = await hang_up(stack, talking, talking_id)
    await stack.hilo_events.expect("agent.answered", within=30, interaction_id=waiting_id, data__agent="bob")
    ended = [ended_talking]
    for call, interaction in ((waiting, waiting_id), (in_ivr, in_ivr_id)):
        ended.append(await hang_up(stack, call, interaction))
    kept = sum(e["data"] == {"outcome": "completed", "hangup_by": "caller"} for e in ended)

    checked = lost = duplicated = 0
    for interaction, wanted in ((talking_id, TALKED), (waiting_id, TALKED), (in_ivr_id, IN_IVR)):
        one = await check_timeline(stack, interaction, wanted)
        checked, lost, duplicated = checked + one[0], lost + one[1], duplicated + one[2]
    found = figures(
        calls_in_flight=3,
        calls_kept=kept,
        messages_accepted=0,
        messages_stored=0,
        messages_duplicated=0,
        timeline_events_checked=checked,
        timeline_events_lost=lost,
        timeline_events_duplicated=duplicated,
    )
    record_figures(fault_report, "PostgreSQL restarted mid-calls", found)
    assert found == {
        "calls_in_flight": 3,
        "calls_kept": 3,
        "calls_lost": 0,
        "messages_accepted": 0,
        "messages_stored": 0,
        "messages_duplicated": 0,
        "timeline_events_checked": checked,
        "timeline_events_lost": 0,
        "timeline_events_duplicated": 0,
    }, f"PostgreSQL was away {down_s:.1f} s"


# A 30 s outage -------------------------------------------------------------------------------------------


class Provider:
    """A provider's side of the webhooks: each message posted until Hilo answers 2xx, the same request each
    time (same message id, same signature), as Twilio and Meta redeliver."""

    def __init__(self, stack: Stack, twilio: FakeTwilio, meta: FakeWhatsApp) -> None:
        self.stack, self.twilio, self.meta = stack, twilio, meta
        self.pending: dict[str, tuple[str, Any]] = {}  # message id -> (which, what is posted)
        self.acknowledged: dict[str, int] = {}  # message id -> times answered 2xx
        self.refused: dict[str, list[tuple[int, str]]] = {}  # message id -> (status, Retry-After) answered
        self.http = aiohttp.ClientSession()

    def sms(self, sender: str, text: str) -> str:
        params = self.twilio.inbound_params(sender, SMS_NUMBER, text)
        self.pending[params["MessageSid"]] = ("twilio", params)
        return params["MessageSid"]

    def whatsapp(self, wa_id: str, text: str) -> str:
        message = self.meta.text_message(wa_id, text)
        self.pending[message["id"]] = ("meta", self.meta.envelope(PHONE_NUMBER_ID, messages=[message]))
        return str(message["id"])

    async def deliver(self, message_id: str) -> int:
        which, payload = self.pending[message_id]
        if which == "twilio":
            url = str(self.stack.client.make_url("/webhooks/twilio/messages"))
            headers = {"X-Twilio-Signature": twilio_signature(self.twilio.auth_token, url, payload.items())}
            body: Any = payload
        else:
            url = str(self.stack.client.make_url("/webhooks/whatsapp"))
            body = meta_json(payload)
            headers = {
                "Content-Type": "application/json",
                "X-Hub-Signature-256": whatsapp_signature(self.meta.app_secret, body),
            }
        async with self.http.post(url, data=body, headers=headers) as response:
            status, retry_after = response.status, response.headers.get("Retry-After", "")
        if 200 <= status < 300:
            self.acknowledged[message_id] = self.acknowledged.get(message_id, 0) + 1
        else:
            self.refused.setdefault(message_id, []).append((status, retry_after))
        return status

    async def redeliver(self) -> bool:
        """Each message not acknowledged yet posted again; True when all are."""
        for message_id in self.pending:
            if message_id not in self.acknowledged:
                await self.deliver(message_id)
        return self.acknowledged.keys() >= self.pending.keys()


@pytest.mark.fault
async def test_a_30_s_postgres_outage_loses_no_call_no_message_and_no_event(
    stack: Stack, queues_wait_long: None, providers: tuple[FakeTwilio, FakeWhatsApp], fault_report: FaultReport
) -> None:
    loop = asyncio.get_running_loop()
    provider = Provider(stack, *providers)
    try:
        async with visitor(stack) as (chat, token):
            # Before: one SMS stored and acknowledged.
            before = provider.sms(caller(), "hello before")
            assert await provider.deliver(before) == 200

            began = loop.time()
            async with postgres_stopped(ENV_FILE):
                # Ana calls while the store is away: answered, greeted as a caller not identified yet, served by
                # the menu, and waiting for support (its events go to the spool).
                mark = stack.ari_events.mark()
                call = await originate_sim_call(stack.observer, "100", KNOWN_CALLER, SUPPORT, namespace=NAMESPACE)
                await stack.ari_events.expect("ChannelDtmfReceived", within=30, since=mark, channel__id=call.ivr_leg)
                # The providers' webhooks meanwhile: refused with a clear 503 and Retry-After, never acknowledged.
                sms, whatsapp = provider.sms(caller(), "hello during"), provider.whatsapp(caller()[1:], "hola")
                assert await provider.deliver(sms) == 503
                assert await provider.deliver(whatsapp) == 503
                # A web chat message: not acknowledged, refused naming the store (the widget sends it again).
                at = chat.frames.mark()
                await chat.ws.send_json({"type": "message", "id": "during-1", "text": "hola web"})
                refused = await chat.frames.expect("error", within=10, since=at, id="during-1")
                assert refused["field"] == "store" and refused["retry_after"] > 0
                # For the rest of the 30 s the call stays up, and the providers redeliver as they would.
                legs = {call.caller_leg, call.ivr_leg}
                while (left := OUTAGE_S - (loop.time() - began)) > 0:
                    await stack.ari_events.expect_none(
                        "ChannelDestroyed", within=min(left, 10), since=mark, channel__id=lambda i: i in legs
                    )
                    await provider.redeliver()
                assert not provider.acknowledged.keys() - {before}
            await postgres_answers(stack.pool, BACK_WITHIN_S)

            # Back: the provider's next redelivery is stored and acknowledged; one more (a lost 200) changes nothing.
            await eventually(
                provider.redeliver,
                within=30,
                what="every message acknowledged after the outage",
            )
            assert await provider.deliver(sms) == 200
            # The widget sends its message again, with the same id: stored now, once; again, a duplicate.
            assert (await chat.say("during-1", "hola web"))["duplicate"] is False
            assert (await chat.say("during-1", "hola web"))["duplicate"] is True
            web_id = f"{visitor_id(token)}:during-1"
            # The call reaches bob, and the caller is identified late, as Ana.
            interaction = await eventually(
                lambda: stack.pool.fetchval("SELECT id::text FROM interactions WHERE channel_ref = $1", call.ivr_leg),
                within=30,
                what="the call's interaction written from the spool",
            )
            await stack.hilo_events.expect("agent.answered", within=60, interaction_id=interaction, data__agent="bob")
            identified = await stack.hilo_events.expect("customer.identified", within=30, interaction_id=interaction)
            assert identified["data"]["late"] is True
            ended = await hang_up(stack, call, interaction)
            kept = int(ended["data"] == {"outcome": "completed", "hangup_by": "caller"})
            checked, lost, events_duplicated = await check_timeline(stack, interaction, TALKED)
            # Served as not identified yet (greeted as a new caller), with the store's absence on the record.
            rows = await timeline_of(stack, interaction)
            types = [r["type"] for r in rows]
            greeted = [json.loads(r["data"]).get("node") for r in rows if r["type"] == "ivr.say"]
            assert greeted[:1] == ["greet"], greeted
            assert types.index("call.degraded") < types.index("routing.queued")

            stored = await stack.pool.fetch(
                "SELECT provider_message_id, count(*) AS n FROM messages WHERE provider_message_id = ANY($1::text[])"
                " GROUP BY provider_message_id",
                [*provider.pending, web_id],
            )
            counts = {r["provider_message_id"]: r["n"] for r in stored}
            assert all(status == 503 and retry for m in (sms, whatsapp) for status, retry in provider.refused[m])
            found = figures(
                calls_in_flight=1,
                calls_kept=kept,
                messages_accepted=len(provider.acknowledged) + 1,  # and the web chat's
                messages_stored=sum(1 for m in [*provider.acknowledged, web_id] if counts.get(m, 0) >= 1),
                messages_duplicated=sum(max(0, n - 1) for n in counts.values()),
                timeline_events_checked=checked,
                timeline_events_lost=lost,
                timeline_events_duplicated=events_duplicated,
            )
            record_figures(fault_report, "PostgreSQL away 30 s", found)
            assert found == {
                "calls_in_flight": 1,
                "calls_kept": 1,
                "calls_lost": 0,
                "messages_accepted": 4,
                "messages_stored": 4,
                "messages_duplicated": 0,
                "timeline_events_checked": checked,
                "timeline_events_lost": 0,
                "timeline_events_duplicated": 0,
            }
    finally:
        await provider.http.close()
