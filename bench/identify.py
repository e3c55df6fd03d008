"""Caller identification benchmark: `make bench` (the stack must be up: `make stack`).

1. Creates a database of its own beside Hilo's on the stack's PostgreSQL (default `hilo_bench`, DSN derived
   from HILO_DATABASE_URL; the `hilo` and `hilo_test` databases are not touched; one left by --keep is
   dropped and made afresh) and migrates it.
2. Generates a CSV of N customers (default 1,000,000; cached under .run/bench/) and loads it with the bulk
   importer (`hilo customers import`), timing it; then imports the same file again, which must change
   nothing, timing that too.
3. At a steady rate (default 200/s for 60 s, after a warm-up) fires, side by side in the same run and over
   the same pool (sized like the server's), caller identifications on the real call path
   (`identity.normalize` then `identity.identify_or_create`, as ivr/inbound.py does; most callers known,
   a share new, who are created) and bare primary-key lookups (`SELECT ... FROM customers WHERE id = $1`).
   Arrivals are random (Poisson) around the rate and started whether or not earlier ones finished (open
   loop), so requests overlap as independent calls do.
4. Prints p50/p90/p99 of both and their ratio (target: identification within 3x of the bare lookup), and
   writes the results into BENCHMARKS.md with the command, the machine and the date.
5. Drops its database unless --keep.

    .run/venv/bin/python -m bench.identify [--customers N] [--rate R] [--seconds S] [--keep]"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import os
import platform
import random
import re
import shlex
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from tqdm import tqdm

from bench import benchmarks_md
from bench.databases import bench_dsn, recreate_database
from crm_bridge import identity
from crm_bridge.import_cli import import_file
from crm_bridge.importer import Summary
from hilo.db import create_pool, migrate
from hilo.settings import REPO_ROOT, load_settings

REGION = "ES"
BENCHMARKS = REPO_ROOT / "BENCHMARKS.md"
SECTION = "## Customer import and caller identification (bench/identify.py)"
CACHE = REPO_ROOT / ".run" / "bench"
POOL_SIZE = (2, 10)  # min, max: as server/app.py sizes the server's pool
# Spanish mobile numbers 6xx xxx xxx: customer k gets 600000000 + (k * STEP) mod 10^8, a bijection on
# 0..10^8-1 (STEP is coprime to 10), so numbers are unique and spread; callers beyond N are new.
STEP = 7919
FIRST = ("Ana", "Bruno", "Carla", "David", "Elena", "Fábio", "Gema", "Hugo", "Inés", "João", "Lucía", "Marta")
LAST = ("García", "Silva", "López", "Santos", "Martín", "Pereira", "Ruiz", "Costa", "Díaz", "Moreno")


def phone_of(k: int) -> str:
    return str(600_000_000 + (k * STEP) % 100_000_000)


def national(k: int) -> str:
    """How a caller's number arrives from a Spanish trunk: national format, grouped."""
    n = phone_of(k)
    return f"{n[:3]} {n[3:5]} {n[5:7]} {n[7:]}"


# Generated data ----------------------------------------------------------------------------------


def generate_csv(path: Path, count: int, seed: int = 7) -> None:
    """N customers: every one a phone (in assorted formats), most an e-mail, some a WhatsApp id and a CRM id."""
    rng = random.Random(seed)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["name", "phone", "email", "whatsapp", "external_id", "language", "preferred_channel"])
        for k in range(count):
            n = phone_of(k)
            phone = rng.choice((f"+34 {n[:3]} {n[3:6]} {n[6:]}", n, f"0034{n}", national(k)))
            out.writerow(
                [
                    f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                    phone,
                    f"customer{k}@example.com" if rng.random() < 0.6 else "",
                    f"34{n}" if rng.random() < 0.3 else "",
                    f"crm:{k:08d}" if rng.random() < 0.5 else "",
                    rng.choice(("es", "es", "es", "en", "pt-BR", "")),
                    rng.choice(("voice", "sms", "whatsapp", "email", "", "")),
                ]
            )
    tmp.replace(path)


# The database ------------------------------------------------------------------------------------


async def store_counts(conn: asyncpg.Connection) -> str:
    customers = await conn.fetchval("SELECT count(*) FROM customers")
    identities = await conn.fetchval("SELECT count(*) FROM identities")
    return f"{customers:,} customers with {identities:,} identities"


# Measuring ---------------------------------------------------------------------------------------


@dataclass
class Series:
    label: str
    ms: list[float] = field(default_factory=list)
    errors: int = 0

    def pct(self, q: float) -> float:
        ordered = sorted(self.ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class Run:
    ident: Series = field(default_factory=lambda: Series("identification, all callers"))
    known: Series = field(default_factory=lambda: Series("identification, known callers"))
    new: Series = field(default_factory=lambda: Series("identification, new callers (created)"))
    normalize: Series = field(default_factory=lambda: Series("identity.normalize alone"))
    bare: Series = field(default_factory=lambda: Series("bare primary-key lookup"))
    created: int = 0
    lag_ms: list[float] = field(default_factory=list)
    peak: list[int] = field(default_factory=lambda: [0])  # most requests in flight at once
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after


async def steady(
    rate: float,
    seconds: float,
    fire: Callable[[int, float], list[Coroutine[Any, Any, None]]],
    done: Callable[[], object] | None,
    peak: list[int],
) -> float:
    """Start `fire(i, scheduled)`'s requests `rate` times a second on average for `seconds`, open loop (a
    request never waits for an earlier one), and wait for all of them. Arrivals are a Poisson process, as
    independent callers are: evenly spaced on average, bunched at times, so requests overlap."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()  # the requests in flight
    arrivals = random.Random(rate * seconds)
    start = loop.time()
    offset = arrivals.expovariate(rate)
    i = 0
    while offset < seconds:
        scheduled = start + offset
        offset += arrivals.expovariate(rate)
        i += 1
        if scheduled > loop.time():
            await asyncio.sleep(scheduled - loop.time())
        for request in fire(i, scheduled):
            task = asyncio.ensure_future(request)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            peak[0] = max(peak[0], len(tasks))
            if done is not None:
                task.add_done_callback(lambda _: done())
    await asyncio.gather(*tasks)
    return loop.time() - start


async def measure(
    pool: asyncpg.Pool, customers: int, ids: list[uuid.UUID], rate: float, seconds: float, new_share: float, seed: int
) -> Run:
    rng = random.Random(seed)
    run = Run()
    next_new = customers  # new callers: numbers beyond the loaded ones
    loop = asyncio.get_running_loop()

    async def identify(raw: str, scheduled: float, record: bool) -> None:
        if record:
            run.lag_ms.append((loop.time() - scheduled) * 1000)
        t0 = time.perf_counter()
        try:
            # What ivr/inbound.py does with the caller's number: normalise, then identify (or create).
            phone = identity.normalize("phone", raw, REGION)
            t1 = time.perf_counter()
            found = await identity.identify_or_create(pool, "phone", phone)
        except (asyncpg.PostgresError, OSError, identity.InvalidIdentity) as exc:
            run.ident.errors += 1
            print(f"identification failed: {exc!r}", file=sys.stderr)
            return
        t2 = time.perf_counter()
        if record:
            run.ident.ms.append((t2 - t0) * 1000)
            (run.new if found.created else run.known).ms.append((t2 - t0) * 1000)
            run.normalize.ms.append((t1 - t0) * 1000)
            run.created += found.created

    async def lookup(customer_id: uuid.UUID, record: bool) -> None:
        t0 = time.perf_counter()
        try:
            row = await pool.fetchrow("SELECT id, display_name FROM customers WHERE id = $1", customer_id)
        except (asyncpg.PostgresError, OSError) as exc:
            run.bare.errors += 1
            print(f"bare lookup failed: {exc!r}", file=sys.stderr)
            return
        assert row is not None
        if record:
            run.bare.ms.append((time.perf_counter() - t0) * 1000)

    def fire(record: bool) -> Callable[[int, float], list[Coroutine[Any, Any, None]]]:
        def requests(i: int, scheduled: float) -> list[Coroutine[Any, Any, None]]:
            nonlocal next_new
            if rng.random() < new_share:
                raw = national(next_new)
                next_new += 1
            else:
                raw = national(rng.randrange(customers))
            pair = [identify(raw, scheduled, record), lookup(rng.choice(ids), record)]
            return pair if i % 2 else pair[::-1]  # neither path always goes first

        return requests

    warmup = min(10.0, seconds / 3)
    print(f"warm-up: {warmup:.0f} s at {rate:g}/s of each", file=sys.stderr)
    await steady(rate, warmup, fire(False), None, [0])
    print(f"measuring: {seconds:g} s at {rate:g}/s of each", file=sys.stderr)
    with tqdm(total=int(rate * seconds) * 2, unit=" req", file=sys.stderr) as bar:  # total: on average
        load = os.getloadavg()[0]
        await steady(rate, seconds, fire(True), bar.update, run.peak)
        run.load = (load, os.getloadavg()[0])
    return run


# Reporting ---------------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    mem = ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        if m := re.search(r"^model name\s*:\s*(.+)$", info, re.M):
            cpu = m.group(1).strip()
        if m := re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M):
            mem = f", {int(m.group(1)) / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}){mem}, {platform.system()} {platform.release()}"


def report(
    args: argparse.Namespace,
    command: str,
    pg_version: str,
    imports: tuple[tuple[Summary, float], tuple[Summary, float]],
    counts: str,
    run: Run,
) -> str:
    (summary, import_s), (again, again_s) = imports
    rows = []
    for s in (run.ident, run.known, run.new, run.bare, run.normalize):
        rows.append(
            f"| {s.label} | {len(s.ms)} | {s.pct(0.5):.3f} | {s.pct(0.9):.3f} | {s.pct(0.99):.3f}"
            f" | {max(s.ms, default=float('nan')):.3f} | {s.errors} |"
        )
    r50 = run.ident.pct(0.5) / run.bare.pct(0.5)
    r99 = run.ident.pct(0.99) / run.bare.pct(0.99)
    verdict = "met" if max(r50, r99) <= 3 else "MISSED"
    achieved = len(run.ident.ms) / args.seconds
    lag = sorted(run.lag_ms)
    lag99 = lag[min(len(lag) - 1, int(0.99 * len(lag)))] if lag else float("nan")
    return f"""{SECTION}

Produced by `{command}` (`make bench` runs it with the defaults) on {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}.
Machine: {machine()}; Python {platform.python_version()}; {pg_version}, on the same machine, with the
stack's settings, in a database of its own.

**Import** (`hilo customers import`, batches of {args.batch_size:,}, one validation worker):
{summary.rows:,} rows in {import_s:.1f} s = {summary.rows / import_s:,.0f} rows/s -> {counts}
({summary.created:,} created, {summary.rejected:,} rejected). The same file again: {again_s:.1f} s =
{again.rows / again_s:,.0f} rows/s, {again.created:,} created, {again.updated:,} updated, {again.unchanged:,}
unchanged, the store as it was.

**Identification** at {args.rate:g}/s for {args.seconds:g} s (after a warm-up), with a bare lookup fired
beside each one (so {2 * args.rate:g} requests/s in all; Poisson arrivals, open loop; one pool of
{POOL_SIZE[1]} connections, as the server has);
{args.new_share:.0%} of callers are new (created on the spot: {run.created} this run). Achieved
{achieved:.1f} identifications/s, at most {run.peak[0]} requests in flight; scheduling lag p99 {lag99:.2f} ms
(not counted in the latencies). Load average {run.load[0]:.2f} before, {run.load[1]:.2f} after.

| path | n | p50 ms | p90 ms | p99 ms | max ms | errors |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

Identification / bare lookup: **{r50:.2f}x at p50, {r99:.2f}x at p99** (target 3x: {verdict}).

Where an identification's time goes: `identity.normalize` (phonenumbers parsing; the row above), then
`identify_or_create`, which normalises the E.164 number again and makes two round trips on two pool
checkouts for a known caller (the identity join, then the merge-chain query `survivor_of`), or five for
a new one (the identity join, BEGIN, INSERT customer, INSERT identity, COMMIT) — where the bare lookup
makes one.
"""


def write_section(text: str) -> None:
    benchmarks_md.write_section(SECTION, text, BENCHMARKS)


# Main --------------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, command: str) -> int:
    settings = load_settings()
    base = settings.database_url.get_secret_value()
    try:
        dsn = bench_dsn(base, args.database)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    CACHE.mkdir(parents=True, exist_ok=True)
    data = CACHE / f"customers-{args.customers}.csv"
    if not data.exists():
        print(f"generating {args.customers:,} customers into {data}", file=sys.stderr)
        generate_csv(data, args.customers)

    await recreate_database(base, args.database)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
            settings_shown = [
                await conn.fetchval(f"SHOW {name}")
                for name in ("server_version", "shared_buffers", "fsync", "synchronous_commit")
            ]
            pg_version = "PostgreSQL {} (shared_buffers {}, fsync {}, synchronous_commit {})".format(*settings_shown)
            print(f"importing {data.name} into {args.database}", file=sys.stderr)
            t0 = time.perf_counter()
            summary, _ = await import_file(conn, data, REGION, batch_size=args.batch_size)
            import_s = time.perf_counter() - t0
            print(f"import: {summary} in {import_s:.1f} s", file=sys.stderr)
            counts = await store_counts(conn)
            print(f"importing {data.name} again: nothing may change", file=sys.stderr)
            t0 = time.perf_counter()
            again, _ = await import_file(conn, data, REGION, batch_size=args.batch_size)
            again_s = time.perf_counter() - t0
            print(f"import again: {again} in {again_s:.1f} s", file=sys.stderr)
            if (again.created, again.updated, await store_counts(conn)) != (0, 0, counts):
                print(f"error: the second import changed the store ({again})", file=sys.stderr)
                return 1
            # The importers' bookkeeping (a million customer ids) is garbage now: collect it, and keep what
            # is left out of later collections, so the measurement does not time this process's GC passes.
            gc.collect()
            gc.freeze()
            # What autovacuum would soon do on its own; measuring before it would measure its timing.
            await conn.execute("VACUUM ANALYZE customers")
            await conn.execute("VACUUM ANALYZE identities")
            sample = await conn.fetch("SELECT id FROM customers TABLESAMPLE SYSTEM (2)")
            ids = [r["id"] for r in sample] or [r["id"] for r in await conn.fetch("SELECT id FROM customers")]
        finally:
            await conn.close()

        pool = await create_pool(dsn, min_size=POOL_SIZE[0], max_size=POOL_SIZE[1])
        try:
            run = await measure(pool, args.customers, ids, args.rate, args.seconds, args.new_share, seed=11)
        finally:
            await pool.close()
    finally:
        if not args.keep:
            await recreate_database(base, args.database, drop_only=True)
            print(f"dropped database {args.database}", file=sys.stderr)

    text = report(args, command, pg_version, ((summary, import_s), (again, again_s)), counts, run)
    print(text)
    write_section(text)
    print(f"written to {BENCHMARKS}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.identify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers to load (default 1,000,000)")
    parser.add_argument("--rate", type=float, default=200.0, help="identifications per second (default 200)")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds (default 60)")
    parser.add_argument("--new-share", type=float, default=0.1, help="share of callers not yet known (default 0.1)")
    parser.add_argument("--batch-size", type=int, default=50_000, help="import batch size (default 50,000)")
    parser.add_argument("--database", default="hilo_bench", help="the bench's own database (default hilo_bench)")
    parser.add_argument("--keep", action="store_true", help="keep the bench database afterwards")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "bench.identify", *(sys.argv[1:] if argv is None else argv)])
    return asyncio.run(bench(args, command))


if __name__ == "__main__":
    sys.exit(main())
