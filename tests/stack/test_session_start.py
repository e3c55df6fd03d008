"""A stack-test session starts from what every test leaves behind, whatever an interrupted session (killed,
timed out) left: no row, only the configuration's agents, no key in the `hilo-test` namespace. Redis keeps
the namespace on disk, so without this the first test would inherit agents busy or ringing."""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

from dialplans.models import Agent
from routing.engine import RoutingEngine
from server.seed import seed_demo
from tests.stack.conftest import NAMESPACE, Stack, clean_rows_and_agents, delete_namespace
from tests.stack.expect import eventually


async def test_what_an_interrupted_session_left_is_gone_when_a_session_starts(stack: Stack) -> None:
    engine = stack.services.routing
    assert engine is not None
    # What a session killed in the middle of a call leaves: bob busy on an interaction, on record and live,
    # an agent a test made, and keys of the namespace.
    left = str(uuid.uuid4())
    assert (offer := await engine.enqueue(left, "support")) is not None and offer.agent_id == "bob"
    assert await engine.answered(left, "bob")
    await engine.put_agent(Agent(id="ghost", name="Ghost", sip_endpoint="agent-noanswer", queues=["sales"]))
    redis = aioredis.from_url(stack.settings.redis_url.get_secret_value())
    try:
        async with engine._lock:  # the running engine's tick waits, as if no server ran yet
            # The cleaning the session's start does before its server starts (conftest.start_clean).
            await clean_rows_and_agents(stack.pool, stack.settings)
            await delete_namespace(redis, NAMESPACE)
            assert await stack.pool.fetchval("SELECT count(*) FROM routing_interactions") == 0
            assert {r["id"] for r in await stack.pool.fetch("SELECT id FROM agents")} == {"alice", "bob"}
            assert [key async for key in redis.scan_iter(match=f"{NAMESPACE}:*")] == []
            # what a starting server then does first: routing.yaml's queues and agents into PostgreSQL
            await seed_demo(stack.pool, stack.settings.dialplans_dir, stack.settings.default_region)
    finally:
        await redis.aclose()
    # Routing is built from the clean record (here by the running engine, whose state is gone): bob is free,
    # the interaction nowhere, the agent of the killed session unknown.
    await eventually(lambda: _bob_free(engine), within=5, what="bob available in the state rebuilt from a clean record")
    assert await engine.state.interaction(left) == {}
    assert await engine.agent("ghost") == {}


async def _bob_free(engine: RoutingEngine) -> bool:
    live = await engine.agent("bob")
    return live.get("state") == "available" and live.get("load:voice", "0") == "0"
