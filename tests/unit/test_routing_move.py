"""Moving a waiting interaction (routing/decide.lua `move`), by the real script on an in-memory Redis: to
another queue it keeps its place in time and its own priority; to an agent it is offered to that agent only
when the agent can take it; anything not waiting is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest

from dialplans.models import Queue
from routing.state import RoutingState
from tests.unit.test_routing_decisions import Clock, add_agents, agent, iid


@pytest.fixture
async def routing() -> AsyncIterator[tuple[RoutingState, Clock]]:
    clock = Clock()
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    state = RoutingState(redis, "unit", clock=clock)
    await state.configure(offer_ttl_s=60)
    await state.put_queue(Queue(id="sales", name="Sales", priority=2), default_max_wait_s=300)
    await state.put_queue(Queue(id="support", name="Support"), default_max_wait_s=300)
    yield state, clock
    await redis.aclose()


async def test_a_move_to_another_queue_keeps_its_place_in_time(routing: tuple[RoutingState, Clock]) -> None:
    state, clock = routing
    await state.enqueue(iid(1), "sales", priority=1)  # waits from t0, own priority 1 (+2 of sales)
    clock.advance(10)
    await state.enqueue(iid(2), "support", priority=1)  # came 10 s later
    clock.advance(5)
    moved = await state.move(iid(1), "queue", "support")
    assert moved.result["status"] == "waiting"
    assert [e["kind"] for e in moved.events] == ["moved"]
    assert (moved.events[0]["from"], moved.events[0]["queue"], moved.events[0]["priority"]) == ("sales", "support", 1)
    assert [i for i, _ in await state.waiting("support")] == [iid(1), iid(2)]  # still ahead: it waited longer
    assert await state.waiting("sales") == []
    it = await state.interaction(iid(1))
    assert (it["queue"], it["priority"]) == ("support", "1")  # sales' own priority does not come along
    # the next agent of support takes it first
    await add_agents(state, clock, agent("sam", ["support"]))
    assert (await state.interaction(iid(1)))["state"] == "offered"


async def test_a_move_to_an_agent_offers_it_to_that_agent_only(routing: tuple[RoutingState, Clock]) -> None:
    state, _ = routing
    await state.put_agent(agent("ana", ["sales"]), presence_if_new="away")
    await state.put_agent(agent("bo", ["support"]), presence_if_new="available")  # not in sales: still allowed
    await state.enqueue(iid(1), "sales")
    busy = await state.move(iid(1), "agent", "ana")
    assert busy.result == {"status": "agent-busy", "state": "away"}
    moved = await state.move(iid(1), "agent", "bo")
    assert moved.result["status"] == "offered"
    assert [(a.interaction_id, a.agent_id, a.via) for a in moved.assignments] == [(iid(1), "bo", "sales")]
    assert (await state.agent("bo"))["state"] == "ringing"
    again = await state.move(iid(1), "queue", "support")  # offered now: no longer waiting
    assert again.result["status"] == "not-waiting"
    assert (await state.move(iid(9), "queue", "support")).result["status"] == "unknown"
    await state.enqueue(iid(2), "sales")
    assert (await state.move(iid(2), "queue", "nowhere")).result["status"] == "unknown-queue"
    assert (await state.move(iid(2), "agent", "nobody")).result["status"] == "unknown-agent"
