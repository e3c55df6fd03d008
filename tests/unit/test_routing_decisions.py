"""The routing decision rules, run by the real script (routing/decide.lua) on an in-memory Redis with a clock
under the test's control: skill levels, longest idle, priorities with aging, escalation, capacity,
wrap-up, ring-no-answer, and determinism."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest

from dialplans.models import Agent, Queue
from routing.state import RoutingState

T0 = 1_700_000_000_000  # ms


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


def iid(n: int) -> str:
    return str(uuid.UUID(int=n))


def agent(agent_id: str, queues: list[str], skills: dict[str, int] | None = None, **capacity: int) -> Agent:
    return Agent(
        id=agent_id,
        name=agent_id,
        sip_endpoint=f"agent-{agent_id}",
        queues=queues,
        skills=skills or {},
        capacity=capacity or {"voice": 1},  # type: ignore[arg-type]
    )


@pytest.fixture
async def routing() -> AsyncIterator[tuple[RoutingState, Clock]]:
    clock = Clock()
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    state = RoutingState(redis, "unit", clock=clock)
    await state.configure(offer_ttl_s=60)
    yield state, clock
    await redis.aclose()


async def add_agents(state: RoutingState, clock: Clock, *agents: Agent) -> None:
    """Available one after the other, a second apart: the first is the longest idle."""
    for a in agents:
        await state.put_agent(a, presence_if_new="available")
        clock.advance(1)


async def test_the_longest_idle_agent_gets_the_interaction(routing: tuple[RoutingState, Clock]) -> None:
    state, clock = routing
    await state.put_queue(Queue(id="sales", name="Sales"), default_max_wait_s=300)
    await add_agents(state, clock, agent("carl", ["sales"]), agent("ana", ["sales"]), agent("bea", ["sales"]))
    first = await state.enqueue(iid(1), "sales")
    assert [(a.interaction_id, a.agent_id, a.endpoint) for a in first.assignments] == [(iid(1), "carl", "agent-carl")]
    assert (await state.agent("carl"))["state"] == "ringing"
    second = await state.enqueue(iid(2), "sales")
    assert second.assignments[0].agent_id == "ana"


async def test_a_higher_skill_level_wins_over_a_longer_idle(routing: tuple[RoutingState, Clock]) -> None:
    state, clock = routing
    await state.put_queue(Queue(id="support", name="Support", skills={"support": 2}), default_max_wait_s=300)
    await state.put_queue(
        Queue(id="plain", name="Plain", skills={"support": 2}, agent_order="longest_idle"), default_max_wait_s=300
    )
    await add_agents(
        state,
        clock,
        agent("novice", ["support", "plain"], {"support": 1}),  # below the required level: never offered
        agent("mid", ["support", "plain"], {"support": 3}),
        agent("expert", ["support", "plain"], {"support": 9}),
    )
    offered = await state.enqueue(iid(1), "support")
    assert offered.assignments[0].agent_id == "expert"
    # longest_idle: the longest-idle *qualified* agent, whatever the level
    offered = await state.enqueue(iid(2), "plain")
    assert offered.assignments[0].agent_id == "mid"
    offered = await state.enqueue(iid(3), "plain")
    assert offered.status == "waiting" and offered.assignments == []  # novice does not qualify
    assert (await state.agent("novice"))["state"] == "available"


async def test_the_interactions_own_skills_add_to_the_queues(routing: tuple[RoutingState, Clock]) -> None:
    state, clock = routing
    await state.put_queue(Queue(id="support", name="Support", skills={"support": 1}), default_max_wait_s=300)
    await add_agents(
        state,
        clock,
        agent("en", ["support"], {"support": 5, "english": 5}),
        agent("es", ["support"], {"support": 2, "spanish": 4}),
    )
    offered = await state.enqueue(iid(1), "support", skills={"spanish": 3})
    assert offered.result["places"] == "support@spanish=3,support=1"
    assert offered.assignments[0].agent_id == "es"


async def test_priority_first_and_aging_so_that_nobody_starves(routing: tuple[RoutingState, Clock]) -> None:
    state, clock = routing
    await state.put_queue(Queue(id="q", name="Q", aging_s=10), default_max_wait_s=300)
    await state.put_agent(agent("solo", ["q"]), presence_if_new="offline")
    await state.enqueue(iid(1), "q", priority=0)  # waits from t
    clock.advance(5)
    await state.enqueue(iid(2), "q", priority=1)  # one step higher, 5 s later: worth 10 s, so ahead
    clock.advance(30)
    await state.enqueue(iid(3), "q", priority=3)  # 35 s after the first: 3 steps (30 s) do not make up for it
    order = [i for i, _ in await state.waiting("q")]
    assert order == [iid(2), iid(1), iid(3)]
    await state.set_presence("solo", "available")
    offered = (await state.try_assign(iid(3))).assignments  # asked for 3, but the agent's decision is by rank
    assert offered == []
    assert (await state.interaction(iid(2)))["state"] == "offered"


async def test_queue_priority_weighs_queues_for_an_agent_in_several(routing: tuple[RoutingState, Clock]) -> None:
    state, clock = routing
    await state.put_queue(Queue(id="vip", name="VIP", priority=2, aging_s=60), default_max_wait_s=300)
    await state.put_queue(Queue(id="std", name="Std", aging_s=60), default_max_wait_s=300)
    await state.put_agent(agent("a", ["std", "vip"]), presence_if_new="offline")
    await state.enqueue(iid(1), "std")
    clock.advance(90)  # waited 90 s, less than the 120 s two priority steps are worth
    await state.enqueue(iid(2), "vip")
    decision = await state.set_presence("a", "available")
    assert [(a.interaction_id, a.via) for a in decision.assignments] == [(iid(2), "vip")]


async def test_escalation_widens_the_requirement_then_overflows(routing: tuple[RoutingState, Clock]) -> None:
    state, clock = routing
    await state.put_queue(Queue(id="sales", name="Sales"), default_max_wait_s=300)
    await state.put_queue(
        Queue.model_validate(
            {
                "id": "support",
                "name": "Support",
                "skills": {"support": 5},
                "escalation": [{"after_s": 20, "skills": {"support": 1}}, {"after_s": 60, "overflow": "sales"}],
            }
        ),
        default_max_wait_s=300,
    )
    await add_agents(state, clock, agent("junior", ["support"], {"support": 2}), agent("seller", ["sales"]))
    await state.set_presence("seller", "away", reason="lunch")
    offered = await state.enqueue(iid(1), "support")
    assert offered.status == "waiting"
    clock.advance(19)
    assert (await state.tick()).assignments == []
    clock.advance(1)
    widened = await state.tick()
    assert [e["kind"] for e in widened.events] == ["escalated", "offered"]
    assert widened.assignments[0].agent_id == "junior"
    await state.not_answered(iid(1), "junior")  # junior away, so nobody left in support
    await state.set_presence("seller", "available")
    assert (await state.interaction(iid(1)))["state"] == "waiting"
    clock.advance(40)
    overflowed = await state.tick()
    assert [(a.agent_id, a.queue, a.via) for a in overflowed.assignments] == [("seller", "support", "sales")]
    # in sales it needed what sales needs (nothing), in support the widened requirement
    assert overflowed.events[0]["places"] == "support@support=1 sales@*"


async def test_ring_no_answer_sets_the_agent_away_and_keeps_the_place(routing: tuple[RoutingState, Clock]) -> None:
    state, clock = routing
    await state.put_queue(Queue(id="q", name="Q"), default_max_wait_s=300)
    await add_agents(state, clock, agent("a", ["q"]), agent("b", ["q"]))
    await state.set_presence("b", "offline")
    await state.enqueue(iid(1), "q")  # offered to a
    clock.advance(5)
    await state.enqueue(iid(2), "q")  # waits
    back = await state.not_answered(iid(1), "a", reason="no-answer")
    assert back.status == "waiting"
    a = await state.agent("a")
    assert (a["state"], a["presence"], a["reason"], a["load:voice"]) == ("away", "away", "no-answer", "0")
    assert [i for i, _ in await state.waiting("q")] == [iid(1), iid(2)]  # still ahead of the later one
    decision = await state.set_presence("b", "available")
    assert decision.assignments[0].interaction_id == iid(1)
    # a second word about the same offer changes nothing
    assert (await state.not_answered(iid(1), "a")).status == "not-offered"


async def test_capacity_per_channel_is_never_exceeded(routing: tuple[RoutingState, Clock]) -> None:
    state, _ = routing
    await state.put_queue(Queue(id="q", name="Q"), default_max_wait_s=300)
    await state.put_agent(agent("a", ["q"], voice=1, webchat=3), presence_if_new="available")
    for n in range(1, 6):
        await state.enqueue(iid(n), "q", channel="webchat")
    await state.enqueue(iid(9), "q", channel="voice")
    # one offer at a time: answering one lets the next come
    taken = []
    for _ in range(10):
        a = await state.agent("a")
        if not a.get("offer"):
            break
        taken.append(a["offer"])
        await state.answered(a["offer"], "a")
    a = await state.agent("a")
    assert (a["load:webchat"], a["load:voice"], a["state"]) == ("3", "1", "busy")
    assert sorted(taken) == sorted([iid(1), iid(2), iid(3), iid(9)])
    assert [i for i, _ in await state.waiting("q")] == [iid(4), iid(5)]
    # a chat ends: the next chat is offered at once
    freed = await state.release(iid(2))
    assert [x.interaction_id for x in freed.assignments] == [iid(4)]


async def test_wrapup_then_the_next_interaction(routing: tuple[RoutingState, Clock]) -> None:
    state, clock = routing
    await state.put_queue(Queue(id="q", name="Q"), default_max_wait_s=300)
    await state.put_agent(agent("a", ["q"]), presence_if_new="available")
    await state.enqueue(iid(1), "q")
    assert (await state.answered(iid(1), "a")).status == "assigned"
    assert (await state.answered(iid(1), "a")).status == "duplicate"
    await state.enqueue(iid(2), "q")
    released = await state.release(iid(1), wrapup_s=10)
    assert released.assignments == []
    assert (await state.agent("a"))["state"] == "wrapup"
    clock.advance(9.999)
    assert (await state.tick()).assignments == []
    clock.advance(0.001)
    done = await state.tick()
    assert [s.state for s in done.states] == ["available", "ringing"]
    assert done.assignments[0].interaction_id == iid(2)


async def test_an_interaction_gone_while_ringing_frees_the_agent(routing: tuple[RoutingState, Clock]) -> None:
    state, clock = routing
    await state.put_queue(Queue(id="q", name="Q"), default_max_wait_s=300)
    await state.put_agent(agent("a", ["q"]), presence_if_new="available")
    await state.enqueue(iid(1), "q")
    removed = await state.remove(iid(1), reason="abandoned")
    assert removed.result["state"] == "offered"
    a = await state.agent("a")
    assert (a["state"], a["load:voice"], a.get("offer")) == ("available", "0", None)
    assert (await state.try_assign(iid(1))).status == "unknown"
    # an offer nobody settles (the node handling the call died) expires and frees the agent
    await state.enqueue(iid(2), "q")
    clock.advance(61)
    expired = await state.tick()
    assert [e["kind"] for e in expired.events] == ["expired"]
    assert (await state.agent("a"))["state"] == "available"


async def test_duplicates_have_one_effect(routing: tuple[RoutingState, Clock]) -> None:
    state, clock = routing
    await state.put_queue(Queue(id="q", name="Q"), default_max_wait_s=300)
    await add_agents(state, clock, agent("a", ["q"]), agent("b", ["q"]))
    first = await state.enqueue(iid(1), "q")
    again = await state.enqueue(iid(1), "q")
    assert again.status == "duplicate" and again.assignments == []
    assert (await state.agent("b"))["state"] == "available"
    assert (await state.answered(iid(1), "b")).status == "not-offered"  # not offered to b
    assert first.assignments[0].agent_id == "a"
    assert (await state.enqueue(iid(5), "nowhere")).status == "unknown-queue"


async def test_agents_changing_queues_and_going_away(routing: tuple[RoutingState, Clock]) -> None:
    state, _ = routing
    await state.put_queue(Queue(id="q1", name="1"), default_max_wait_s=300)
    await state.put_queue(Queue(id="q2", name="2"), default_max_wait_s=300)
    await state.put_agent(agent("a", ["q1"]), presence_if_new="available")
    assert await state.available("q1") == ["a"]
    await state.enqueue(iid(1), "q2")
    moved = await state.put_agent(agent("a", ["q2"]))  # now serves q2: takes its waiting interaction
    assert moved.assignments[0].interaction_id == iid(1)
    assert await state.available("q1") == []
    assert (await state.drop_agent("a")).status == "busy"
    await state.remove(iid(1), reason="abandoned")
    assert (await state.drop_agent("a")).status == "ok"
    assert await state.agent("a") == {}


async def dump(state: RoutingState) -> dict[str, Any]:
    """Every routing key and its content, for comparing two runs."""
    out: dict[str, Any] = {}
    redis = state.redis
    async for key in redis.scan_iter(match=f"{state.prefix}:*"):
        kind = str(await redis.type(key))
        if "hash" in kind:
            out[str(key)] = await redis.hgetall(key)
        elif "zset" in kind:
            out[str(key)] = await redis.zrange(key, 0, -1, withscores=True)
        elif "set" in kind:
            out[str(key)] = sorted(await redis.smembers(key))
        else:
            out[str(key)] = await redis.get(key)
    return out


async def run_script(state: RoutingState, clock: Clock, seed: int) -> list[Any]:
    """A random but reproducible day: queues, agents, arrivals, answers, refusals, releases, hang-ups."""
    rng = random.Random(seed)
    await state.put_queue(
        Queue.model_validate(
            {
                "id": "a",
                "name": "A",
                "skills": {"x": 2},
                "aging_s": 5,
                "escalation": [{"after_s": 8, "skills": {}}, {"after_s": 15, "overflow": "b"}],
            }
        ),
        default_max_wait_s=300,
    )
    await state.put_queue(Queue(id="b", name="B", priority=1, aging_s=5), default_max_wait_s=300)
    for n in range(6):
        await state.put_agent(
            agent(f"g{n}", rng.sample(["a", "b"], rng.randint(1, 2)), {"x": rng.randint(1, 4)}, voice=1, webchat=2),
            presence_if_new="available",
        )
    log: list[Any] = []
    live: list[str] = []
    for step in range(150):
        clock.advance(rng.random() * 3)
        roll = rng.random()
        if roll < 0.35:
            i = iid(step + 1)
            live.append(i)
            o = await state.enqueue(
                i, rng.choice("ab"), priority=rng.randint(0, 3), channel=rng.choice(["voice", "webchat"])
            )
        elif roll < 0.55 and live:
            i = rng.choice(live)
            info = await state.interaction(i)
            o = await state.answered(i, info.get("agent", "g0"))
        elif roll < 0.65 and live:
            i = rng.choice(live)
            info = await state.interaction(i)
            o = await state.not_answered(i, info.get("agent", "g0"))
        elif roll < 0.85 and live:
            i = live.pop(rng.randrange(len(live)))
            o = await state.release(i, wrapup_s=rng.choice([0, 2]))
        elif roll < 0.9 and live:
            i = live.pop(rng.randrange(len(live)))
            o = await state.remove(i, reason="abandoned")
        else:
            o = await state.set_presence(f"g{rng.randrange(6)}", rng.choice(["available", "available", "away"]))
        log.append((o.result, o.assignments, o.states, o.events))
    return log


async def test_decisions_are_deterministic_given_the_same_state_and_time() -> None:
    runs = []
    for _ in range(2):
        clock = Clock()
        redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        state = RoutingState(redis, "det", clock=clock)
        await state.configure(offer_ttl_s=60)
        log = await run_script(state, clock, seed=42)
        runs.append((log, await dump(state)))
        await redis.aclose()
    assert runs[0] == runs[1]
    assert sum(len(entry[1]) for entry in runs[0][0]) > 20  # the day did route things
