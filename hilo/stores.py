"""The server's connections to PostgreSQL and Redis, with the bounds of settings.py: a stalled store (or a
runaway query) fails the request that waits on it instead of holding a pooled connection for good."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis

from hilo.db import create_pool
from hilo.settings import Settings


async def server_pool(settings: Settings, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """The pool of a Hilo server: every statement bounded by HILO_DB_COMMAND_TIMEOUT_S unless it says
    otherwise (the KPI reports pass HILO_DB_REPORT_TIMEOUT_S). asyncpg cancels a statement that overruns
    and raises TimeoutError."""
    return await create_pool(
        settings.database_url.get_secret_value(),
        min_size=min_size,
        max_size=max_size,
        command_timeout=settings.db_command_timeout_s,
    )


def redis_client(settings: Settings, *, client_name: str | None = None) -> aioredis.Redis:
    """The Redis client of a Hilo server: connecting and each command's answer bounded by
    HILO_REDIS_TIMEOUT_S (redis.exceptions.TimeoutError past it). Listening on pub/sub is not: redis-py
    (8.2 and later) reads a subscription without the socket timeout."""
    return aioredis.from_url(
        settings.redis_url.get_secret_value(),
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        client_name=client_name,
    )
