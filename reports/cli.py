"""`hilo reports rebuild`: recompute every contact's KPI summary (`contact_facts`) from the timeline. The
summary follows the timeline by itself (a trigger, migration 018); this is for repairs, e.g. after a bulk
load with triggers off. Reports wait while it runs. Exit status: 0 done, 2 it could not run."""

from __future__ import annotations

import argparse
import sys
import time

import asyncpg

from hilo.db import create_pool
from hilo.settings import Settings
from reports.facts import rebuild


def add_reports_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reports = sub.add_parser("reports", help="KPI reports")
    tasks = reports.add_subparsers(dest="reports_command", required=True)
    tasks.add_parser(
        "rebuild",
        help="recompute the per-contact KPI summary from the timeline",
        description="Empties contact_facts and recomputes one row per interaction from timeline_events, in one"
        " transaction: reports and writers of contact events wait until it commits.",
    )


async def run_reports_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        pool = await create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=1)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"cannot reach the database: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    began = time.perf_counter()
    try:
        rows = await rebuild(pool)
    except asyncpg.UndefinedTableError:
        print("the database has no contact_facts table yet: run `hilo db migrate`", file=sys.stderr)
        return 2
    finally:
        await pool.close()
    print(f"rebuilt contact_facts: {rows} contact(s) from the timeline in {time.perf_counter() - began:.1f} s")
    return 0
