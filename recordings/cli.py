"""`hilo recordings purge [--dry-run]`: delete the recordings past their retention now (the server also does it
every HILO_RECORDING_PURGE_INTERVAL_S), with a progress bar. Held recordings are never deleted.

Exit status: 0 done (or nothing due), 1 some recordings could not be deleted (listed), 2 it could not run."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import asyncpg
from tqdm import tqdm

from crm_bridge.timeline import Timeline
from hilo import audit
from hilo.db import create_pool
from hilo.notifier import Notifier
from hilo.settings import Settings
from hilo.stores import redis_client
from recordings.retention import purge
from recordings.storage import FilesystemBackend


def add_recordings_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    recordings = sub.add_parser("recordings", help="call recordings")
    tasks = recordings.add_subparsers(dest="recordings_command", required=True)
    run = tasks.add_parser(
        "purge",
        help="delete the recordings past their retention (never those under legal hold)",
        description="Deletes each due recording's encrypted file, marks it deleted (its metadata stays) and puts"
        " the deletion on the audit trail and the customer's timeline.",
    )
    run.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")


async def run_recordings_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        pool = await create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=2)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"cannot reach the database: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    redis = redis_client(settings)  # bounded waits, as the server's
    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="recording", desc="purging", file=sys.stderr)
        bar.update(done - bar.n)

    try:
        timeline = Timeline(pool, Notifier(redis, settings.namespace).publish)
        backend = FilesystemBackend(settings.recordings_dir / "store")
        report = await purge(
            pool, backend, timeline, dry_run=args.dry_run, progress=progress, actor=audit.system("retention", "cli")
        )
    except asyncpg.UndefinedTableError:
        print("the database has no recordings table yet: run `hilo db migrate`", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
        await pool.close()
        await redis.aclose()
    if args.dry_run:
        for recording_id in report.ids:
            print(f"would delete {recording_id}")
        print(f"{report.due} recording(s) past their retention would be deleted; {report.held} kept by a legal hold")
        return 0
    print(f"deleted {report.deleted} recording(s); {report.held} past their retention kept by a legal hold")
    for error in report.errors:
        print(f"not deleted: {error}", file=sys.stderr)
    return 1 if report.errors else 0
