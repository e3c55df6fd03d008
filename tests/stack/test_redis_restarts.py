"""Redis restarts with persistence on (`appendonly yes`): what a restarted Redis replays from its file is the
state of an earlier life, and routing does not trust it. The shared Redis is never restarted here: the tests
write what a replay brings back (the routing keys of a moment ago, with their marker of an earlier server
life) and show that a running engine and a starting one rebuild from PostgreSQL instead."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from hilo.db import create_pool
from routing.engine import RoutingEngine
from tests.stack.conftest import NAMESPACE, Stack
from tests.stack.expect import eventually

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


async def test_a_running_engine_rebuilds_state_replayed_from_an_earlier_redis_life(
    stack: Stack, stale_replay: tuple[dict[bytes, bytes], str]
) -> None:
    engine = engine_of(stack)
    dumped, ended = stale_replay
    await replay(engine, dumped)
    assert (await engine.agent("bob"))["load:voice"] == "1"  # the replay: bob busy on what has ended
    # Within a tick of the replay (of any reconnection) the engine sees the marker of another life and
    # rebuilds from PostgreSQL: bob free, alice away as she said, the ended interaction nowhere.
    await eventually(lambda: _stale_gone(engine, ended), within=5, what="the replayed state rebuilt from PostgreSQL")
    assert await engine.redis.get(f"{engine.state.prefix}:built") == (await run_id(engine.redis)).encode()
    nxt = new_id()
    offer = await engine.enqueue(nxt, "support")
    assert offer is not None and offer.agent_id == "bob"  # and routing goes on from the truth
    await engine.remove(nxt, "test over")


async def test_a_starting_engine_rebuilds_state_replayed_from_an_earlier_redis_life(
    stack: Stack, stale_replay: tuple[dict[bytes, bytes], str]
) -> None:
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
