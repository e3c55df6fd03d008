"""The server's connections to PostgreSQL and Redis, with the bounds of settings.py: a stalled store (or a
runaway query) fails the request that waits on it instead of holding a pooled connection for good.

Each PostgreSQL statement is bounded twice: by the client (asyncpg's command timeout, HILO_DB_COMMAND_TIMEOUT_S)
and by the server (statement, lock and idle-in-transaction timeouts, set for every connection of a pool):
PostgreSQL ends what overruns even when the client that started it is stuck or gone, and frees its locks.

A server has two PostgreSQL pools: the call path's (`server_pool`) and the background's (`background_pool`),
so webhook deliveries, transcripts, reports and the outbox can hold every connection of theirs and the calls
still get one."""

from __future__ import annotations

import socket

import asyncpg
import redis.asyncio as aioredis

from hilo.db import create_pool
from hilo.settings import Settings


def _ms(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))


def server_bounds(settings: Settings, statement_s: float) -> dict[str, str]:
    """PostgreSQL's own bounds for a pool's connections (its `server_settings`): a statement running longer
    than `statement_s` is cancelled (QueryCanceledError), a lock waited for longer than HILO_DB_LOCK_TIMEOUT_S
    is given up (LockNotAvailableError), and a session idle inside a transaction longer than
    HILO_DB_IDLE_IN_TRANSACTION_TIMEOUT_S is ended, its locks released. A transaction may lift one for itself
    (`SET LOCAL`), as the KPI reports do."""
    return {
        "statement_timeout": _ms(statement_s),
        "lock_timeout": _ms(settings.db_lock_timeout_s),
        "idle_in_transaction_session_timeout": _ms(settings.db_idle_in_transaction_timeout_s),
    }


async def server_pool(settings: Settings, *, min_size: int = 2, max_size: int | None = None) -> asyncpg.Pool:
    """The call path's pool of a Hilo server (HILO_DB_POOL_SIZE connections at most): every statement bounded
    by PostgreSQL at HILO_DB_STATEMENT_TIMEOUT_S (QueryCanceledError), and by asyncpg at
    HILO_DB_COMMAND_TIMEOUT_S (it cancels the statement and raises TimeoutError), unless it says otherwise."""
    size = max_size if max_size is not None else settings.db_pool_size
    return await create_pool(
        settings.database_url.get_secret_value(),
        min_size=min(min_size, size),
        max_size=size,
        command_timeout=settings.db_command_timeout_s,
        server_settings=server_bounds(settings, settings.db_statement_timeout_s),
    )


async def background_pool(settings: Settings) -> asyncpg.Pool:
    """The background work's pool (HILO_DB_BACKGROUND_POOL_SIZE connections at most): statements bounded by
    PostgreSQL at HILO_DB_BACKGROUND_STATEMENT_TIMEOUT_S and by asyncpg at HILO_DB_COMMAND_TIMEOUT_S; the KPI
    reports' reads lift both to HILO_DB_REPORT_TIMEOUT_S for themselves."""
    return await create_pool(
        settings.database_url.get_secret_value(),
        min_size=1,
        max_size=settings.db_background_pool_size,
        command_timeout=settings.db_command_timeout_s,
        server_settings=server_bounds(settings, settings.db_background_statement_timeout_s),
    )


# TCP keepalive on every Redis connection: a subscription waits for messages without a bound (below), so a
# Redis that vanished without closing the connection (a host gone, a network cut) would leave it waiting for
# good; the kernel's probes end such a connection after KEEPALIVE_IDLE_S + KEEPALIVE_COUNT x
# KEEPALIVE_INTERVAL_S (30 s), and the feed subscribes again.
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 15, 5, 3


def _keepalive_options() -> dict[int, int]:
    wanted = {"TCP_KEEPIDLE": KEEPALIVE_IDLE_S, "TCP_KEEPINTVL": KEEPALIVE_INTERVAL_S, "TCP_KEEPCNT": KEEPALIVE_COUNT}
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}


def redis_client(settings: Settings, *, client_name: str | None = None) -> aioredis.Redis:
    """The Redis client of a Hilo server (and of its commands): connecting and each command's answer bounded
    by HILO_REDIS_TIMEOUT_S (redis.exceptions.TimeoutError past it). Listening on pub/sub is not: redis-py
    (8.2 and later) reads a subscription without the socket timeout; TCP keepalive ends a subscription to a
    Redis that is gone without a word within 30 s. A blocking pool: redis-py's default one fails a command
    at once (MaxConnectionsError) when all its connections are busy, which at a peak left callers in the
    queue after they hung up; this one waits, within the same bound, for a free one."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url.get_secret_value(),
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        socket_keepalive=True,
        socket_keepalive_options=_keepalive_options(),
        client_name=client_name,
    )
    return aioredis.Redis.from_pool(pool)
