"""No ghost, ever: after a burst of callers who hang up at any moment (in the menu, in the queue, while the
agent's phone rings, at the moment the agent answers, talking), with some of routing's writes failing on the
way as a starved pool's do at a peak and some closings lost, nothing is left within seconds (no interaction
routing holds, none open, no agent ringing, nobody on the wallboard) and the next caller reaches an agent.
And ghosts made on purpose (a routing row for a channel that does not exist, an interaction ended while
routing holds it, an agent's phone ringing for it) are ended by the reconciler with the reason on the
timeline, while a call in its first moments, a booked callback and a live chat are left alone."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crm_bridge.customers import create_anonymous
from crm_bridge.timeline import Interaction, Timeline
from dialplans.models import Queue, load_routing
from ivr.reconcile import INTERACTION_ENDED, NO_LIVE_CHANNEL, Reconciler
from reports.facts import waiting_now
from routing.engine import RoutingEngine
from routing.model import Outcome
from server.simcall import SimCall, originate_sim_call
from tests.stack.conftest import NAMESPACE, Stack
from tests.stack.expect import eventually
from tests.stack.faults import FaultReport, timeline_missing

SEED = 20_241_207
CALLERS = 40
AGENTS = ("alice", "bob")
KNOWN_CALLER = "+34911222333"
FAIL_RECORD, FAIL_END = 0.1, 0.15  # the share of routing records and of interaction closings that fail


def engine_of(stack: Stack) -> RoutingEngine:
    assert stack.services.routing is not None
    return stack.services.routing


def reconciler_of(stack: Stack) -> Reconciler:
    assert stack.services.calls is not None
    return stack.services.calls.reconciler


def _support(stack: Stack) -> Queue:
    return next(q for q in load_routing(stack.settings.dialplans_dir).queues if q.id == "support")


_PLACED: list[SimCall] = []


@pytest.fixture(autouse=True)
async def hang_up_leftovers(stack: Stack) -> AsyncIterator[None]:
    """A test that fails half-way still hangs up the callers it placed."""
    yield
    while _PLACED:
        await stack.observer.hangup(_PLACED.pop().caller_leg)


async def ghosts(stack: Stack) -> list[str]:
    """Everything that is left of calls that are gone, as each place shows it; [] when nothing is."""
    engine, pool = engine_of(stack), stack.pool
    found = [str(v) for v in await reconciler_of(stack).check()]
    found += [f"Redis holds {i} ({h['state']})" for i, h in (await engine.held()).items()]
    rows = await pool.fetch("SELECT interaction_id, state FROM routing_interactions WHERE state <> 'ended'")
    found += [f"routing's record holds {r['interaction_id']} ({r['state']})" for r in rows]
    found += [f"open: {r['id']} ({r['state']})" for r in await pool.fetch(
        "SELECT id, state FROM interactions WHERE ended_at IS NULL")]  # fmt: skip
    found += [f"the wallboard shows {w.interaction_id} waiting in {w.queue}" for w in await waiting_now(pool)]
    for agent_id, live in zip(AGENTS, await engine.agents(list(AGENTS)), strict=True):
        if live.get("state") != "available":
            found.append(f"{agent_id} is {live.get('state')} ({live.get('offer') or live.get('reason')})")
    legs = [c["id"] for c in await stack.observer.request("GET", "/channels")]
    found += [f"agent leg {c} in Asterisk" for c in legs if c.startswith(f"{NAMESPACE}-agent-")]
    return found


async def no_ghosts(stack: Stack, within: float) -> None:
    last: list[list[str]] = [[]]

    async def clean() -> bool:
        last[0] = await ghosts(stack)
        return not last[0]

    try:
        await eventually(clean, within=within, what="no ghost")
    except AssertionError as exc:
        raise AssertionError(f"ghosts after {within}s: {last[0]}") from exc


class Starved:
    """A peak's failures, seeded: a share of routing's records raise as a starved pool's do (what was decided
    in Redis stays decided; the call path retries or gives the place up), and a share of the interactions'
    closings are lost, as when the node handling the call dies before writing it."""

    def __init__(self, engine: RoutingEngine, timeline: Timeline, rng: random.Random) -> None:
        self.engine, self.timeline, self.rng = engine, timeline, rng
        self.record: Callable[[Outcome], Awaitable[None]] = engine.store.record
        self.end: Callable[..., Awaitable[bool]] = timeline.end_interaction
        self.unclosed: set[str] = set()  # interactions whose closing failed
        self.failed_records = 0

    async def _record(self, outcome: Outcome) -> None:
        if outcome.events and self.rng.random() < FAIL_RECORD:
            self.failed_records += 1
            raise TimeoutError("no connection from the pool in time (injected)")
        await self.record(outcome)

    async def _end(self, interaction: Interaction, outcome: str, hangup_by: str, ended_at: Any = None) -> bool:
        if self.rng.random() < FAIL_END:
            self.unclosed.add(str(interaction.id))
            raise TimeoutError("no connection from the pool in time (injected)")
        return await self.end(interaction, outcome, hangup_by, ended_at)

    def __enter__(self) -> Starved:
        self.engine.store.record = self._record  # type: ignore[method-assign]
        self.timeline.end_interaction = self._end  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self.engine.store.record
        del self.timeline.end_interaction


@pytest.fixture
async def burst_setup(stack: Stack) -> AsyncIterator[Reconciler]:
    """Support overflows into sales after 1 s (alice takes support callers too); the reconciler runs every
    0.5 s with a 1 s grace, so what the burst leaves is ended within the test's bound."""
    engine, rec = engine_of(stack), reconciler_of(stack)
    support = _support(stack)
    await engine.put_queue(
        Queue.model_validate({**support.model_dump(), "escalation": [{"after_s": 1, "overflow": "sales"}]})
    )
    grace, interval = rec.grace_s, rec.interval_s
    rec.grace_s, rec.interval_s = 1.0, 0.5
    rec.wake()
    yield rec
    rec.grace_s, rec.interval_s = grace, interval
    await engine.put_queue(support)


@pytest.mark.fault
async def test_a_burst_of_callers_leaving_at_any_moment_leaves_no_ghost(
    stack: Stack, burst_setup: Reconciler, fault_report: FaultReport
) -> None:
    rng = random.Random(SEED)
    assert stack.services.timeline is not None
    mark_ari, mark_hilo = stack.ari_events.mark(), stack.hilo_events.mark()
    # Each caller's way of leaving: after `hold` seconds wherever they are (Asterisk hangs up the simulated
    # phone: menu, queue, ringing, talking), or as their agent's phone starts ringing, or as it answers.
    plans = [rng.choice(["hold", "hold", "ringing", "answer"]) for _ in range(CALLERS)]
    holds = [round(rng.uniform(1.0, 10.0), 1) if plan == "hold" else 25.0 for plan in plans]
    interactions: dict[str, SimCall] = {}

    async def leave(placed: SimCall, iid: str, plan: str) -> None:
        try:
            if plan == "ringing":
                await stack.hilo_events.expect("routing.offered", within=20, since=mark_hilo, interaction_id=iid)
                await stack.observer.hangup(placed.caller_leg)
            elif plan == "answer":  # the agent's leg enters the app as the agent picks up
                prefix = f"{NAMESPACE}-agent-{iid}-"
                await stack.ari_events.expect(
                    "StasisStart", within=20, since=mark_ari, channel__id=lambda c: str(c).startswith(prefix)
                )
                await stack.observer.hangup(placed.caller_leg)
        except AssertionError:  # never offered in time: they leave after `hold` anyway
            pass
        await stack.ari_events.expect("ChannelDestroyed", within=40, since=mark_ari, channel__id=placed.caller_leg)

    leaving = []
    with Starved(engine_of(stack), stack.services.timeline, rng) as starved:
        for n in range(CALLERS):  # one after the other, each as soon as the previous one is in
            placed = await originate_sim_call(
                stack.observer, "100", f"+3460055{n:04d}", "2", namespace=NAMESPACE, hold_s=holds[n]
            )
            _PLACED.append(placed)
            started = await stack.hilo_events.expect(
                "interaction.started", within=15, since=mark_hilo, data__channel_ref=placed.ivr_leg
            )
            interactions[started["interaction_id"]] = placed
            leaving.append(asyncio.create_task(leave(placed, started["interaction_id"], plans[n])))
        await asyncio.gather(*leaving)  # every caller has gone
    _PLACED.clear()

    await no_ghosts(stack, within=5)
    # What the reconciler ended were calls already gone: it never cut a caller off.
    gone_at = {
        e["channel"]["id"]: datetime.fromisoformat(e["timestamp"])
        for e in stack.ari_events.events[mark_ari:]
        if e.get("type") == "ChannelDestroyed"
    }
    reconciled = [e for e in stack.hilo_events.events[mark_hilo:] if e["type"] == "interaction.reconciled"]
    cut_off = [
        e
        for e in reconciled
        if not gone_at.get(interactions[e["interaction_id"]].ivr_leg, datetime.max.replace(tzinfo=UTC))
        <= datetime.fromisoformat(e["at"])
    ]
    # Every caller ended the call (at a random moment); a call the reconciler ended while its caller was still
    # on it is lost. Each interaction's timeline has its start and its end (by the call, or by the reconciler
    # where the closing failed on purpose).
    fault = fault_report.fault(f"{CALLERS} callers hanging up at random moments, pool starved")
    fault.calls(in_flight=len(interactions), kept=len(interactions) - len(cut_off))
    required = {iid: ("interaction.started", "interaction.ended|interaction.reconciled") for iid in interactions}
    fault.timeline(*await timeline_missing(stack.pool, stack.hilo_events.events[mark_hilo:], required))
    assert not cut_off, cut_off
    # An interaction whose closing failed was closed by the reconciler, with the reason on its timeline.
    assert starved.unclosed <= {e["interaction_id"] for e in reconciled}, (starved.unclosed, reconciled)
    print(
        f"{CALLERS} callers ({plans.count('ringing')} left as it rang, {plans.count('answer')} as it was answered);"
        f" {starved.failed_records} routing records and {len(starved.unclosed)} closings failed;"
        f" {len(reconciled)} reconciled"
    )

    # The next caller reaches an agent.
    mark = stack.hilo_events.mark()
    placed = await originate_sim_call(stack.observer, "100", KNOWN_CALLER, "2", namespace=NAMESPACE)
    _PLACED.append(placed)
    started = await stack.hilo_events.expect(
        "interaction.started", within=10, since=mark, data__channel_ref=placed.ivr_leg
    )
    await stack.hilo_events.expect("agent.answered", within=30, since=mark, interaction_id=started["interaction_id"])
    await stack.observer.hangup(_PLACED.pop().caller_leg)
    await stack.hilo_events.expect("interaction.ended", within=10, since=mark, interaction_id=started["interaction_id"])
    await no_ghosts(stack, within=5)


# Ghosts made on purpose ----------------------------------------------------------------------------


@pytest.fixture
async def paused(stack: Stack) -> AsyncIterator[Reconciler]:
    """The server's reconciler with its loop paused and a clock the test moves: the test runs the passes."""
    rec = reconciler_of(stack)
    await rec.close()
    clock, grace = rec.clock, rec.grace_s
    rec.grace_s = 30.0
    yield rec
    rec.clock, rec.grace_s = clock, grace
    rec.start()


async def _voice(stack: Stack, customer: uuid.UUID, channel_ref: str, started_ago_s: float) -> Interaction:
    assert stack.services.timeline is not None
    return await stack.services.timeline.start_interaction(
        customer,
        "voice",
        "inbound",
        channel_ref=channel_ref,
        started_at=datetime.now(UTC) - timedelta(seconds=started_ago_s),
    )


async def test_the_reconciler_ends_ghosts_with_the_reason_and_leaves_the_living_alone(
    stack: Stack, paused: Reconciler
) -> None:
    engine, pool, timeline = engine_of(stack), stack.pool, stack.services.timeline
    assert timeline is not None
    now = [1_000.0]
    paused.clock = lambda: now[0]
    customer = (await create_anonymous(pool)).customer_id
    # A: a caller queued a minute ago whose channel Asterisk does not know; offered to bob, whose phone rings.
    ghost = await _voice(stack, customer, f"{NAMESPACE}-gone-{uuid.uuid4()}", 60)
    offer = await engine.enqueue(str(ghost.id), "support")
    assert offer is not None and offer.agent_id == "bob"
    leg = f"{NAMESPACE}-agent-{ghost.id}-{uuid.uuid4().hex[:12]}"
    await stack.observer.originate(
        "PJSIP/agent-noanswer", app=NAMESPACE, app_args=f"agent,{ghost.id}", timeout_s=60, channel_id=leg
    )
    await stack.ari_events.expect("ChannelStateChange", within=5, channel__id=leg, channel__state="Ringing")
    assert await engine.set_state("bob", "away", "test")  # nobody takes the others
    # C: ended a minute ago, yet still waiting in routing (its removal could not be written).
    ended = await _voice(stack, customer, f"{NAMESPACE}-gone-{uuid.uuid4()}", 90)
    await timeline.end_interaction(ended, "abandoned", "caller", ended_at=datetime.now(UTC) - timedelta(seconds=60))
    assert await engine.enqueue(str(ended.id), "support") is None
    # B: a call in its first moments (its channel not seen yet), D: a booked callback, E: a live web chat.
    fresh = await _voice(stack, customer, f"{NAMESPACE}-new-{uuid.uuid4()}", 0)
    booked = await _voice(stack, customer, f"{NAMESPACE}-gone-{uuid.uuid4()}", 120)
    await timeline.end_interaction(booked, "callback-requested", "system")
    await pool.execute(
        "INSERT INTO callbacks (interaction_id, customer_id, number) VALUES ($1, $2, '+34911000999')",
        booked.id,
        customer,
    )
    chat = await timeline.start_interaction(customer, "webchat", "inbound")
    await pool.execute(
        "INSERT INTO conversations (interaction_id, customer_id, channel, provider, address, our_address)"
        " VALUES ($1, $2, 'webchat', 'webchat', 'visitor-1', 'site-1')",
        chat.id,
        customer,
    )
    for it, channel in ((fresh, "voice"), (booked, "voice"), (chat, "webchat")):
        assert await engine.enqueue(str(it.id), "support", channel=channel) is None
    registry = stack.services.registry

    def counted(reason: str) -> float:
        return registry.get_sample_value("hilo_reconciled_total", {"reason": reason}) or 0.0

    before = {r: counted(r) for r in (NO_LIVE_CHANNEL, INTERACTION_ENDED)}

    # First pass: what ended a minute ago goes at once; the vanished call is only seen gone for now (its own
    # node may still be ending it); the rest is alive.
    first = await paused.run_once()
    assert [(d.interaction_id, d.reason, d.ended) for d in first] == [(str(ended.id), INTERACTION_ENDED, ("routing",))]
    assert str(ghost.id) in await engine.held()
    # Seen gone for the grace: ended everywhere, bob's phone stops ringing.
    now[0] += 30
    second = await paused.run_once()
    assert [(d.interaction_id, d.reason, d.ended) for d in second] == [
        (str(ghost.id), NO_LIVE_CHANNEL, ("routing", "agent-leg", "interaction"))
    ]
    await stack.ari_events.expect("ChannelDestroyed", within=5, channel__id=leg)
    assert await paused.run_once() == []  # nothing more, and twice has no second effect

    held = await engine.held()
    assert set(held) == {str(fresh.id), str(booked.id), str(chat.id)}, held
    assert (await engine.agent("bob")).get("offer") is None
    records = {
        str(r["interaction_id"]): (r["state"], r["end_reason"])
        for r in await pool.fetch("SELECT interaction_id, state, end_reason FROM routing_interactions")
    }
    assert records[str(ghost.id)] == ("ended", NO_LIVE_CHANNEL)
    assert records[str(ended.id)] == ("ended", INTERACTION_ENDED)
    assert records[str(fresh.id)] == records[str(booked.id)] == records[str(chat.id)] == ("waiting", None)
    closed = {
        str(r["id"]): r["outcome"]
        for r in await pool.fetch("SELECT id, outcome FROM interactions WHERE ended_at IS NOT NULL")
    }
    assert closed == {str(ghost.id): "dropped", str(ended.id): "abandoned", str(booked.id): "callback-requested"}
    for it, reason, what in (
        (ghost, NO_LIVE_CHANNEL, ["routing", "agent-leg", "interaction"]),
        (ended, INTERACTION_ENDED, ["routing"]),
    ):
        await stack.hilo_events.expect(
            "interaction.reconciled", within=5, interaction_id=str(it.id), data={"reason": reason, "ended": what}
        )
    assert counted(NO_LIVE_CHANNEL) == before[NO_LIVE_CHANNEL] + 1
    assert counted(INTERACTION_ENDED) == before[INTERACTION_ENDED] + 1

    for it in (fresh, booked, chat):
        await engine.remove(str(it.id), "test over")
    assert await engine.set_state("bob", "available")
