"""A dependency away for the test server alone, as its clients see a restart: every connection dropped at
once and new ones refused until the block ends. The shared Redis and PostgreSQL keep running for everyone
else (the demo server, the tests' own connections): the server's client or pool is pointed at a port nothing
listens on.

`redis_away` reaches into redis-py's connection pool (its connections' address): there is no public way to
move a client's existing connections, pub/sub ones included, and a proxy in front of every stack test's
Redis traffic would cost all of them for the sake of these few. `postgres_away` uses asyncpg's own
`set_connect_args` and `expire_connections`, reading the pool's connection arguments to put them back."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import redis.asyncio as aioredis


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go: connecting to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _point_at(client: aioredis.Redis, port: int) -> None:
    pool: Any = client.connection_pool
    pool.connection_kwargs["port"] = port
    for connection in [*pool._available_connections, *pool._in_use_connections]:
        connection.port = port


@contextlib.asynccontextmanager
async def redis_away(client: aioredis.Redis) -> AsyncIterator[None]:
    """Inside the block, `client` has no Redis: its connections (pub/sub subscriptions included) are cut
    as by a server going down, and every reconnection is refused. After it, they reconnect to the same
    Redis, which lost nothing (a restart that replays its file is tests/stack/test_redis_outages.py's)."""
    real = client.connection_pool.connection_kwargs["port"]
    _point_at(client, closed_port())
    await client.connection_pool.disconnect()
    try:
        yield
    finally:
        _point_at(client, real)


@contextlib.asynccontextmanager
async def postgres_away(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Inside the block, `pool` has no PostgreSQL: each of its connections is closed when next used or given
    back, and every new one is refused. After it, the pool connects again with its own arguments."""
    pool_: Any = pool
    dsn, kwargs = pool_._connect_args[0], dict(pool_._connect_kwargs)
    pool.set_connect_args(f"postgresql://hilo@127.0.0.1:{closed_port()}/hilo", **kwargs)
    await pool.expire_connections()
    try:
        yield
    finally:
        pool.set_connect_args(dsn, **kwargs)
        await pool.expire_connections()
