"""What a call's opening costs the store: the interaction and its first events (`interaction.started`,
`customer.identified`) written as the call path writes them, per event (a connection and a commit each, as
before) or in one transaction (`Timeline.start_interaction(events=...)`, as now). No call is placed: only
PostgreSQL is used, in a throwaway database of its own.

    .run/venv/bin/python -m bench.call_opening [--calls 400] [--concurrency 20]

prints, for each way, the wall time of one opening (p50, p99), the transactions (commits) per opening
and the client's CPU per opening."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from typing import Any

import asyncpg

from bench.databases import bench_dsn, recreate_database
from crm_bridge.timeline import Interaction, Timeline
from hilo.db import create_pool, migrate
from hilo.settings import load_settings

DATABASE = "hilo_bench_opening"


def _opening(channel_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("interaction.started", {"dialed": "100", "channel_ref": channel_id}),
        ("customer.identified", {"by": "caller_number", "new": True}),
    ]


async def _per_event(timeline: Timeline, channel_id: str) -> Interaction:
    interaction = await timeline.start_interaction(
        uuid.uuid4(), "voice", "inbound", interaction_id=uuid.uuid4(), new_customer=True, dialed="100"
    )
    for type_, data in _opening(channel_id):
        await timeline.record(interaction, type_, data)
    return interaction


async def _one_transaction(timeline: Timeline, channel_id: str) -> Interaction:
    return await timeline.start_interaction(
        uuid.uuid4(),
        "voice",
        "inbound",
        interaction_id=uuid.uuid4(),
        new_customer=True,
        events=_opening(channel_id),
        dialed="100",
    )


# The transactions that wrote an opening: the distinct xmin of its customer, interaction and events.
_TRANSACTIONS = """
SELECT avg(n)::float FROM (
  SELECT count(DISTINCT x) AS n FROM interactions i, LATERAL (
    SELECT i.xmin::text AS x
    UNION ALL SELECT c.xmin::text FROM customers c WHERE c.id = i.customer_id
    UNION ALL SELECT e.xmin::text FROM timeline_events e WHERE e.interaction_id = i.id) t
  WHERE i.id = ANY($1) GROUP BY i.id) per_opening"""


async def measure(pool: asyncpg.Pool, way: str, calls: int, concurrency: int) -> dict[str, float]:
    async def publish(event: dict[str, Any]) -> None:
        return None

    timeline = Timeline(pool, publish)
    opener = _per_event if way == "per event" else _one_transaction
    slots = asyncio.Semaphore(concurrency)
    walls: list[float] = []
    opened: list[uuid.UUID] = []

    async def one(i: int) -> None:
        async with slots:
            t0 = time.perf_counter()
            opened.append((await opener(timeline, f"c-{i}")).id)
            walls.append((time.perf_counter() - t0) * 1000)

    cpu = time.process_time()
    await asyncio.gather(*(one(i) for i in range(calls)))
    cpu = time.process_time() - cpu
    commits: float = await pool.fetchval(_TRANSACTIONS, opened)
    walls.sort()
    return {
        "p50_ms": statistics.median(walls),
        "p99_ms": walls[int(len(walls) * 0.99) - 1],
        "commits": commits,
        "client_cpu_ms": cpu * 1000 / calls,
    }


async def _run(args: argparse.Namespace) -> int:
    base = load_settings().database_url.get_secret_value()
    dsn = bench_dsn(base, DATABASE)
    await recreate_database(base, DATABASE)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        pool = await create_pool(dsn, min_size=args.pool, max_size=args.pool)
        try:
            await measure(pool, "one transaction", 20, 5)  # warm the connections and statement caches
            print(f"{args.calls} openings, {args.concurrency} at a time, pool of {args.pool}:")
            for way in ("per event", "one transaction"):
                r = await measure(pool, way, args.calls, args.concurrency)
                print(
                    f"  {way:16} wall p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms;"
                    f" {r['commits']:.2f} commits; client CPU {r['client_cpu_ms']:.2f} ms per opening"
                )
        finally:
            await pool.close()
    finally:
        await recreate_database(base, DATABASE, drop_only=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.call_opening", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="openings per way (default 400)")
    parser.add_argument("--concurrency", type=int, default=20, help="openings at a time (default 20)")
    parser.add_argument("--pool", type=int, default=10, help="PostgreSQL connections (default 10)")
    return asyncio.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
