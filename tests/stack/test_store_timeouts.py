"""The server's PostgreSQL pool bounds every statement (HILO_DB_COMMAND_TIMEOUT_S): a runaway query fails
with TimeoutError and the connection goes back to the pool usable; the KPI reports' reads have their own,
longer bound (HILO_DB_REPORT_TIMEOUT_S), so a report over a long period is not cut by the common one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from hilo.stores import redis_client, server_pool
from reports import facts
from reports.monitor import WALLBOARD
from reports.service import Reports
from tests.stack.conftest import Stack


async def test_a_statement_over_the_command_timeout_fails_and_reports_have_their_own(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
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


async def test_a_burst_of_redis_commands_past_the_pool_waits_for_connections_instead_of_failing(stack: Stack) -> None:
    """At a peak every waiting caller talks to Redis at once: with redis-py's default pool the commands past
    its size failed at once (MaxConnectionsError), and callers who had hung up stayed in the queue."""
    settings = stack.settings.model_copy(update={"redis_max_connections": 4})
    client = redis_client(settings, client_name="hilo-test-pool-burst")
    key = f"{settings.namespace}:test:pool-burst"
    try:
        await asyncio.wait_for(asyncio.gather(*(client.incr(key) for _ in range(60))), 10)
        assert int(await client.get(key) or 0) == 60
        clients = await client.client_list()
        assert 1 <= sum(c.get("name") == "hilo-test-pool-burst" for c in clients) <= 4
    finally:
        await client.delete(key)
        await client.aclose()
