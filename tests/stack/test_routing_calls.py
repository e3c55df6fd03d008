"""Routing over real calls and real SIP phones: who gets each of two simultaneous callers (skill level, then
idle time), ring-no-answer moving the call to the next agent (a SIPp phone that rings and is never picked
up), and overflow into another queue after the queue's escalation timer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import pytest

from dialplans.models import Agent, Queue, load_routing
from routing.engine import RoutingEngine
from server.simcall import SimCall
from tests.stack.calls import hang_up, place
from tests.stack.conftest import Stack

CALLERS = ("+34911000101", "+34911000102")
SALES, SUPPORT = "1", "2"  # the demo line's menu keys


def engine_of(stack: Stack) -> RoutingEngine:
    assert stack.services.routing is not None
    return stack.services.routing


def demo_agent(stack: Stack, agent_id: str) -> Agent:
    return next(a for a in load_routing(stack.settings.dialplans_dir).agents if a.id == agent_id)


def demo_queue(stack: Stack, queue_id: str) -> Queue:
    return next(q for q in load_routing(stack.settings.dialplans_dir).queues if q.id == queue_id)


async def call(stack: Stack, caller: str, key: str) -> tuple[SimCall, str]:
    placed, started = await place(stack, caller, key)
    return placed, started["interaction_id"]


@pytest.fixture
async def bob_in_sales(stack: Stack) -> AsyncIterator[Agent]:
    """Bob also serves sales for this test, at alice's level (4) unless the test changes it."""
    engine = engine_of(stack)
    bob = demo_agent(stack, "bob")
    await engine.put_agent(
        bob.model_copy(update={"queues": ["sales", "support"], "skills": {**bob.skills, "sales": 4}})
    )
    yield bob
    await engine.put_agent(bob)


@pytest.fixture
async def dave(stack: Stack) -> AsyncIterator[str]:
    """A sales agent with the best sales skill whose phone (PJSIP/agent-noanswer, a SIPp phone started by
    stack/up.sh) rings and is never picked up."""
    engine = engine_of(stack)
    await engine.put_agent(
        Agent(id="dave", name="Dave", sip_endpoint="agent-noanswer", queues=["sales"], skills={"sales": 9}),
        presence_if_new="available",
    )
    yield "dave"
    await engine.state.drop_agent("dave")
    await stack.pool.execute("DELETE FROM agent_states WHERE agent_id = 'dave'")
    await stack.pool.execute("DELETE FROM agents WHERE id = 'dave'")


async def test_two_simultaneous_callers_go_to_the_longest_idle_then_the_next_agent(
    stack: Stack, bob_in_sales: Agent
) -> None:
    engine = engine_of(stack)
    # Alice has been idle longer: bob comes back from a break now.
    assert await engine.set_state("bob", "away", "break")
    assert await engine.set_state("bob", "available")
    first, first_id = await call(stack, CALLERS[0], SALES)
    second, second_id = await call(stack, CALLERS[1], SALES)
    queued: dict[str, datetime] = {}
    answered_by: dict[str, str] = {}
    for interaction in (first_id, second_id):
        event = await stack.hilo_events.expect("routing.queued", within=20, interaction_id=interaction)
        queued[interaction] = datetime.fromisoformat(event["at"])
        event = await stack.hilo_events.expect("agent.answered", within=30, interaction_id=interaction)
        answered_by[interaction] = event["data"]["agent"]
    earlier, later = sorted(queued, key=queued.__getitem__)
    # the caller who queued first gets the agent idle longest; the other caller, at the same moment, the next
    assert (answered_by[earlier], answered_by[later]) == ("alice", "bob"), (queued, answered_by)
    # Asterisk's word: each agent's phone is bridged on a call
    for name in ("PJSIP/agent-alice-", "PJSIP/agent-bob-"):
        await stack.ari_events.expect("ChannelEnteredBridge", within=5, channel__name=lambda n, p=name: n.startswith(p))
    await hang_up(stack, first, first_id)
    await hang_up(stack, second, second_id)


async def test_a_higher_skill_level_wins_over_idle_time(stack: Stack, bob_in_sales: Agent) -> None:
    engine = engine_of(stack)
    await engine.put_agent(bob_in_sales.model_copy(update={"queues": ["sales", "support"], "skills": {"sales": 7}}))
    assert await engine.set_state("bob", "away", "break")
    assert await engine.set_state("bob", "available")  # bob idle for less time than alice, but better at sales
    placed, interaction = await call(stack, CALLERS[0], SALES)
    answered = await stack.hilo_events.expect("agent.answered", within=30, interaction_id=interaction)
    assert answered["data"]["agent"] == "bob", answered
    await hang_up(stack, placed, interaction)


async def test_ring_no_answer_moves_the_call_to_the_next_agent_and_sets_the_first_away(stack: Stack, dave: str) -> None:
    engine = engine_of(stack)
    placed, interaction = await call(stack, CALLERS[0], SALES)
    ring_timeout = stack.settings.ring_timeout_s
    offered, not_answered, _, answered = await stack.hilo_events.expect_in_order(
        [
            ("routing.offered", {"interaction_id": interaction, "data__agent": dave}),
            ("routing.not_answered", {"interaction_id": interaction, "data__agent": dave}),
            ("routing.offered", {"interaction_id": interaction, "data__agent": "alice"}),
            ("agent.answered", {"interaction_id": interaction, "data__agent": "alice"}),
        ],
        within=ring_timeout + 25,
    )
    rang = datetime.fromisoformat(not_answered["at"]) - datetime.fromisoformat(offered["at"])
    assert rang.total_seconds() >= ring_timeout - 0.5, f"gave up after {rang}, before the ring timeout"
    # Dave's phone really rang: Asterisk saw it ringing, then cancelled it.
    await stack.ari_events.expect(
        "ChannelDestroyed", within=5, channel__name=lambda n: n.startswith("PJSIP/agent-noanswer-")
    )
    dave_now = await engine.agent(dave)
    assert (dave_now["state"], dave_now.get("reason")) == ("away", "no-answer"), dave_now
    assert answered["data"]["agent"] == "alice"
    await hang_up(stack, placed, interaction)


async def test_a_caller_nobody_in_the_queue_takes_overflows_into_another_queue(stack: Stack) -> None:
    engine = engine_of(stack)
    support = demo_queue(stack, "support")
    await engine.put_queue(
        Queue.model_validate({**support.model_dump(), "escalation": [{"after_s": 2, "overflow": "sales"}]})
    )
    try:
        assert await engine.set_state("bob", "away", "meeting")  # support's only agent
        placed, interaction = await call(stack, CALLERS[0], SUPPORT)
        queued, answered = await stack.hilo_events.expect_in_order(
            [
                ("routing.queued", {"interaction_id": interaction, "data__queue": "support"}),
                ("agent.answered", {"interaction_id": interaction, "data__agent": "alice"}),
            ],
            within=25,
        )
        waited = datetime.fromisoformat(answered["at"]) - datetime.fromisoformat(queued["at"])
        assert waited.total_seconds() >= 1.9, f"answered after {waited}, before the overflow timer"
        resp = await stack.client.get(
            f"/api/routing/interactions/{interaction}", headers={"Authorization": f"Bearer {stack.token}"}
        )
        record = await resp.json()
        assert "sales" in record["places"], record
        await hang_up(stack, placed, interaction)
    finally:
        await engine.put_queue(support)
        await engine.set_state("bob", "available")
