"""KPI benchmark: report query time over a million interactions, and wallboard update latency with 1,000
agents under 200 events/s, each beside a baseline measured in the same run (the stack must be up:
`make stack`).

1. Reports. Makes a database of its own (default `hilo_bench_kpis`, beside Hilo's on the stack's
   PostgreSQL; dropped afterwards unless --keep), migrates it and generates N interactions (default
   1,000,000) over the last --days days straight into it with COPY: customers, 200 agents, the interactions
   and their timeline events (started; queued 85%; answered, held 10%, wrapped up, surveyed 10%; abandoned;
   callbacks booked 3% with connected/failed; about 5.5 events each). Its triggers are switched off during
   the load (nobody subscribes to webhooks in a throwaway database), so the per-contact summary
   (`contact_facts`) is then built whole as `hilo reports rebuild` does, and timed. Then it times Hilo's own
   report code (reports/service.py Reports.rows, as /api/reports/kpis runs it: the contacts of the period
   and of the repeat window after it, follow-ups, rows) for a day by queue per 15 minutes, a week by agent
   per day and, with --full, the whole period; beside each, the baseline: a bare COUNT of the period's
   `interaction.started` events in the same table, and once the same report read straight from the events
   (`Reports(from_timeline=True)`, the path before the summary), checked to give the very same rows.
2. Wallboard. Makes a second database (`hilo_bench_wallboard`) with 1,000 agents (--agents), starts a `hilo
   serve` process of its own (namespace `hilo-bench-wb`, log in .run/logs/bench-kpis-hilo.log), signs in a
   console admin (the whole, unfiltered picture: a supervisor's is cut to their teams) and opens the
   wallboard WebSocket as the page does. It then writes timeline events at
   --rate per second (default 200: each interaction started, queued, answered, ended) as Hilo does (the
   row, then the event on `<namespace>:events`), and for every `interaction.started` measures the time from
   its publication to the first wallboard message counting it (`started_today`). Baseline: a bare Redis
   pub/sub round trip in this process, at the same rate.

    .run/venv/bin/python -m bench.kpis [--interactions N] [--days D] [--full] [--agents A] [--rate R]
        [--seconds S] [--repeat K]"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import random
import shlex
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from statistics import median
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from tqdm import tqdm

from bench import benchmarks_md
from bench.databases import bench_dsn, recreate_database
from bench.screenpop import free_port, machine, wait_healthy
from console.users import add_user
from dialplans.models import Agent
from hilo.db import create_pool, migrate
from hilo.notifier import events_channel
from hilo.settings import REPO_ROOT, load_settings
from reports.config import load_kpi_config
from reports.facts import rebuild
from reports.report import Interval
from reports.service import Reports
from routing.store import RoutingStore

SECTION = "## KPI reports and wallboard latency (bench/kpis.py)"
NAMESPACE = "hilo-bench-wb"
SERVER_LOG = REPO_ROOT / ".run" / "logs" / "bench-kpis-hilo.log"
QUEUES = ("sales", "support")
CHANNELS = (("voice", 0.6), ("webchat", 0.2), ("whatsapp", 0.1), ("sms", 0.1))
CHUNK = 50_000  # interactions per COPY batch


# 1. Reports over a million interactions -------------------------------------------------------------------


def _csv(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict) else str(value)
    if any(c in text for c in ',"\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _line(*values: Any) -> str:
    return ",".join(_csv(v) for v in values) + "\n"


@dataclass
class Generated:
    interactions: int = 0
    events: int = 0
    customers: int = 0
    summary_s: float = 0.0  # building contact_facts from the events afterwards


def generate_chunk(
    rng: random.Random, count: int, start: datetime, days: int, customers: list[str], agents: list[str]
) -> tuple[bytes, bytes, int]:
    """CSV of `count` interactions and of their timeline events."""
    interactions, events = [], []
    span = days * 86_400
    channels = [c for c, _ in CHANNELS]
    weights = [w for _, w in CHANNELS]
    for _ in range(count):
        iid, customer = str(uuid.UUID(int=rng.getrandbits(128), version=4)), rng.choice(customers)
        channel = rng.choices(channels, weights)[0]
        t0 = start + timedelta(seconds=rng.random() * span)

        def event(
            type_: str,
            at: datetime,
            data: dict[str, Any] | None = None,
            c: str = customer,
            i: str = iid,
            ch: str = channel,
        ) -> None:
            events.append(_line(c, i, type_, ch, at.isoformat(), data or {}))

        event("interaction.started", t0)
        queue = agent = outcome = None
        answered = ended = None
        if rng.random() < 0.85:
            queue = rng.choice(QUEUES)
            queued = t0 + timedelta(seconds=rng.uniform(5, 30))
            event("routing.queued", queued, {"queue": queue})
            if rng.random() < 0.03:
                event("callback.requested", queued + timedelta(seconds=20), {"queue": queue})
                ended, outcome = queued + timedelta(seconds=25), "callback-requested"
                roll = rng.random()
                if roll < 0.9:
                    event("callback.dialing", ended + timedelta(minutes=10), {"attempt": 1})
                    kind = "callback.connected" if roll < 0.7 else "callback.failed"
                    event(kind, ended + timedelta(minutes=11), {})
            elif rng.random() < 0.88:
                answered, agent = queued + timedelta(seconds=rng.expovariate(1 / 25)), rng.choice(agents)
                event("agent.answered", answered, {"agent": agent})
                talk = rng.uniform(60, 900)
                if rng.random() < 0.1:
                    held = answered + timedelta(seconds=talk * 0.3)
                    event("call.held", held, {"agent": agent})
                    event("call.unheld", held + timedelta(seconds=rng.uniform(10, 90)), {"agent": agent})
                ended, outcome = answered + timedelta(seconds=talk), "completed"
                if rng.random() < 0.6:
                    event("agent.disposition", ended + timedelta(seconds=rng.uniform(0, 120)), {"agent": agent})
                if rng.random() < 0.1:
                    event(
                        "survey.answer", ended + timedelta(seconds=20), {"question": "csat", "score": rng.randint(1, 5)}
                    )
                    event(
                        "survey.answer", ended + timedelta(seconds=30), {"question": "nps", "score": rng.randint(0, 10)}
                    )
            else:
                ended, outcome = queued + timedelta(seconds=rng.uniform(10, 200)), "abandoned"
        else:
            ended, outcome = t0 + timedelta(seconds=rng.uniform(20, 120)), "ivr-ended"
        event("interaction.ended", ended, {"outcome": outcome, "hangup_by": "caller"})
        interactions.append(
            _line(iid, customer, channel, "inbound", "ended", queue, agent, outcome, t0.isoformat(),
                  answered.isoformat() if answered else None, ended.isoformat())
        )  # fmt: skip
    return "".join(interactions).encode(), "".join(events).encode(), len(events)


async def fill(conn: asyncpg.Connection, count: int, days: int, seed: int) -> Generated:
    rng = random.Random(seed)
    done = Generated()
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)
    await conn.execute("ALTER TABLE timeline_events DISABLE TRIGGER USER")  # no webhook deliveries to plan
    agents = [f"bench-{n:03d}" for n in range(200)]
    await conn.executemany(
        "INSERT INTO agents (id, name, sip_endpoint, queues) VALUES ($1, $1, $1, $2)",
        [(a, list(QUEUES)) for a in agents],
    )
    customers = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(max(1, count // 4))]
    await conn.copy_to_table(
        "customers", source=io.BytesIO("".join(f"{c}\n" for c in customers).encode()), columns=["id"], format="csv"
    )
    done.customers = len(customers)
    with tqdm(total=count, desc="generating interactions (COPY)", unit=" interactions", unit_scale=True) as bar:
        while done.interactions < count:
            n = min(CHUNK, count - done.interactions)
            rows, events, n_events = generate_chunk(rng, n, start, days, customers, agents)
            await conn.copy_to_table(
                "interactions",
                source=io.BytesIO(rows),
                columns=["id", "customer_id", "channel", "direction", "state", "queue", "agent_id", "outcome",
                         "started_at", "answered_at", "ended_at"],
                format="csv",
            )  # fmt: skip
            await conn.copy_to_table(
                "timeline_events",
                source=io.BytesIO(events),
                columns=["customer_id", "interaction_id", "type", "channel", "at", "data"],
                format="csv",
            )
            done.interactions += n
            done.events += n_events
            bar.update(n)
    print("analysing the tables …", flush=True)
    await conn.execute("VACUUM ANALYZE interactions")
    await conn.execute("VACUUM ANALYZE timeline_events")
    return done


@dataclass
class Timed:
    name: str
    contacts: int
    report_s: list[float] = field(default_factory=list)
    count_s: list[float] = field(default_factory=list)
    direct_s: float = 0.0  # the same report from the events at query time, once

    def row(self) -> str:
        report, count = median(self.report_s), median(self.count_s)
        return (
            f"| {self.name} | {self.contacts:,} | {report * 1000:,.0f} | {min(self.report_s) * 1000:,.0f} |"
            f" {count * 1000:,.1f} | {report / count:,.0f}x | {self.direct_s * 1000:,.0f} |"
            f" {self.direct_s / report:,.1f}x |"
        )


async def time_reports(pool: asyncpg.Pool, days: int, repeat: int, full: bool) -> list[Timed]:
    settings = load_settings()
    config = load_kpi_config(settings.dialplans_dir, {"sales": 30.0, "support": 20.0})
    reports = Reports(pool, config)
    direct = Reports(pool, config, from_timeline=True)
    now = datetime.now(UTC)  # one `now` for both paths: pending first-contact resolution depends on it
    zone = ZoneInfo("UTC")
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    periods: list[tuple[str, int, int, Interval, str]] = [
        ("one day, by queue, per 15 min", days // 2, 1, "15m", "queue"),
        ("a week, by agent, per day", 8, 7, "day", "agent"),
    ]
    if full:
        periods.append((f"all {days} days, per day", days, days, "day", "none"))
    results = []
    for name, back, length, interval, by in periods:
        start = today - timedelta(days=back)
        end = start + timedelta(days=length)
        contacts = await pool.fetchval(
            "SELECT count(*) FROM timeline_events WHERE type = 'interaction.started' AND at >= $1 AND at < $2",
            start,
            end,
        )
        timed = Timed(name, contacts)
        t0 = time.perf_counter()
        expected = await direct.rows(start, end, interval, by, zone=zone, now=now)
        timed.direct_s = time.perf_counter() - t0
        for _ in tqdm(range(repeat), desc=f"report: {name}", unit=" runs"):
            t0 = time.perf_counter()
            rows = await reports.rows(start, end, interval, by, zone=zone, now=now)
            timed.report_s.append(time.perf_counter() - t0)
            if rows != expected:
                raise AssertionError(f"{name}: the summary's rows differ from the events' rows")
            t0 = time.perf_counter()
            await pool.fetchval(
                "SELECT count(*) FROM timeline_events WHERE type = 'interaction.started' AND at >= $1 AND at < $2",
                start,
                end,
            )
            timed.count_s.append(time.perf_counter() - t0)
        results.append(timed)
    return results


# 2. Wallboard latency -----------------------------------------------------------------------------------


def percentiles(values: list[float]) -> tuple[float, float, float, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return at(0.5), at(0.95), at(0.99), ordered[-1] * 1000


@contextlib.asynccontextmanager
async def hilo_server(dsn: str) -> AsyncIterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "HILO_NAMESPACE": NAMESPACE,
        "HILO_DATABASE_URL": dsn,
        "HILO_HTTP_HOST": "127.0.0.1",
        "HILO_HTTP_PORT": str(port),
        "HILO_CRM_URL": "",
    }
    SERVER_LOG.parent.mkdir(parents=True, exist_ok=True)
    with SERVER_LOG.open("a") as log:
        log.write(f"\n===== {datetime.now(UTC).isoformat()} bench.kpis: hilo serve =====\n")
        log.flush()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", "serve", cwd=REPO_ROOT, env=env, stdout=log, stderr=log
        )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(base, proc, 120)
        yield base
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@dataclass
class Latency:
    wallboard_s: list[float] = field(default_factory=list)
    pubsub_s: list[float] = field(default_factory=list)
    messages: int = 0
    events: int = 0
    picture_bytes: int = 0


async def prepare_wallboard_db(dsn: str, agents: int) -> tuple[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await create_pool(dsn)
    try:
        store = RoutingStore(pool)
        await store.put_agents(
            Agent(id=f"bench-agent-{n:04d}", name=f"Agent {n}", sip_endpoint=f"bench-agent-{n:04d}",
                  queues=[QUEUES[n % 2]], skills={QUEUES[n % 2]: 1 + n % 5})
            for n in range(agents)
        )  # fmt: skip
        password = uuid.uuid4().hex
        await add_user(pool, "bench-admin", password, "admin", None)  # every team: the whole picture
        customer = await pool.fetchval("INSERT INTO customers (display_name) VALUES ('Bench') RETURNING id")
    finally:
        await pool.close()
    return password, str(customer)


async def wallboard_latency(dsn: str, agents: int, rate: float, seconds: float) -> Latency:
    settings = load_settings()
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    async for key in redis.scan_iter(f"{NAMESPACE}:*"):  # routing state of an earlier run: rebuilt from PostgreSQL
        await redis.delete(key)
    password, customer = await prepare_wallboard_db(dsn, agents)
    result = Latency()
    pending: list[tuple[int, float]] = []  # (started count it makes, published at)
    seen = asyncio.Event()
    async with hilo_server(dsn) as base, aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/console/api/login", json={"username": "bench-admin", "password": password}
        ) as r:
            token = (await r.json())["token"]
        ws = await http.ws_connect(f"{base}/console/wallboard/ws", headers={"Authorization": f"Bearer {token}"})

        async def read() -> None:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                arrived = time.perf_counter()
                picture = json.loads(message.data)
                if picture.get("type") != "wallboard":
                    continue
                result.messages += 1
                result.picture_bytes = len(message.data)
                started = sum(c["started_today"] for c in picture["channels"])
                while pending and pending[0][0] <= started:
                    result.wallboard_s.append(arrived - pending.pop(0)[1])
                seen.set()

        reader = asyncio.create_task(read())
        await asyncio.wait_for(seen.wait(), 30)  # the first picture
        pool = await create_pool(dsn, min_size=4, max_size=8)
        channel = events_channel(NAMESPACE)
        started_count = 0
        customer_id = uuid.UUID(customer)
        try:
            total = int(rate * seconds)
            t0 = time.perf_counter()
            open_ids: list[uuid.UUID] = []
            kinds = ("interaction.started", "routing.queued", "agent.answered", "interaction.ended")
            with tqdm(total=total, desc=f"wallboard: {rate:.0f} events/s, {agents} agents", unit=" events") as bar:
                for k in range(total):
                    delay = t0 + k / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    kind = kinds[k % 4]
                    if kind == "interaction.started":
                        iid = await pool.fetchval(
                            "INSERT INTO interactions (customer_id, channel, direction, state) VALUES ($1, 'voice',"
                            " 'inbound', 'ivr') RETURNING id",
                            customer_id,
                        )
                        open_ids.append(iid)
                    iid = open_ids[-1]
                    data = {"queue": QUEUES[k % 2], "agent": "bench-agent-0000"}
                    row = await pool.fetchrow(
                        "INSERT INTO timeline_events (customer_id, interaction_id, type, channel, data)"
                        " VALUES ($1, $2, $3, 'voice', $4) RETURNING id, at",
                        customer_id,
                        iid,
                        kind,
                        data,
                    )
                    assert row is not None
                    if kind == "interaction.ended":
                        await pool.execute(
                            "UPDATE interactions SET state = 'ended', ended_at = now() WHERE id = $1", iid
                        )
                    event = {
                        "id": row["id"],
                        "type": kind,
                        "interaction_id": str(iid),
                        "at": row["at"].isoformat(),
                        "data": data,
                    }
                    await redis.publish(channel, json.dumps(event))
                    if kind == "interaction.started":
                        started_count += 1
                        pending.append((started_count, time.perf_counter()))
                    result.events += 1
                    bar.update(1)
            deadline = time.perf_counter() + 10
            while pending and time.perf_counter() < deadline:
                seen.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(seen.wait(), 1)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await ws.close()
            await pool.close()
        result.pubsub_s = await pubsub_round_trips(redis, rate, started_count)
    await redis.aclose()
    return result


async def pubsub_round_trips(redis: aioredis.Redis, rate: float, count: int) -> list[float]:
    """The baseline: a bare publish -> subscriber in this process, at the same pace."""
    channel = f"{NAMESPACE}:bench-baseline"
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    got: asyncio.Queue[float] = asyncio.Queue()

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                got.put_nowait(time.perf_counter())

    listener = asyncio.create_task(listen())
    times: list[float] = []
    try:
        for _ in tqdm(range(count), desc="baseline: Redis pub/sub round trips", unit=" messages"):
            sent = time.perf_counter()
            await redis.publish(channel, json.dumps({"type": "interaction.started", "at": sent}))
            times.append(await asyncio.wait_for(got.get(), 5) - sent)
            await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - sent)))
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await pubsub.aclose()
    return times


# Report ---------------------------------------------------------------------------------------------------


def report(
    args: argparse.Namespace, command: str, made: Generated, timed: list[Timed], wb: Latency, seconds: float
) -> str:
    wall, base = percentiles(wb.wallboard_s), percentiles(wb.pubsub_s)
    missed = int(args.rate * args.seconds) // 4 - len(wb.wallboard_s)
    return f"""{SECTION}

Produced by `{command}` on {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")} in {seconds:.0f} s.
Machine: {machine()}; Python {platform.python_version()}; PostgreSQL and Redis of the local stack.

**KPI reports.** A throwaway database filled by COPY with {made.interactions:,} interactions over {args.days}
days ({made.events:,} timeline events, {made.customers:,} customers, 200 agents): about 85% queued, of them
3% callbacks and 88% of the rest answered (10% put on hold, 60% wrapped up, 10% surveyed). The load runs
with triggers off, so the per-contact summary `contact_facts` is then built from all the events as
`hilo reports rebuild` does: {made.summary_s:.0f} s. Each report is Hilo's own code (`Reports.rows`, what
`/api/reports/kpis` runs: the period's contacts read from the summary and those of the repeat window after
it, with follow-ups for first-contact resolution and channel switch), timed {args.repeat} times; the
baseline is a bare `count(*)` of the period's `interaction.started` events on the timeline's table and
index, timed alongside. "From the events" is the same report grouped from the timeline at query time (the
path before the summary), run once; every run's rows were checked equal to its rows.

| report | contacts | median ms | best ms | bare COUNT ms | report / COUNT | from the events ms | events / report |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(t.row() for t in timed)}

The summary takes the grouping of every event out of each report (and the first-contact look-ahead reads
only the period's customers); what remains is Python's work per contact: reading each row into a contact,
the follow-ups, the figures.

**Wallboard.** A `hilo serve` of the bench's own with {args.agents:,} agents, one admin's (unfiltered) wallboard
WebSocket open, and {wb.events:,} timeline events written at {args.rate:.0f}/s for {args.seconds:.0f} s
(interactions started, queued, answered, ended, as Hilo writes them: the row, then the event on Redis). For
each of the {len(wb.wallboard_s):,} `interaction.started` events measured ({max(missed, 0)} not seen within
10 s of the end), the time from its publication to the first wallboard message counting it; {wb.messages}
pictures arrived (one rebuild covers a burst: the monitor waits {100} ms after an event, then reads every
agent's state and the day's counts), {wb.picture_bytes:,} bytes each. Baseline: a bare Redis publish to a
subscriber in the bench process, {len(wb.pubsub_s):,} times at the same pace.

| path | n | p50 ms | p95 ms | p99 ms | max ms |
| --- | ---: | ---: | ---: | ---: | ---: |
| event -> wallboard message | {len(wb.wallboard_s):,} | {" | ".join(f"{v:.0f}" for v in wall)} |
| baseline: Redis pub/sub round trip | {len(wb.pubsub_s):,} | {" | ".join(f"{v:.2f}" for v in base)} |

At p50 the wallboard path is {wall[0] / base[0]:,.0f}x the bare pub/sub round trip: the 100 ms coalescing
wait, then the rebuild (a Redis read per agent and the live counts from PostgreSQL) and the push.
"""


async def bench(args: argparse.Namespace, command: str) -> int:
    settings = load_settings()
    base_dsn = settings.database_url.get_secret_value()
    try:
        kpi_dsn = bench_dsn(base_dsn, args.database)
        wb_dsn = bench_dsn(base_dsn, args.wallboard_database)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    began = time.perf_counter()
    await recreate_database(base_dsn, args.database)
    await recreate_database(base_dsn, args.wallboard_database)
    try:
        conn = await asyncpg.connect(kpi_dsn)
        try:
            await migrate(conn)
            made = await fill(conn, args.interactions, args.days, args.seed)
        finally:
            await conn.close()
        pool = await create_pool(kpi_dsn)
        try:
            print("building the per-contact summary (hilo reports rebuild) …", flush=True)
            t0 = time.perf_counter()
            await rebuild(pool)
            made.summary_s = time.perf_counter() - t0
            timed = await time_reports(pool, args.days, args.repeat, args.full)
        finally:
            await pool.close()
        wb = await wallboard_latency(wb_dsn, args.agents, args.rate, args.seconds)
    finally:
        if not args.keep:
            await recreate_database(base_dsn, args.database, drop_only=True)
            await recreate_database(base_dsn, args.wallboard_database, drop_only=True)
    text = report(args, command, made, timed, wb, time.perf_counter() - began)
    print(text)
    if not args.no_write:
        benchmarks_md.write_section(SECTION, text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.kpis", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--interactions", type=int, default=1_000_000, help="interactions generated (1,000,000)")
    parser.add_argument("--days", type=int, default=30, help="days they are spread over (30)")
    parser.add_argument("--full", action="store_true", help="also time the report of the whole period")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each report (3)")
    parser.add_argument("--agents", type=int, default=1000, help="agents on the wallboard (1,000)")
    parser.add_argument("--rate", type=float, default=200.0, help="timeline events per second (200)")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long the events come (15)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database", default="hilo_bench_kpis", help="the reports' throwaway database")
    parser.add_argument("--wallboard-database", default="hilo_bench_wallboard", help="the wallboard's")
    parser.add_argument("--keep", action="store_true", help="keep the bench databases afterwards")
    parser.add_argument("--no-write", action="store_true", help="print the results only, not into BENCHMARKS.md")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "bench.kpis", *(sys.argv[1:] if argv is None else argv)])
    return asyncio.run(bench(args, command))


if __name__ == "__main__":
    sys.exit(main())
