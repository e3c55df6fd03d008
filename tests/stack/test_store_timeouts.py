"""The server's PostgreSQL pools bound every statement (HILO_DB_COMMAND_TIMEOUT_S): a runaway query fails
with TimeoutError and the connection goes back to the pool usable; the KPI reports' reads have their own,
longer bound (HILO_DB_REPORT_TIMEOUT_S), so a report over a long period is not cut by the common one.

PostgreSQL keeps bounds of its own on each pool's connections (statement, lock wait, idle in a transaction):
each is shown cutting what overruns it, on pools built by the server's own functions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from hilo.stores import background_pool, redis_client, server_pool
from reports import facts
from reports.monitor import WALLBOARD
from reports.service import Reports
from tests.stack.conftest import Stack
from tests.stack.expect import eventually
from tests.stack.faults import FaultReport

NO_CALL = "a pool's bound on a pool of its own: no call, message or timeline event is involved"


@pytest.mark.fault
async def test_a_statement_over_the_command_timeout_fails_and_reports_have_their_own(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, fault_report: FaultReport
) -> None:
    fault_report.fault("PostgreSQL statement past the command timeout").nothing_to_count(NO_CALL)
    settings = stack.settings.model_copy(update={"db_command_timeout_s": 0.3})
    pool = await server_pool(settings, min_size=1, max_size=1)
    try:
        with pytest.raises(TimeoutError):
            await pool.fetchval("SELECT pg_sleep(3)")
        assert await pool.fetchval("SELECT 1") == 1  # the one connection is usable again

        # A report's read that takes longer than the common bound (here: made to, with a pause that runs
        # whether the period has contacts or not: the preserved side of an outer join, kept by OFFSET 0).
        slow = (
            f"SELECT * FROM (SELECT o.* FROM pg_sleep(0.6) LEFT JOIN ({facts._FACTS}) o ON true OFFSET 0) x"  # noqa: S608
            " WHERE x.interaction_id IS NOT NULL"
        )
        monkeypatch.setattr(facts, "_FACTS", slow)
        config = stack.client.app[WALLBOARD].config
        now = datetime.now(UTC)
        with pytest.raises(TimeoutError):
            await Reports(pool, config).contacts_with_followups(now - timedelta(hours=1), now)
        contacts, _ = await Reports(pool, config, timeout=10).contacts_with_followups(now - timedelta(hours=1), now)
        assert contacts == []
    finally:
        await pool.close()
    # The server wires its reports with HILO_DB_REPORT_TIMEOUT_S.
    assert stack.client.app[WALLBOARD].reports.timeout == stack.settings.db_report_timeout_s


def _tight() -> dict[str, float]:
    """Bounds a test can watch pass: the server's, PostgreSQL's (a statement of each pool, a lock wait, a
    transaction left idle), with the client's far above them so that PostgreSQL is what cuts."""
    return {
        "db_statement_timeout_s": 1.0,
        "db_background_statement_timeout_s": 1.5,
        "db_lock_timeout_s": 0.2,
        "db_idle_in_transaction_timeout_s": 0.5,
        "db_command_timeout_s": 30,
    }


async def _pool_of(stack: Stack, which: str) -> asyncpg.Pool:
    settings = stack.settings.model_copy(update=_tight())
    if which == "call path":
        return await server_pool(settings, min_size=1, max_size=1)
    return await background_pool(settings.model_copy(update={"db_background_pool_size": 1}))


@pytest.mark.fault
@pytest.mark.parametrize(("which", "statement"), [("call path", "1s"), ("background", "1500ms")])
async def test_postgresql_cuts_a_long_statement_a_long_lock_wait_and_an_idle_transaction(
    stack: Stack, which: str, statement: str, fault_report: FaultReport
) -> None:
    fault_report.fault(f"PostgreSQL long statement, lock wait, idle transaction ({which})").nothing_to_count(NO_CALL)
    pool = await _pool_of(stack, which)
    blocker = await asyncpg.connect(stack.settings.database_url.get_secret_value())
    loop = asyncio.get_running_loop()
    try:
        bounds = await pool.fetchrow(
            "SELECT current_setting('statement_timeout') AS statement, current_setting('lock_timeout') AS lock,"
            " current_setting('idle_in_transaction_session_timeout') AS idle"
        )
        assert bounds is not None and tuple(bounds) == (statement, "200ms", "500ms")

        began = loop.time()
        with pytest.raises(asyncpg.exceptions.QueryCanceledError, match="statement timeout"):
            await pool.fetchval("SELECT pg_sleep(10)")
        assert loop.time() - began < 5  # cut by PostgreSQL at its bound, far below the client's 30 s
        assert await pool.fetchval("SELECT 1") == 1  # and the connection is usable again

        async with blocker.transaction():  # another session holds the table
            await blocker.execute("LOCK TABLE agents IN ACCESS EXCLUSIVE MODE")
            began = loop.time()
            with pytest.raises(asyncpg.exceptions.LockNotAvailableError):
                await pool.fetchval("SELECT count(*) FROM agents")
            assert loop.time() - began < 1  # the lock bound (0.2 s), not the statement's

        conn = await pool.acquire()
        try:
            left_open = conn.transaction()
            await left_open.start()
            await conn.execute("SELECT 1 FROM agents LIMIT 1 FOR UPDATE")  # holds a row lock, then idles
            pid = conn.get_server_pid()
            await eventually(
                lambda: blocker.fetchval("SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", pid),
                within=5,
                what="the session idle in its transaction ended by PostgreSQL",
            )
            await blocker.execute("SELECT 1 FROM agents FOR UPDATE NOWAIT")  # its row lock went with it
            with pytest.raises((asyncpg.exceptions.IdleInTransactionSessionTimeoutError, asyncpg.InterfaceError)):
                await conn.fetchval("SELECT 1")
        finally:
            await pool.release(conn)
        assert await pool.fetchval("SELECT 1") == 1  # the pool replaced it

        async with pool.acquire() as conn, conn.transaction():  # lifted for one transaction, then back
            await conn.execute("SET LOCAL statement_timeout = 0")
            assert await conn.fetchval("SHOW statement_timeout") == "0"
            await conn.execute("SET LOCAL statement_timeout TO DEFAULT")
            assert await conn.fetchval("SHOW statement_timeout") == statement
    finally:
        await blocker.close()
        await pool.close()


async def test_a_report_read_lifts_the_background_statement_bound_to_its_own(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = await _pool_of(stack, "background")  # statements cut at 1.5 s by PostgreSQL
    try:
        slow = (
            f"SELECT * FROM (SELECT o.* FROM pg_sleep(2) LEFT JOIN ({facts._FACTS}) o ON true OFFSET 0) x"  # noqa: S608
            " WHERE x.interaction_id IS NOT NULL"
        )
        monkeypatch.setattr(facts, "_FACTS", slow)
        config = stack.client.app[WALLBOARD].config
        now = datetime.now(UTC)
        with pytest.raises(asyncpg.exceptions.QueryCanceledError):
            await Reports(pool, config).contacts_with_followups(now - timedelta(hours=1), now)
        contacts, _ = await Reports(pool, config, timeout=10).contacts_with_followups(now - timedelta(hours=1), now)
        assert contacts == []
    finally:
        await pool.close()


async def test_the_servers_pools_carry_postgresqls_bounds(stack: Stack) -> None:
    assert stack.services.background_pool is not None
    settings = stack.settings
    show = "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'),"
    show += " current_setting('idle_in_transaction_session_timeout')"
    call_path = tuple(await stack.pool.fetchrow(show) or ())
    background = tuple(await stack.services.background_pool.fetchrow(show) or ())
    assert settings.db_statement_timeout_s == 10 and settings.db_background_statement_timeout_s == 60
    assert (settings.db_lock_timeout_s, settings.db_idle_in_transaction_timeout_s) == (5, 60)
    assert call_path == ("10s", "5s", "1min")
    assert background == ("1min", "5s", "1min")


@pytest.mark.fault
async def test_a_burst_of_redis_commands_past_the_pool_waits_for_connections_instead_of_failing(
    stack: Stack, fault_report: FaultReport
) -> None:
    """At a peak every waiting caller talks to Redis at once: with redis-py's default pool the commands past
    its size failed at once (MaxConnectionsError), and callers who had hung up stayed in the queue."""
    settings = stack.settings.model_copy(update={"redis_max_connections": 4})
    client = redis_client(settings, client_name="hilo-test-pool-burst")
    key = f"{settings.namespace}:test:pool-burst"
    try:
        await asyncio.wait_for(asyncio.gather(*(client.incr(key) for _ in range(60))), 10)
        done = int(await client.get(key) or 0)
        # The commands as messages: 60 sent, each applied once (an INCR applied twice would count 61).
        fault_report.fault("Redis pool exhausted by a burst").messages(
            accepted=60, stored=min(done, 60), duplicated=max(done - 60, 0)
        )
        assert done == 60
        clients = await client.client_list()
        assert 1 <= sum(c.get("name") == "hilo-test-pool-burst" for c in clients) <= 4
    finally:
        await client.delete(key)
        await client.aclose()
