"""A transfer's way back into routing (routing/decide.lua `enqueue` with an agent to offer it to first), by
the real script on an in-memory Redis: the named agent gets it when they can take it now, ahead of the
agent the queue would choose; otherwise the queue's choice applies, as for anyone."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest

from dialplans.models import Escalation, Queue
from routing.state import RoutingState
from tests.unit.test_routing_decisions import Clock, add_agents, agent, iid


@pytest.fixture
async def routing() -> AsyncIterator[tuple[RoutingState, Clock]]:
    clock = Clock()
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    state = RoutingState(redis, "unit", clock=clock)
    await state.configure(offer_ttl_s=60)
    await state.put_queue(Queue(id="support", name="Support"), default_max_wait_s=300)
    await state.put_queue(Queue(id="sales", name="Sales"), default_max_wait_s=300)
    yield state, clock
    await redis.aclose()


async def test_the_named_agent_gets_it_ahead_of_the_queues_choice(routing: tuple[RoutingState, Clock]) -> None:
    state, clock = routing
    await add_agents(state, clock, agent("ann", ["support"]), agent("ben", ["support"]))  # ann idles longest
    offered = await state.enqueue(iid(1), "support", offer_to="ben")
    assert [(a.interaction_id, a.agent_id) for a in offered.assignments] == [(iid(1), "ben")]
    # an agent of another queue may be named too
    await add_agents(state, clock, agent("cy", ["sales"]))
    offered = await state.enqueue(iid(2), "support", offer_to="cy")
    assert [a.agent_id for a in offered.assignments] == ["cy"]


async def test_a_named_agent_who_cannot_take_it_leaves_it_to_the_queue(routing: tuple[RoutingState, Clock]) -> None:
    state, clock = routing
    await add_agents(state, clock, agent("ann", ["support"]), agent("ben", ["support"]))
    await state.set_presence("ben", "away", reason="lunch")
    offered = await state.enqueue(iid(1), "support", offer_to="ben")
    assert [a.agent_id for a in offered.assignments] == ["ann"]  # the queue's best instead
    offered = await state.enqueue(iid(2), "support", offer_to="ann")  # ann is ringing: one offer at a time
    assert offered.assignments == [] and offered.status == "waiting"
    offered = await state.enqueue(iid(3), "support", offer_to="nobody")
    assert offered.assignments == [] and offered.status == "waiting"


async def test_requeue_puts_it_back_in_its_place_and_frees_the_agent_without_resting_them(
    routing: tuple[RoutingState, Clock],
) -> None:
    state, clock = routing
    await add_agents(state, clock, agent("ann", ["support"]))
    first = await state.enqueue(iid(1), "support")
    assert [a.agent_id for a in first.assignments] == ["ann"]
    await state.answered(iid(1), "ann")
    clock.advance(5)
    await state.enqueue(iid(2), "support")  # came later, waits
    back = await state.requeue(iid(1))
    assert [e["kind"] for e in back.events] == ["requeued", "offered"]
    # ann is not set away, and the requeued one, first in line, is hers again before the later one
    assert [(a.interaction_id, a.agent_id) for a in back.assignments] == [(iid(1), "ann")]
    assert (await state.agent("ann"))["presence"] == "available"
    assert [i for i, _ in await state.waiting("support")] == [iid(2)]
    assert (await state.requeue(iid(2))).status == "not-held"  # only what is with an agent


async def test_a_requeued_interaction_its_agent_takes_back_is_not_offered_to_another_agent_as_well(
    routing: tuple[RoutingState, Clock],
) -> None:
    """The agent freed by a requeue takes the best waiting one, often the requeued interaction itself; it must
    then not also go to an agent its escalation made eligible meanwhile (offered twice: the first agent rings
    for nobody, and the durable record refuses a second open offer)."""
    state, clock = routing
    await state.put_queue(
        Queue(id="support", name="Support", escalation=[Escalation(after_s=30, overflow="sales")]),
        default_max_wait_s=300,
    )
    await add_agents(state, clock, agent("ann", ["support"]))
    first = await state.enqueue(iid(1), "support")
    assert [a.agent_id for a in first.assignments] == ["ann"]
    await add_agents(state, clock, agent("cy", ["sales"]))  # free, and eligible once the overflow is due
    clock.advance(40)  # the overflow is due; the offer (60 s to live) still stands
    back = await state.requeue(iid(1))
    assert [(a.interaction_id, a.agent_id) for a in back.assignments] == [(iid(1), "ann")]
    assert [e["kind"] for e in back.events if e["kind"] == "offered"] == ["offered"]
    assert back.status == "offered"
    assert (await state.agent("cy"))["state"] == "available"
    assert (await state.agent("ann"))["offer"] == iid(1)
