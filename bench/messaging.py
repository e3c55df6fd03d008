"""Inbound messaging benchmark: `python -m bench.messaging` (the stack's PostgreSQL must be up: `make stack`).

1. Makes a throwaway database (`hilo_bench_messaging` by default, dropped afterwards) with Hilo's schema.
2. Three servers, each in a process of its own on loopback:
   - "bare": an aiohttp handler that reads the webhook's JSON and only INSERTs the same `messages` row (no
     signature check, no validation, no redelivery check, no processing);
   - "hilo": Hilo's messaging app (bridges.http.messaging_app, what `hilo serve` mounts): X-Hub-Signature-256
     checked over the raw bytes, the body validated, the message stored (redelivery-safe INSERT, committed)
     before the 200, and the inbox processor in the same process handing each stored message to a handler
     (the default one, which does nothing) and marking it processed;
   - "receipt": the same app with its inbox processor off (receipt alone).
3. --rounds rounds, each running the three servers one after the other (so load from elsewhere on the
   machine falls on each alike); against each, --clients concurrent clients POST signed WhatsApp Cloud API
   webhooks (one text message each, a new wamid every time) as fast as it acknowledges, for --seconds.
4. Measured: acknowledged messages per second and the acknowledgement latency (POST sent -> 200 read)
   percentiles; afterwards every acknowledged message is checked to be in the database (and processed,
   for "hilo").

    .run/venv/bin/python -m bench.messaging [--seconds 5] [--rounds 3] [--clients 32]
        [--database hilo_bench_messaging]"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shlex
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from pydantic import SecretStr
from tqdm import tqdm

from bench import benchmarks_md
from bench.databases import bench_dsn, recreate_database
from bridges.fakes.whatsapp import FakeWhatsApp, meta_json, new_wamid
from bridges.whatsapp import signature
from hilo.db import create_pool, migrate
from hilo.settings import REPO_ROOT, load_settings

BENCHMARKS = REPO_ROOT / "BENCHMARKS.md"
SECTION = "## Inbound messaging (bench/messaging.py)"
PHONE_ID = "109876543210001"  # dialplans/channels.yaml's WhatsApp Cloud channel


# The two servers ---------------------------------------------------------------------------------------


def bare_app(dsn: str) -> web.Application:
    app = web.Application()
    pools: dict[str, asyncpg.Pool] = {}

    async def resources(_: web.Application) -> Any:
        pools["pool"] = await create_pool(dsn, min_size=2, max_size=10)
        yield
        await pools["pool"].close()

    async def webhook(request: web.Request) -> web.Response:
        value = json.loads(await request.read())["entry"][0]["changes"][0]["value"]
        message = value["messages"][0]
        await pools["pool"].execute(
            "INSERT INTO messages (channel, provider, provider_message_id, sender, recipient, address, text)"
            " VALUES ('whatsapp', 'whatsapp_cloud', $1, $2, $3, $4, $5)",
            message["id"],
            message["from"],
            value["metadata"]["phone_number_id"],
            "+" + message["from"],
            message["text"]["body"],
        )
        return web.Response(text="OK")

    app.cleanup_ctx.append(resources)
    app.router.add_post("/webhooks/whatsapp", webhook)
    return app


def serve(mode: str, port: int, dsn: str, app_secret: str) -> None:
    if mode == "bare":
        app = bare_app(dsn)
    else:
        from bridges.http import messaging_app

        settings = load_settings(
            database_url=SecretStr(dsn),
            whatsapp_app_secret=SecretStr(app_secret),
            twilio_account_sid="AC" + "0" * 32,
        )
        app = messaging_app(settings, workers=mode == "hilo")
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# The load --------------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0
    stored: int = 0
    processed: int | None = None
    drain_s: float | None = None

    @property
    def rate(self) -> float:
        return len(self.acked) / self.elapsed_s if self.elapsed_s else 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_server(mode: str, dsn: str, app_secret: str) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.messaging",
        "--serve",
        mode,
        "--port",
        str(port),
        "--dsn-env",
        "BENCH_DSN",
        env={**os.environ, "BENCH_DSN": dsn, "BENCH_APP_SECRET": app_secret},
        cwd=REPO_ROOT,
    )
    url = f"http://127.0.0.1:{port}/webhooks/whatsapp"
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as response:
                    if response.status in (200, 403, 405):
                        return process, url
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline or process.returncode is not None:
                raise RuntimeError(f"the {mode} server did not start")
            await asyncio.sleep(0.1)


async def stop_server(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()


async def load(url: str, app_secret: str, phase: Phase, clients: int, seconds: float, label: str) -> None:
    fake = FakeWhatsApp("unused", app_secret)
    stop_at = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients)

    async def client(session: aiohttp.ClientSession, n: int) -> None:
        sender = f"34600{n:06d}"
        while time.monotonic() < stop_at:
            wamid = new_wamid()
            body = meta_json(
                fake.envelope(PHONE_ID, messages=[fake.text_message(sender, "hola, ¿qué tal?", wamid=wamid)])
            )
            headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature(app_secret, body)}
            t = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                phase.latencies_ms.append((time.perf_counter() - t) * 1000)
                phase.acked.append(wamid)
            else:
                phase.errors += 1

    async def progress() -> None:
        started = time.monotonic()
        fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s {postfix}"
        with tqdm(total=seconds, desc=f"{phase.name:>7} {label}", bar_format=fmt, file=sys.stderr) as bar:
            while time.monotonic() < stop_at:
                await asyncio.sleep(0.5)
                bar.n = min(seconds, time.monotonic() - started)
                bar.set_postfix(acked=len(phase.acked), errors=phase.errors)

    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        ticker = asyncio.create_task(progress())
        await asyncio.gather(*(client(session, n) for n in range(clients)))
        phase.elapsed_s = time.perf_counter() - start
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker


def merge(total: Phase, part: Phase) -> None:
    total.latencies_ms += part.latencies_ms
    total.acked += part.acked
    total.errors += part.errors
    total.elapsed_s += part.elapsed_s
    total.stored += part.stored
    if part.processed is not None:
        total.processed = (total.processed or 0) + part.processed
        total.drain_s = max(total.drain_s or 0.0, part.drain_s or 0.0)


async def run_phase(name: str, dsn: str, args: argparse.Namespace, label: str) -> Phase:
    app_secret = secrets.token_hex(16)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE messages RESTART IDENTITY")
        process, url = await start_server(name, dsn, app_secret)
        phase = Phase(name)
        try:
            await load(url, app_secret, phase, args.clients, args.seconds, label)
            if name == "hilo":  # the processor goes on after the load: how long until all are processed
                t = time.perf_counter()
                while time.perf_counter() - t < 60:
                    left = await conn.fetchval("SELECT count(*) FROM messages WHERE state <> 'processed'")
                    if left == 0:
                        break
                    await asyncio.sleep(0.1)
                phase.drain_s = time.perf_counter() - t
                phase.processed = await conn.fetchval("SELECT count(*) FROM messages WHERE state = 'processed'")
        finally:
            await stop_server(process)
        phase.stored = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE provider_message_id = ANY($1::text[])", phase.acked
        )
        return phase
    finally:
        await conn.close()


# Report ----------------------------------------------------------------------------------------------


def machine() -> str:
    return f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def report(args: argparse.Namespace, command: str, pg: str, bare: Phase, receipt: Phase, hilo: Phase) -> str:
    def row(p: Phase, label: str) -> str:
        ms = p.latencies_ms
        return (
            f"| {label} | {len(p.acked):,} | {p.rate:,.0f} | {pct(ms, 0.5):.2f} | {pct(ms, 0.9):.2f}"
            f" | {pct(ms, 0.99):.2f} | {max(ms, default=float('nan')):.2f} | {p.errors} |"
        )

    ratio_rate = hilo.rate / bare.rate if bare.rate else float("nan")
    ratio_p99 = pct(hilo.latencies_ms, 0.99) / pct(bare.latencies_ms, 0.99) if bare.latencies_ms else float("nan")
    receipt_rate = receipt.rate / bare.rate if bare.rate else float("nan")
    receipt_p99 = pct(receipt.latencies_ms, 0.99) / pct(bare.latencies_ms, 0.99) if bare.latencies_ms else float("nan")
    return f"""{SECTION}

Command: `{command}` ({time.strftime("%Y-%m-%d", time.gmtime())}; {machine()}; {pg}).
Signed WhatsApp Cloud API webhooks (one text message each, a new wamid every time) POSTed by {args.clients}
concurrent clients into a server process on loopback, {args.rounds} rounds of {args.seconds:g} s per server
(the servers alternate, so load from elsewhere falls on each alike); the load generator runs on the same
machine. Every phase commits one row per message before answering 200.

| server | acknowledged | msg/s | p50 ms | p90 ms | p99 ms | max ms | errors |
|---|---:|---:|---:|---:|---:|---:|---:|
{row(bare, "bare aiohttp handler: INSERT only")}
{row(receipt, "Hilo, receipt only (processor off)")}
{row(hilo, "**Hilo messaging app** (`bridges.http`, processor on)")}

Hilo acknowledges **{ratio_rate:.2f}x** the bare handler's rate, at **{ratio_p99:.2f}x** its p99 latency; with
its processor off, **{receipt_rate:.2f}x** the rate at **{receipt_p99:.2f}x** the p99. What the bare handler skips:
the HMAC-SHA256 check over the raw bytes, validation of the whole body, the redelivery-safe insert
(`ON CONFLICT` on the provider's message id) and, in the same process, the inbox processor (claim with
`FOR UPDATE SKIP LOCKED`, call the handler, mark processed: a second round trip and a second pass through
Python for every message, on two cores shared with PostgreSQL and the load generator). Every acknowledged
message was found in the database afterwards (bare {bare.stored:,} of {len(bare.acked):,}, receipt only
{receipt.stored:,} of {len(receipt.acked):,}, Hilo {hilo.stored:,} of {len(hilo.acked):,}); Hilo's processor
had processed {hilo.processed or 0:,} of them at most {hilo.drain_s or 0:.1f} s after the load of a round stopped.
"""


async def bench(args: argparse.Namespace, command: str) -> int:
    base = load_settings().database_url.get_secret_value()
    try:
        dsn = bench_dsn(base, args.database)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    await recreate_database(base, args.database)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
            shown = [await conn.fetchval(f"SHOW {n}") for n in ("server_version", "fsync", "synchronous_commit")]
        finally:
            await conn.close()
        pg = "PostgreSQL {} (fsync {}, synchronous_commit {})".format(*shown)
        # Rounds alternate the servers, so that load from elsewhere on the machine falls on all of them alike.
        phases = {name: Phase(name) for name in ("bare", "receipt", "hilo")}
        for round_ in range(args.rounds):
            for name, total in phases.items():
                merge(total, await run_phase(name, dsn, args, f"{round_ + 1}/{args.rounds}"))
        bare, receipt, hilo = phases.values()
    finally:
        await recreate_database(base, args.database, drop_only=True)
    text = report(args, command, pg, bare, receipt, hilo)
    print(text)
    if not args.no_write:
        benchmarks_md.write_section(SECTION, text, BENCHMARKS)
        print(f"written to {BENCHMARKS}", file=sys.stderr)
    lost = any(p.stored != len(p.acked) for p in (bare, receipt, hilo))
    return 1 if lost else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.messaging", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5, help="of each server in each round")
    parser.add_argument("--rounds", type=int, default=3, help="bare, receipt-only and Hilo, one after the other")
    parser.add_argument("--clients", type=int, default=32, help="concurrent webhook senders")
    parser.add_argument("--database", default="hilo_bench_messaging", help="throwaway database (dropped)")
    parser.add_argument("--no-write", action="store_true", help="print only; BENCHMARKS.md untouched")
    parser.add_argument("--serve", choices=("bare", "receipt", "hilo"), help=argparse.SUPPRESS)  # the server process
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dsn-env", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, os.environ[args.dsn_env], os.environ["BENCH_APP_SECRET"])
        return 0
    command = "python -m bench.messaging" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])).rstrip()
    return asyncio.run(bench(args, command))


if __name__ == "__main__":
    sys.exit(main())
