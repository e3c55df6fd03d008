"""The routing engine on the real Redis and PostgreSQL: every decision on record, the live state rebuilt
after Redis loses it, two nodes sharing one Redis (a decision on one wakes the other; concurrent workers
never exceed an agent's capacity nor give one interaction to two agents), the admin API, and a real call
escalating to a wider skill requirement."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dialplans.models import Agent, Queue, load_routing
from hilo.db import create_pool
from routing.engine import RoutingEngine
from routing.state import RoutingState
from tests.stack.calls import KNOWN_CALLER, place
from tests.stack.conftest import NAMESPACE, Stack
from tests.stack.expect import eventually


def new_id() -> str:
    return str(uuid.uuid4())


def engine_of(stack: Stack) -> RoutingEngine:
    assert stack.services.routing is not None
    return stack.services.routing


async def test_every_offer_and_assignment_is_on_record_with_the_agent_history(stack: Stack) -> None:
    engine = engine_of(stack)
    x = new_id()
    offer = await engine.enqueue(x, "support", priority=2)
    assert offer is not None and (offer.agent_id, offer.endpoint, offer.via) == ("bob", "agent-bob", "support")
    row = await stack.pool.fetchrow("SELECT * FROM routing_interactions WHERE interaction_id = $1::uuid", x)
    assert row is not None and (row["state"], row["agent_id"], row["priority"]) == ("offered", "bob", 2)
    assert await engine.answered(x, "bob")
    assert await engine.answered(x, "bob")  # said twice: one effect
    await engine.release(x, wrapup_s=0.5)
    assert (await engine.agent("bob"))["state"] == "wrapup"
    await eventually(lambda: _state_is(engine, "bob", "available"), within=3, what="bob available after wrap-up")
    offers = await stack.pool.fetch("SELECT * FROM routing_offers WHERE interaction_id = $1::uuid", x)
    assert [(o["agent_id"], o["outcome"]) for o in offers] == [("bob", "released")]
    assert offers[0]["answered_at"] is not None and offers[0]["ended_at"] >= offers[0]["answered_at"]
    resp = await stack.client.get(
        "/api/routing/agents/bob/history?limit=4", headers={"Authorization": f"Bearer {stack.token}"}
    )
    assert resp.status == 200
    states = (await resp.json())["states"]
    assert [s["state"] for s in states] == ["available", "wrapup", "busy", "ringing"]
    assert states[3]["interaction_id"] == x and states[1]["wrapup_until"] is not None
    times = [datetime.fromisoformat(s["at"]) for s in states]
    assert times == sorted(times, reverse=True)


async def _state_is(engine: RoutingEngine, agent_id: str, state: str) -> bool:
    return (await engine.agent(agent_id)).get("state") == state


async def test_the_live_state_is_rebuilt_from_postgres_after_redis_loses_it(stack: Stack) -> None:
    engine = engine_of(stack)
    assert await engine.set_state("alice", "away", "lunch")
    x, low, high = new_id(), new_id(), new_id()
    assert (await engine.enqueue(x, "support")) is not None
    assert await engine.answered(x, "bob")
    assert await engine.enqueue(low, "support") is None
    assert await engine.enqueue(high, "support", priority=5) is None
    before = await engine.state.waiting("support")
    assert [i for i, _ in before] == [high, low]

    await engine.state.clear()  # what a Redis restart does to this namespace
    assert await engine.agent("bob") == {}
    # a call asking in that very moment is not failed: its interaction is put back from the record
    assert await engine.try_assign(low) is None
    # the engine's tick notices and rebuilds from the durable record
    # Presences come back last (agents stay offline until every interaction is in place): wait for them.
    await eventually(lambda: _state_is(engine, "alice", "away"), within=5, what="routing rebuilt from PostgreSQL")
    assert await engine.state.waiting("support") == before
    bob, alice = await engine.agent("bob"), await engine.agent("alice")
    assert (bob["load:voice"], alice["state"], alice["reason"]) == ("1", "away", "lunch")
    assert (await engine.try_assign(x)) is not None
    # and it goes on from there: bob's call ends, the higher priority comes first
    await engine.release(x)
    nxt = await engine.try_assign(high)
    assert nxt is not None and nxt.agent_id == "bob"
    for i in (high, low):
        await engine.remove(i, "test over")


async def test_a_decision_on_one_node_wakes_the_interaction_waiting_on_another(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two routing engines on one Redis, as two nodes (no call: the engine is what a call waits on)."""
    engine = engine_of(stack)
    redis = aioredis.from_url(stack.settings.redis_url.get_secret_value())
    pool = await create_pool(stack.settings.database_url.get_secret_value(), min_size=1, max_size=2)
    other = RoutingEngine(redis, pool, NAMESPACE, tick_s=30)  # its tick cannot be what wakes it
    await other.start()
    try:
        x, y = new_id(), new_id()
        assert await engine.enqueue(x, "support") is not None
        assert await engine.answered(x, "bob")
        assert await other.enqueue(y, "support") is None
        # The other node's questions to routing, counted: it asks once, finds nothing, and waits to be woken.
        asked: list[Any] = []
        found_nothing = asyncio.Event()
        real_try_assign = other.try_assign

        async def try_assign(interaction_id: str) -> Any:
            offer = await real_try_assign(interaction_id)
            asked.append(offer)
            if offer is None:
                found_nothing.set()
            return offer

        monkeypatch.setattr(other, "try_assign", try_assign)
        loop = asyncio.get_running_loop()
        waiting = asyncio.create_task(other.wait_for_offer(y, timeout=10))
        await asyncio.wait_for(found_nothing.wait(), 5)
        started = loop.time()
        await engine.release(x)  # node one frees bob: its decision gives him y
        offer = await asyncio.wait_for(waiting, 5)
        assert offer is not None and offer.agent_id == "bob"
        assert loop.time() - started < 1.0, "woken by the notification, not by its timeout"
        assert len(asked) == 2 and asked[0] is None  # asked again only once woken
        await other.remove(y, "test over")
    finally:
        await other.close()
        await pool.close()
        await redis.aclose()


# Two workers hammering one Redis ------------------------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["enqueue", "enqueue", "answer", "answer", "refuse", "release", "remove", "presence", "tick"]),
        st.integers(0, 1_000_000),
        st.integers(0, 1),  # which worker
    ),
    min_size=10,
    max_size=80,
)
CAPS = st.lists(st.tuples(st.integers(1, 2), st.integers(0, 3)), min_size=2, max_size=5)  # (voice, webchat)


async def _check_invariants(state: RoutingState, agents: dict[str, Agent], open_offers: dict[str, str]) -> None:
    interactions: dict[str, dict[str, str]] = {}
    async for key in state.redis.scan_iter(match=f"{state.prefix}:int:*"):
        iid = key.decode().rsplit(":", 1)[1]
        interactions[iid] = await state.interaction(iid)
    for agent_id, config in agents.items():
        live = await state.agent(agent_id)
        for channel, cap in config.capacity.items():
            holding = [
                i
                for i, it in interactions.items()
                if it.get("agent") == agent_id and it["channel"] == channel and it["state"] in ("offered", "assigned")
            ]
            load = int(live.get(f"load:{channel}", "0"))
            assert load == len(holding), f"{agent_id} {channel}: load {load} but holds {holding}"
            assert load <= cap, f"{agent_id} over capacity on {channel}: {load} > {cap}"
        ringing = [i for i, it in interactions.items() if it.get("agent") == agent_id and it["state"] == "offered"]
        assert len(ringing) <= 1 and live.get("offer") == (ringing[0] if ringing else None)
    for iid, agent_id in open_offers.items():
        it = interactions.get(iid)
        assert it is not None and it.get("agent") == agent_id, f"{iid} should be with {agent_id}: {it}"


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=OPS, caps=CAPS)
async def test_two_concurrent_workers_never_exceed_capacity_nor_assign_twice(
    stack: Stack, ops: list[tuple[str, int, int]], caps: list[tuple[int, int]]
) -> None:
    url = stack.settings.redis_url.get_secret_value()
    namespace = f"h7-property-{uuid.uuid4().hex[:8]}"
    connections = [aioredis.from_url(url), aioredis.from_url(url)]
    workers = [RoutingState(r, namespace) for r in connections]
    try:
        await workers[0].configure(offer_ttl_s=60)
        for q in (Queue(id="a", name="A", skills={"x": 1}, aging_s=1), Queue(id="b", name="B", priority=1)):
            await workers[0].put_queue(q, default_max_wait_s=300)
        agents = {
            f"g{n}": Agent(
                id=f"g{n}",
                name=f"g{n}",
                sip_endpoint=f"e{n}",
                queues=["a", "b"] if n % 2 else ["b"],
                skills={"x": 1 + n % 3},
                capacity={"voice": voice, "webchat": chat},
            )
            for n, (voice, chat) in enumerate(caps)
        }
        for n, agent in enumerate(agents.values()):
            await workers[n % 2].put_agent(agent, presence_if_new="available")
        live: list[str] = []
        open_offers: dict[str, str] = {}  # interaction -> agent, from what the workers were told

        def noted(offers: dict[str, str], outcome: Any) -> dict[str, str]:
            offers = dict(offers)
            for event in outcome.events:
                if event["kind"] == "offered":
                    assert event["interaction"] not in offers, f"{event['interaction']} offered twice"
                    offers[event["interaction"]] = event["agent"]
                elif event["kind"] in ("not_answered", "released", "removed", "expired"):
                    offers.pop(event["interaction"], None)
            return offers

        async def run(op: str, n: int, worker: RoutingState) -> list[Any]:
            if op == "enqueue":
                iid = str(uuid.UUID(int=n + 1 + len(live) * 1_000_003))
                live.append(iid)
                return [
                    await worker.enqueue(iid, "ab"[n % 2], priority=n % 4, channel=("voice", "webchat")[n % 3 // 2])
                ]
            if op == "presence":
                return [await worker.set_presence(f"g{n % len(agents)}", ("available", "away")[n % 3 // 2])]
            if op == "tick":
                return [await worker.tick()]
            if not live:
                return []
            iid = live[n % len(live)]
            agent_id = (await worker.interaction(iid)).get("agent") or "g0"
            if op == "answer":
                return [await worker.answered(iid, agent_id)]
            if op == "refuse":
                return [await worker.not_answered(iid, agent_id)]
            if op == "release":
                return [await worker.release(iid)]
            return [await worker.remove(iid, reason="gone")]

        # the two workers' operations run side by side, two at a time, on their own connections
        for k in range(0, len(ops), 2):
            pair = ops[k : k + 2]
            results = await asyncio.gather(*(run(op, n, workers[w]) for op, n, w in pair))
            # Redis ran the two decisions one after the other, in an order their replies do not tell: what
            # the workers were told must match Redis for one of the two orders.
            errors: list[AssertionError] = []
            for order in (results, results[::-1]):
                candidate = open_offers
                try:
                    for outcomes in order:
                        for outcome in outcomes:
                            candidate = noted(candidate, outcome)
                    await _check_invariants(workers[0], agents, candidate)
                except AssertionError as exc:
                    errors.append(exc)
                    continue
                open_offers = candidate
                break
            else:
                raise errors[0]
    finally:
        await workers[0].clear()
        for r in connections:
            await r.aclose()


# The admin API ------------------------------------------------------------------------------------


async def test_queues_and_agents_through_the_admin_api(stack: Stack) -> None:
    auth = {"Authorization": f"Bearer {stack.token}"}
    billing = {"id": "billing", "name": "Billing", "skills": {"billing": 2}, "sla": {"percent": 90, "within_s": 15}}
    resp = await stack.client.put("/api/routing/queues/billing", json=billing, headers=auth)
    assert resp.status == 201, await resp.text()
    assert (await stack.client.put("/api/routing/queues/billing", json=billing, headers=auth)).status == 200
    bad = {**billing, "escalation": [{"after_s": 5, "overflow": "nowhere"}]}
    resp = await stack.client.put("/api/routing/queues/billing", json=bad, headers=auth)
    assert resp.status == 400 and "nowhere" in (await resp.json())["reason"]
    resp = await stack.client.put("/api/routing/queues/billing", json={**billing, "id": "other"}, headers=auth)
    assert resp.status == 400 and (await resp.json())["field"] == "id"
    resp = await stack.client.put("/api/routing/queues/billing", json={**billing, "priority": 11}, headers=auth)
    assert resp.status == 400 and (await resp.json())["field"] == "priority"

    carol = {
        "id": "carol",
        "name": "Carol",
        "sip_endpoint": "agent-noanswer",  # a phone of dialplans/phones.yaml no demo agent has
        "queues": ["billing"],
        "skills": {"billing": 3},
        "teams": ["back-office"],
        "capacity": {"voice": 1, "webchat": 2},
    }
    try:
        # An endpoint is what Asterisk dials to offer the agent a call: only a phone Hilo provisions, by its
        # plain name. A trunk URI would send every call offered to carol out to any number.
        for endpoint in ("carrier-sim/sip:+447700900123@127.0.0.2:5060", "agent-alice&Local/1@x", "agent-carol"):
            resp = await stack.client.put(
                "/api/routing/agents/carol", json={**carol, "sip_endpoint": endpoint}, headers=auth
            )
            assert resp.status == 400 and (await resp.json())["field"] == "sip_endpoint", (endpoint, await resp.text())
        assert await stack.pool.fetchval("SELECT count(*) FROM agents WHERE id = 'carol'") == 0
        resp = await stack.client.put("/api/routing/agents/carol", json=carol, headers=auth)
        assert resp.status == 201, await resp.text()
        body = await resp.json()
        assert body["live"]["state"] == "offline" and body["live"]["load"] == {"voice": 0, "webchat": 0}
        taken = {**carol, "sip_endpoint": "agent-bob"}
        assert (await stack.client.put("/api/routing/agents/carol", json=taken, headers=auth)).status == 409
        resp = await stack.client.get("/api/routing/agents", headers=auth)
        assert {a["agent"]["id"] for a in (await resp.json())["agents"]} >= {"alice", "bob", "carol"}
        # a queue someone serves cannot go
        resp = await stack.client.delete("/api/routing/queues/billing", headers=auth)
        assert resp.status == 409 and "carol" in (await resp.json())["reason"]
        # carol signs in: a billing interaction reaches her
        engine = engine_of(stack)
        assert await engine.set_state("carol", "available")
        x = new_id()
        offer = await engine.enqueue(x, "billing")
        assert offer is not None and offer.agent_id == "carol"
        resp = await stack.client.get(f"/api/routing/interactions/{x}", headers=auth)
        assert (await resp.json())["offers"][0]["agent_id"] == "carol"
        resp = await stack.client.get("/api/routing/queues/billing", headers=auth)
        assert (await resp.json())["service_level"]["target_percent"] == 90
        await engine.remove(x, "test over")
        resp = await stack.client.delete("/api/routing/agents/carol", headers=auth)
        assert resp.status == 204
        assert await engine.agent("carol") == {}
    finally:
        await stack.pool.execute("DELETE FROM agents WHERE id = 'carol'")
        await stack.client.delete("/api/routing/queues/billing", headers=auth)
    assert (await stack.client.get("/api/routing/queues/billing", headers=auth)).status == 404
    assert (await stack.client.get("/api/routing/queues")).status == 401
    document = await (await stack.client.get("/api/openapi.json")).json()
    assert document["paths"]["/api/routing/queues/{queue_id}"]["put"]["x-roles"] == ["admin"]


# A real call ----------------------------------------------------------------------------------------


async def test_a_call_nobody_qualifies_for_escalates_to_a_wider_requirement(stack: Stack) -> None:
    engine = engine_of(stack)
    original = next(q for q in load_routing(stack.settings.dialplans_dir).queues if q.id == "support")
    strict = Queue.model_validate(
        {**original.model_dump(), "skills": {"billing": 1}, "escalation": [{"after_s": 2, "skills": {}}]}
    )
    await engine.put_queue(strict)  # bob has no billing skill: nobody qualifies for 2 seconds
    try:
        call, started = await place(stack, KNOWN_CALLER, "2")
        interaction = started["interaction_id"]
        queued, offered = await stack.hilo_events.expect_in_order(
            [
                ("routing.queued", {"interaction_id": interaction, "data__queue": "support"}),
                ("routing.offered", {"interaction_id": interaction, "data__agent": "bob"}),
            ],
            within=20,
        )
        waited = datetime.fromisoformat(offered["at"]) - datetime.fromisoformat(queued["at"])
        assert waited.total_seconds() >= 1.9, f"offered after {waited}, before the escalation"
        await stack.hilo_events.expect("agent.answered", within=15, interaction_id=interaction)
        resp = await stack.client.get(
            f"/api/routing/interactions/{interaction}", headers={"Authorization": f"Bearer {stack.token}"}
        )
        record = await resp.json()
        assert (record["places"], record["state"]) == ("support@*", "assigned")
        await stack.observer.hangup(call.caller_leg)
        await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
        await eventually(lambda: _state_is(engine, "bob", "available"), within=5, what="bob free after the call")
    finally:
        await engine.put_queue(original)
