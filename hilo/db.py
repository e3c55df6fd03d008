"""PostgreSQL pool and the schema migrations (numbered SQL files applied once, in order, under a lock)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from importlib import resources
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # A connection of its own or one borrowed from the pool: queries take either.
    Conn = asyncpg.Connection | PoolConnectionProxy
    Db = asyncpg.Pool | Conn  # the pool, or a connection when inside a transaction

log = logging.getLogger(__name__)

# Any number: it only has to be the same for every Hilo node migrating the same database.
_MIGRATION_LOCK = 0x48494C4F


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, **kwargs: Any) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, init=_init_connection, **kwargs)
    assert pool is not None
    return pool


@contextlib.asynccontextmanager
async def connection(db: asyncpg.Pool | Conn) -> AsyncIterator[Conn]:
    """One connection for several queries: `db` itself when it is a connection (e.g. in the caller's
    transaction), else one borrowed from the pool for the block."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("hilo") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply every migration not yet applied; returns the versions applied now."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            log.info("applied migration %s", version)
            applied_now.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now
