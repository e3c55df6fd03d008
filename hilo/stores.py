"""The server's connections to PostgreSQL and Redis, with the bounds of settings.py: a stalled store (or a
runaway query) fails the request that waits on it instead of holding a pooled connection for good.

A server has two PostgreSQL pools: the call path's (`server_pool`) and the background's (`background_pool`),
so webhook deliveries, transcripts, reports and the outbox can hold every connection of theirs and the calls
still get one."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis

from hilo.db import create_pool
from hilo.settings import Settings


async def server_pool(settings: Settings, *, min_size: int = 2, max_size: int | None = None) -> asyncpg.Pool:
    """The call path's pool of a Hilo server (HILO_DB_POOL_SIZE connections at most): every statement
    bounded by HILO_DB_COMMAND_TIMEOUT_S unless it says otherwise. asyncpg cancels a statement that overruns
    and raises TimeoutError."""
    size = max_size if max_size is not None else settings.db_pool_size
    return await create_pool(
        settings.database_url.get_secret_value(),
        min_size=min(min_size, size),
        max_size=size,
        command_timeout=settings.db_command_timeout_s,
    )


async def background_pool(settings: Settings) -> asyncpg.Pool:
    """The background work's pool (HILO_DB_BACKGROUND_POOL_SIZE connections at most), with the same bound
    per statement; the KPI reports pass their own (HILO_DB_REPORT_TIMEOUT_S)."""
    return await create_pool(
        settings.database_url.get_secret_value(),
        min_size=1,
        max_size=settings.db_background_pool_size,
        command_timeout=settings.db_command_timeout_s,
    )


def redis_client(settings: Settings, *, client_name: str | None = None) -> aioredis.Redis:
    """The Redis client of a Hilo server: connecting and each command's answer bounded by
    HILO_REDIS_TIMEOUT_S (redis.exceptions.TimeoutError past it). Listening on pub/sub is not: redis-py
    (8.2 and later) reads a subscription without the socket timeout. A blocking pool: redis-py's default
    one fails a command at once (MaxConnectionsError) when all its connections are busy, which at a peak
    left callers in the queue after they hung up; this one waits, within the same bound, for a free one."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url.get_secret_value(),
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        client_name=client_name,
    )
    return aioredis.Redis.from_pool(pool)
