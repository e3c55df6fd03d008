"""`hilo customers import FILE.csv [--region ES] [--dry-run]`: the bulk import with a progress bar.

Exit status: 0 every row imported, 1 the import ran but some rows were rejected (listed in
`<file>.rejected.csv`), 2 the import did not run (the file cannot be read, its header is wrong, no
database) or stopped part-way (batches already applied stay; the message says from which line)."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
from tqdm import tqdm

from crm_bridge.importer import BATCH_SIZE, COLUMNS, ImportAborted, Importer, ImportFileError, Summary, estimate_rows
from hilo.logs import mask_pii

if TYPE_CHECKING:
    from hilo.db import Conn
    from hilo.settings import Settings

_SHOWN_REJECTS = 20


def add_customers_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    customers = sub.add_parser("customers", help="customer store tasks")
    tasks = customers.add_subparsers(dest="customers_command", required=True)
    imp = tasks.add_parser(
        "import",
        help="import customers from a CSV file",
        description=f"Columns (header line, any subset): {', '.join(COLUMNS)}; every row needs a phone, email,"
        " whatsapp or external_id (system:id). Re-running a file changes nothing; rejected rows go to"
        " <name>.rejected.csv beside the file.",
    )
    imp.add_argument("file", type=Path, help="the CSV file (UTF-8, with a header line)")
    imp.add_argument("--region", help="region of phone numbers written without +country (default: HILO_DEFAULT_REGION)")
    imp.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and match against the store, write nothing to it (rejected rows are still listed)",
    )
    imp.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"rows per transaction (default {BATCH_SIZE})")


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a while, one full collection after.

    An import makes millions of short-lived objects while holding a million long-lived ones (which
    customers it has seen), and the collector's passes scan those again and again: a third of a large
    import's time, measured. The import makes next to no reference cycles, so a process that does nothing
    else (this command, the benchmark) pauses the collector meanwhile. Not for use inside the server."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.collect()


async def import_file(
    conn: Conn, path: Path, region: str | None, *, dry_run: bool = False, batch_size: int = BATCH_SIZE
) -> tuple[Summary, Importer]:
    """Run an import with a progress bar (rows, rows/s) on stderr, for a command-line process."""
    with (
        collector_paused(),
        tqdm(total=estimate_rows(path), unit=" rows", unit_scale=True, file=sys.stderr, smoothing=0.2) as bar,
    ):
        importer = Importer(conn, path, region, dry_run=dry_run, batch_size=batch_size, progress=bar.update)
        summary = await importer.run()
        bar.total = bar.n  # the estimate counted blank lines and line breaks inside quoted fields
        bar.refresh()
    return summary, importer


async def run_customers_command(args: argparse.Namespace, settings: Settings) -> int:
    region = args.region or settings.default_region
    try:
        conn = await asyncpg.connect(settings.database_url.get_secret_value())
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"error: cannot connect to the database: {exc}", file=sys.stderr)
        return 2
    try:
        summary, importer = await import_file(conn, args.file, region, dry_run=args.dry_run, batch_size=args.batch_size)
    except (ImportFileError, ImportAborted, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except asyncpg.UndefinedTableError as exc:
        print(f"error: {exc}: apply the migrations first (hilo db migrate)", file=sys.stderr)
        return 2
    finally:
        await conn.close()
    for rejected in importer.rejected_lines[:_SHOWN_REJECTS]:
        # The terminal may end up in a log: numbers and addresses are masked here (not in the file).
        print(f"{args.file}:{rejected.line}: {mask_pii(rejected.reason)}", file=sys.stderr)
    if summary.rejected > _SHOWN_REJECTS:
        print(f"... and {summary.rejected - _SHOWN_REJECTS} more", file=sys.stderr)
    if summary.rejected_file is not None:
        print(f"rejected rows, with line and reason: {summary.rejected_file}", file=sys.stderr)
    print(summary)
    return 1 if summary.rejected else 0
