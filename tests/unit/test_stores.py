"""The server's Redis client gives up on a store that does not answer within HILO_REDIS_TIMEOUT_S, for
connecting and for each command, instead of waiting for good; PostgreSQL is given its own bounds for each
pool's connections, and their errors count as the store being away (a call degrades, it is not dropped)."""

from __future__ import annotations

import asyncio
import socket

import asyncpg
import pytest
import redis.exceptions
from pydantic import SecretStr

from hilo.degraded import STORE_DOWN
from hilo.settings import Settings
from hilo.stores import redis_client, server_bounds


async def test_a_redis_that_does_not_answer_fails_the_command_within_the_timeout() -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepts, reads, never answers: a stalled Redis

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = redis_client(Settings(redis_url=SecretStr(f"redis://127.0.0.1:{port}/0"), redis_timeout_s=0.3))
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises((redis.exceptions.TimeoutError, TimeoutError)):
            await asyncio.wait_for(client.set("k", "v"), 4)  # far below redis-py's own default of 5 s
        assert loop.time() - began < 3
    finally:
        await client.aclose()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def test_a_subscription_to_a_redis_gone_without_a_word_is_ended_by_tcp_keepalive() -> None:
    options = redis_client(Settings()).connection_pool.connection_kwargs
    assert options["socket_keepalive"] is True
    assert options["socket_keepalive_options"] == {
        socket.TCP_KEEPIDLE: 15,
        socket.TCP_KEEPINTVL: 5,
        socket.TCP_KEEPCNT: 3,
    }


def test_the_timeouts_are_settings() -> None:
    settings = Settings(redis_timeout_s=2.5, db_command_timeout_s=7, db_report_timeout_s=900)
    options = redis_client(settings).connection_pool.connection_kwargs
    assert (options["socket_timeout"], options["socket_connect_timeout"]) == (2.5, 2.5)
    assert (settings.db_command_timeout_s, settings.db_report_timeout_s) == (7, 900)


def test_postgresql_bounds_are_settings_in_milliseconds() -> None:
    settings = Settings(db_lock_timeout_s=2.5, db_idle_in_transaction_timeout_s=45, db_statement_timeout_s=7)
    assert server_bounds(settings, settings.db_statement_timeout_s) == {
        "statement_timeout": "7000",
        "lock_timeout": "2500",
        "idle_in_transaction_session_timeout": "45000",
    }
    assert server_bounds(settings, 0.0001)["statement_timeout"] == "1"  # never 0, which would mean no bound
    defaults = Settings()
    assert (defaults.db_statement_timeout_s, defaults.db_background_statement_timeout_s) == (10, 60)


def test_a_bound_passed_on_the_server_is_the_store_being_away() -> None:
    for error in (
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.exceptions.LockNotAvailableError("canceling statement due to lock timeout"),
        asyncpg.exceptions.IdleInTransactionSessionTimeoutError("terminating connection due to idle-in-transaction"),
    ):
        assert isinstance(error, STORE_DOWN)
    assert not isinstance(asyncpg.exceptions.UniqueViolationError("duplicate key"), STORE_DOWN)
