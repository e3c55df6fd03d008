"""The throwaway PostgreSQL database a benchmark works in, beside (never instead of) `hilo` and `hilo_test`."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg

PREFIX = "hilo_bench"


def bench_dsn(base: str, database: str) -> str:
    """The DSN of `database` on the server of `base`; refuses (ValueError) any name that is not a bench
    database of its own, since the benchmark drops it."""
    if urlsplit(base).path.strip("/") == database or not database.startswith(PREFIX):
        raise ValueError(f"--database must be a database of its own named {PREFIX}*, not {database!r}")
    return urlunsplit(urlsplit(base)._replace(path=f"/{database}"))


async def recreate_database(base: str, database: str, *, drop_only: bool = False) -> None:
    bench_dsn(base, database)  # the same refusal before anything is dropped
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if not drop_only:
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
