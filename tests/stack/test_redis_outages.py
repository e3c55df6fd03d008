"""Redis going away and coming back. The shared Redis is never restarted nor stopped here.

- Restarts with persistence on (`appendonly yes`): what a restarted Redis replays from its file is the state
  of an earlier life, and routing does not trust it. The tests write what a replay brings back (the routing
  keys of a moment ago, with their marker of an earlier server life) and show that a running engine and a
  starting one rebuild from PostgreSQL instead.
- A 30 s outage costs no call: the test server's own connections are cut and refused for 30 s
  (tests/stack/outages.py) while one call talks to an agent and another arrives and waits.
- The live feeds come back by themselves after a hiccup and catch up: the console and web chat sockets are
  told to reconnect (1013) and, reconnected, get what was published meanwhile (the agent's latest pop, the
  visitor's mailbox); the wallboard's socket stays and its pictures follow what changed after."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from aiohttp import WSCloseCode
from prometheus_client.parser import text_string_to_metric_families

from bridges.messages import OutboundMessage
from bridges.webchat import WebChatSender, visitor_id
from dialplans.models import load_routing
from hilo.db import create_pool
from routing.engine import RoutingEngine
from server.simcall import originate_sim_call
from tests.stack.calls import hang_up, place
from tests.stack.conftest import NAMESPACE, Stack
from tests.stack.expect import EventStream, eventually
from tests.stack.faults import FaultReport, calls_up_during, kept_by_callers, timeline_missing
from tests.stack.outages import redis_away
from tests.stack.test_conversations import visitor
from tests.stack.test_screenpop import bearer, console_feed, offered_interaction, sign_in

EARLIER_LIFE = "0" * 40  # a run_id the Redis server does not have (it makes a new one at every start)


def new_id() -> str:
    return str(uuid.uuid4())


def engine_of(stack: Stack) -> RoutingEngine:
    assert stack.services.routing is not None
    return stack.services.routing


async def snapshot(redis: aioredis.Redis, prefix: str) -> dict[bytes, bytes]:
    """Every routing key as Redis would write it to its file (DUMP), to be replayed later."""
    dumped: dict[bytes, bytes] = {}
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        value = await redis.dump(key)
        if value is not None:
            dumped[key] = value
    return dumped


async def replay(engine: RoutingEngine, dumped: dict[bytes, bytes]) -> None:
    """What a Redis restarted on its append-only file holds: exactly the keys of then (nothing of since), and
    the marker of the life they were built in, which is not the running server's."""
    await engine.state.clear()
    for key, value in dumped.items():
        await engine.redis.restore(key, 0, value, replace=True)
    await engine.redis.set(f"{engine.state.prefix}:built", EARLIER_LIFE)


async def run_id(redis: aioredis.Redis) -> str:
    return str((await redis.info("server"))["run_id"])


@pytest.fixture
async def stale_replay(stack: Stack) -> AsyncIterator[tuple[dict[bytes, bytes], str]]:
    """The routing keys of a moment when bob was busy on an interaction that has ended since, and alice, who
    went away since, was available. Yields them and that interaction's id."""
    engine = engine_of(stack)
    ended = new_id()
    assert (offer := await engine.enqueue(ended, "support")) is not None and offer.agent_id == "bob"
    assert await engine.answered(ended, "bob")
    dumped = await snapshot(engine.redis, engine.state.prefix)
    await engine.release(ended)  # the interaction ends (on record in PostgreSQL)
    assert await engine.set_state("alice", "away", "lunch")
    yield dumped, ended


async def _stale_gone(engine: RoutingEngine, ended: str) -> bool:
    bob, alice = await engine.agent("bob"), await engine.agent("alice")
    return (
        bob.get("state") == "available"
        and bob.get("load:voice", "0") == "0"
        and alice.get("state") == "away"
        and await engine.state.interaction(ended) == {}
    )


NO_CALL = "routing state only: no call, message or timeline event is involved"


@pytest.mark.fault
async def test_a_running_engine_rebuilds_state_replayed_from_an_earlier_redis_life(
    stack: Stack, stale_replay: tuple[dict[bytes, bytes], str], fault_report: FaultReport
) -> None:
    fault_report.fault("Redis replays an earlier life (running engine)").nothing_to_count(NO_CALL)
    engine = engine_of(stack)
    dumped, ended = stale_replay
    await replay(engine, dumped)
    assert (await engine.agent("bob"))["load:voice"] == "1"  # the replay: bob busy on what has ended
    # Within a tick of the replay (of any reconnection) the engine sees the marker of another life and
    # rebuilds from PostgreSQL: bob free, alice away as she said, the ended interaction nowhere.
    life = (await run_id(engine.redis)).encode()

    async def rebuilt() -> bool:  # the marker is set last: once it is this life's, the rebuild is over
        return await engine.redis.get(f"{engine.state.prefix}:built") == life

    await eventually(rebuilt, within=5, what="the replayed state rebuilt from PostgreSQL")
    assert await _stale_gone(engine, ended)
    nxt = new_id()
    offer = await engine.enqueue(nxt, "support")
    assert offer is not None and offer.agent_id == "bob"  # and routing goes on from the truth
    await engine.remove(nxt, "test over")


@pytest.mark.fault
async def test_a_starting_engine_rebuilds_state_replayed_from_an_earlier_redis_life(
    stack: Stack, stale_replay: tuple[dict[bytes, bytes], str], fault_report: FaultReport
) -> None:
    fault_report.fault("Redis replays an earlier life (starting engine)").nothing_to_count(NO_CALL)
    engine = engine_of(stack)
    dumped, ended = stale_replay
    redis = aioredis.from_url(stack.settings.redis_url.get_secret_value())
    pool = await create_pool(stack.settings.database_url.get_secret_value(), min_size=1, max_size=2)
    starting = RoutingEngine(redis, pool, NAMESPACE, tick_s=30)  # its tick cannot be what rebuilds
    try:
        # The running node's tick is held off (its lock taken), so the starting node's own check is what
        # rebuilds: a node that starts after Redis came back from its file.
        async with engine._lock:
            await replay(engine, dumped)
            await starting.start()
            assert await _stale_gone(starting, ended)
        assert await redis.get(f"{starting.state.prefix}:built") == (await run_id(redis)).encode()
    finally:
        await starting.close()
        await pool.close()
        await redis.aclose()


async def test_state_built_in_the_present_redis_life_is_kept_by_a_starting_engine(stack: Stack) -> None:
    """A network blip or a Hilo restart leaves Redis's memory as it was: the state is kept, not rebuilt."""
    engine = engine_of(stack)
    waiting = new_id()
    assert await engine.set_state("bob", "away", "test")
    assert await engine.enqueue(waiting, "support") is None
    sentinel = f"{engine.state.prefix}:sentinel"  # a rebuild clears every key of the prefix
    await engine.redis.set(sentinel, "kept")
    redis = aioredis.from_url(stack.settings.redis_url.get_secret_value())
    pool = await create_pool(stack.settings.database_url.get_secret_value(), min_size=1, max_size=2)
    starting = RoutingEngine(redis, pool, NAMESPACE, tick_s=30)
    try:
        await starting.start()
        assert await redis.get(sentinel) == b"kept"
        assert await starting.position(waiting) == 1
    finally:
        await starting.close()
        await pool.close()
        await redis.aclose()
        await engine.redis.delete(sentinel)
        await engine.remove(waiting, "test over")


# A 30 s outage -------------------------------------------------------------------------------------------

OUTAGE_S = 30.0
TALKING, ARRIVING = "+34911222333", "+34911000177"  # Ana García (a demo customer), a caller new to Hilo
SALES, SUPPORT = "1", "2"  # the demo line's menu keys


@pytest.fixture
async def sales_waits_long(stack: Stack) -> AsyncIterator[None]:
    """Sales lets a caller wait 2 minutes (the stack tests' default is 30 s): the test is about the outage,
    not about a queue whose wait is shorter than it (that caller would hear the queue's end, as documented)."""
    engine = engine_of(stack)
    sales = next(q for q in load_routing(stack.settings.dialplans_dir).queues if q.id == "sales")
    await engine.put_queue(sales.model_copy(update={"max_wait_s": 120}))
    yield
    await engine.put_queue(sales)


def degraded(metrics: str, part: str, what: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "hilo_degraded_total" and sample.labels == {"part": part, "what": what}:
                return float(sample.value)
    return 0.0


@pytest.mark.fault
async def test_a_30_s_redis_outage_costs_no_call(
    stack: Stack, sales_waits_long: None, fault_report: FaultReport
) -> None:
    assert stack.services.redis is not None
    loop = asyncio.get_running_loop()
    published = stack.hilo_events.mark()
    talking, started = await place(stack, TALKING, SUPPORT)
    talking_id = started["interaction_id"]
    await stack.hilo_events.expect("agent.answered", within=30, interaction_id=talking_id, data__agent="bob")
    bob_leg = await stack.ari_events.expect(
        "ChannelEnteredBridge", within=5, channel__name=lambda n: n.startswith("PJSIP/agent-bob-")
    )
    before = degraded(await (await stack.client.get("/metrics")).text(), "redis", "enqueue")

    outage_began = datetime.now(UTC)
    async with redis_away(stack.services.redis):
        began, mark = loop.time(), stack.ari_events.mark()
        with pytest.raises(redis.exceptions.ConnectionError):
            await stack.services.redis.ping()  # the server has no Redis
        # A caller arrives during the outage: answered, greeted, served by the menu, and queued to sales.
        arriving = await originate_sim_call(stack.observer, "100", ARRIVING, SALES, namespace=NAMESPACE)
        arriving_id = await eventually(
            lambda: stack.pool.fetchval("SELECT id::text FROM interactions WHERE channel_ref = $1", arriving.ivr_leg),
            within=15,
            what="the arriving call answered, its interaction opened (its events cannot be published meanwhile)",
        )
        await eventually(
            lambda: stack.pool.fetchval(
                "SELECT count(*) FROM timeline_events WHERE interaction_id = $1::uuid AND type = 'call.degraded'"
                ' AND data = \'{"part": "redis", "what": "enqueue"}\'::jsonb',
                arriving_id,
            ),
            within=30,
            what="the arriving caller on hold while routing does not answer",
        )
        # For the rest of the 30 s, nobody's channel goes: the call talking to bob nor the one waiting.
        legs = {talking.caller_leg, talking.ivr_leg, bob_leg["channel"]["id"], arriving.caller_leg, arriving.ivr_leg}
        await stack.ari_events.expect_none(
            "ChannelDestroyed", within=OUTAGE_S - (loop.time() - began), since=mark, channel__id=lambda i: i in legs
        )
    assert loop.time() - began >= OUTAGE_S
    in_flight = await calls_up_during(stack.pool, outage_began, datetime.now(UTC))

    # Redis is back: the waiting caller is queued and reaches alice; the call with bob was never touched.
    await stack.hilo_events.expect("agent.answered", within=30, interaction_id=arriving_id, data__agent="alice")
    for call, interaction in ((talking, talking_id), (arriving, arriving_id)):
        ended = await hang_up(stack, call, interaction)
        assert ended["data"] == {"outcome": "completed", "hangup_by": "caller"}
    after = degraded(await (await stack.client.get("/metrics")).text(), "redis", "enqueue")
    assert after == before + 1  # one degraded moment for the outage, not one per try
    assert not [e for e in stack.hilo_events.events[stack.hilo_events.baseline :] if e["type"] == "routing.refused"]
    # In flight: every call up at some moment of the outage (one talking as it began, one arriving in it).
    assert set(in_flight) == {talking_id, arriving_id}
    fault = fault_report.fault("Redis away 30 s")
    fault.calls(in_flight=len(in_flight), kept=await kept_by_callers(stack.pool, in_flight))
    answered = ("interaction.started", "agent.answered", "interaction.ended")
    # The arriving call's events were written while nothing could be published: they count, feed or not.
    required = {talking_id: answered, arriving_id: (*answered, "call.degraded", "routing.queued")}
    fault.timeline(*await timeline_missing(stack.pool, stack.hilo_events.events[published:], required))


# The live feeds after a hiccup ---------------------------------------------------------------------------


@pytest.mark.fault
async def test_the_live_feeds_reconnect_and_catch_up_after_a_redis_hiccup(
    stack: Stack, fault_report: FaultReport
) -> None:
    assert stack.services.redis is not None and stack.services.webchat is not None
    assert stack.services.screenpops is not None and stack.services.board is not None
    bob = await sign_in(stack, "bob", "agent", "bob")
    sue = await sign_in(stack, "sue", "supervisor", teams=["front-office", "back-office"])
    feed = stack.services.webchat.feed
    async with (
        console_feed(stack, bob) as console,
        visitor(stack) as (chat, token),
        stack.client.ws_connect("/console/wallboard/ws", headers=bearer(sue)) as wallboard,
    ):
        pictures = EventStream("wallboard socket")
        reading = asyncio.create_task(_read(wallboard, pictures))
        await pictures.expect("wallboard", within=10)
        subscribed = feed.subscriptions
        async with redis_away(stack.services.redis):
            # The sockets whose feed is a Redis subscription are told to reconnect, not left up and silent.
            assert await asyncio.wait_for(console.closed, 10) == WSCloseCode.TRY_AGAIN_LATER
            await asyncio.wait_for(chat.task, 10)
            assert chat.ws.close_code == WSCloseCode.TRY_AGAIN_LATER
        await asyncio.wait_for(feed.ready.wait(), 15)  # the node's web chat feed subscribed again by itself
        assert feed.subscriptions > subscribed

        # Redis is back; while the pages are still away, the agent is offered an interaction (its pop is
        # published) and the visitor is sent a reply.
        offered = await offered_interaction(stack, "bob", answered=False)
        await stack.services.screenpops.on_offer(offered, "bob")
        await WebChatSender(stack.services.redis, NAMESPACE).send(
            OutboundMessage(
                channel="webchat",
                provider="webchat",
                sender="web",
                recipient=visitor_id(token),
                text="Written while you were away.",
                conversation_id="c-hiccup",
            ),
            990_001,
        )
        # The wallboard's socket never closed: the next pictures follow what changes now.
        await stack.services.board.set_state("bob", "away", reason="hiccup")
        await pictures.expect("wallboard", within=15, agents=lambda agents: _state_of(agents, "bob") == "away")
        reading.cancel()

    # The pages reconnect, as console/static/api.js and the chat widget do, and catch up.
    async with console_feed(stack, bob) as again:
        await again.messages.expect("screenpop", within=5, interaction_id=str(offered.id))
        pops = [m for m in again.messages.events if m.get("type") == "screenpop"]
    async with visitor(stack, token) as (back, _):
        await back.frames.expect("message", within=5, id=990_001, text="Written while you were away.")
        replies = [f for f in back.frames.events if f.get("type") == "message" and f.get("id") == 990_001]
    # Messages: the agent's pop and the visitor's reply, published while their pages were away; "stored" is
    # what each page got on reconnecting (the pop the latest only: one), "duplicated" what it got twice.
    fault_report.fault("Redis hiccup under the live feeds").messages(
        accepted=2,
        stored=min(len(pops), 1) + min(len(replies), 1),
        duplicated=max(len(pops) - 1, 0) + max(len(replies) - 1, 0),
    )


async def _read(ws: Any, stream: EventStream) -> None:
    async for message in ws:
        stream.add(json.loads(message.data))


def _state_of(agents: list[dict[str, Any]], agent_id: str) -> str | None:
    return next((a.get("state") for a in agents if a.get("id") == agent_id), None)
