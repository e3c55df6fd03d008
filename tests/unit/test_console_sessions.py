"""Console sessions, on an in-memory Redis (the sign-in limits: test_console_signin.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest
import redis.asyncio as aioredis

from hilo.web.sessions import SessionStore, token_hash


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


async def test_a_session_is_found_by_its_token_and_only_its_hash_is_stored(redis: aioredis.Redis) -> None:
    store = SessionStore(redis, "ns", ttl_s=600)
    token, who = await store.create("bob", "agent", "bob")
    assert len(token) >= 43  # 32 random bytes
    assert (who.username, who.role, who.agent_id, who.session) == ("bob", "agent", "bob", token_hash(token))
    found = await store.lookup(token)
    assert found == who
    keys = [k.decode() if isinstance(k, bytes) else k for k in await redis.keys("*")]
    assert f"ns:console:session:{token_hash(token)}" in keys
    assert not any(token in k for k in keys)
    stored = await redis.hgetall(f"ns:console:session:{token_hash(token)}")
    assert not any(token.encode() in value for value in stored.values())
    assert 0 < await redis.ttl(f"ns:console:session:{token_hash(token)}") <= 600


async def test_a_wrong_or_absurd_token_finds_nothing(redis: aioredis.Redis) -> None:
    store = SessionStore(redis, "ns")
    await store.create("bob", "agent", "bob")
    assert await store.lookup("not-a-token") is None
    assert await store.lookup("") is None
    assert await store.lookup("x" * 10_000) is None


async def test_a_supervisor_session_has_no_agent(redis: aioredis.Redis) -> None:
    store = SessionStore(redis, "ns")
    token, _ = await store.create("sue", "supervisor", None)
    found = await store.lookup(token)
    assert found is not None and found.agent_id is None and found.role == "supervisor"


async def test_sign_out_ends_one_session_and_end_all_ends_every_one(redis: aioredis.Redis) -> None:
    store = SessionStore(redis, "ns")
    first, who = await store.create("bob", "agent", "bob")
    second, _ = await store.create("bob", "agent", "bob")
    other, _ = await store.create("alice", "agent", "alice")
    await store.end(who)
    assert await store.lookup(first) is None
    assert await store.lookup(second) is not None
    assert await store.end_all("bob") == 1
    assert await store.lookup(second) is None
    assert await store.lookup(other) is not None
