"""A dependency away for the test server alone, as its clients see a restart: every connection dropped at
once and new ones refused until the block ends. The shared Redis and PostgreSQL keep running for everyone
else (the demo server, the tests' own connections): the server's client or pool is pointed at a port nothing
listens on.

`redis_away` reaches into redis-py's connection pool (its connections' address): there is no public way to
move a client's existing connections, pub/sub ones included, and a proxy in front of every stack test's
Redis traffic would cost all of them for the sake of these few. `postgres_away` uses asyncpg's own
`set_connect_args` and `expire_connections`, reading the pool's connection arguments to put them back.

`postgres_stopped` is the real thing, for everyone: the stack's own PostgreSQL stopped and started again
(tests/stack/test_postgres_outages.py). `figures` is what an outage cost, as the fault report collects it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from tests.stack.expect import eventually


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


# The stack's own PostgreSQL, stopped and started for real ---------------------------------------------------
#
# What `stack/up.sh` started (`pg_ctl` as user postgres, the cluster in .run/pg/data of the checkout whose
# .run/env the tests read, maybe a symlink), stopped as `stack/down.sh` does (`-m fast`: every session ended
# at once) and started again with up.sh's own command. Every test database client sees a server restart.

PG_COMMAND_S = 60.0  # pg_ctl's own wait (-t), and this side's bound on it


def _cluster(env_file: Path) -> tuple[Path, Path]:
    """(the cluster's folder, its pg_ctl): from the .run of the checkout the env file belongs to."""
    folder = (env_file.resolve().parent / "pg").resolve()
    version = (folder / "data" / "PG_VERSION").read_text().strip()
    return folder, Path("/usr/lib/postgresql") / version / "bin" / "pg_ctl"


async def _pg_ctl(env_file: Path, *args: str) -> None:
    folder, pg_ctl = _cluster(env_file)
    command = ["runuser", "-u", "postgres", "--", str(pg_ctl), "-D", str(folder / "data"), *args]
    proc = await asyncio.create_subprocess_exec(
        *command, cwd="/", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), PG_COMMAND_S + 5)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"pg_ctl {args[-1]} did not end within {PG_COMMAND_S + 5} s") from None
    if proc.returncode != 0:
        raise AssertionError(f"pg_ctl {args[-1]} failed ({proc.returncode}): {out.decode(errors='replace')[-500:]}")


async def stop_postgres(env_file: Path) -> None:
    await _pg_ctl(env_file, "-m", "fast", "-w", "-t", str(int(PG_COMMAND_S)), "stop")


async def start_postgres(env_file: Path) -> None:
    """Started as stack/up.sh starts it (same log), waiting until it accepts connections."""
    folder, _ = _cluster(env_file)
    await _pg_ctl(env_file, "-l", str(folder / "postgresql.log"), "-w", "-t", str(int(PG_COMMAND_S)), "start")


@contextlib.asynccontextmanager
async def postgres_stopped(env_file: Path) -> AsyncIterator[None]:
    """The stack's PostgreSQL is down inside the block (stopped fast), and always started again after it."""
    await stop_postgres(env_file)
    try:
        yield
    finally:
        await start_postgres(env_file)


async def postgres_answers(pool: asyncpg.Pool, within: float) -> None:
    """`pool` gets a working connection again (asyncpg drops the connections a restart closed, and the
    pool opens new ones), within a bound."""

    async def answers() -> bool:
        try:
            return bool(await pool.fetchval("SELECT 1"))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False

    await eventually(answers, within=within, what="PostgreSQL answering the pool again")


def figures(
    *,
    calls_in_flight: int,
    calls_kept: int,
    messages_accepted: int,
    messages_stored: int,
    messages_duplicated: int,
    timeline_events_checked: int,
    timeline_events_lost: int,
    timeline_events_duplicated: int,
) -> dict[str, int]:
    """What an outage cost, as the fault report collects it (each test asserts its own)."""
    return {
        "calls_in_flight": calls_in_flight,
        "calls_kept": calls_kept,
        "calls_lost": calls_in_flight - calls_kept,
        "messages_accepted": messages_accepted,
        "messages_stored": messages_stored,
        "messages_duplicated": messages_duplicated,
        "timeline_events_checked": timeline_events_checked,
        "timeline_events_lost": timeline_events_lost,
        "timeline_events_duplicated": timeline_events_duplicated,
    }
