"""Redis away for the test server alone, as its clients see a restart: every connection dropped at once and
new ones refused until the block ends. The shared Redis keeps running for everyone else (the demo server,
the tests' own event follower): the server's client is pointed at a port nothing listens on.

This reaches into redis-py's connection pool (its connections' address): there is no public way to move
a client's existing connections, pub/sub ones included, and a proxy in front of every stack test's Redis
traffic would cost all of them for the sake of these few."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

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
