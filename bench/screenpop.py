"""Screen-pop latency benchmark: from a call entering the queue to the agent's console WebSocket receiving the
pop, over real calls through Asterisk (the stack must be up: `make stack`).

1. Makes a database of its own (default `hilo_bench_screenpop`, beside Hilo's on the stack's PostgreSQL;
   dropped afterwards unless --keep), migrates it, seeds the demo customers and agents, and adds a console
   user for each demo agent.
2. Starts a Hilo server of its own (`hilo serve`, a separate process, namespace `hilo-bench`, on a free
   loopback port; its log in .run/logs/bench-screenpop-hilo.log) against the stack's Asterisk and Redis,
   and waits until /healthz says ARI, AMI, PostgreSQL and Redis are up.
3. Signs in as each agent (POST /console/api/login) and opens their console WebSocket (/console/ws), as the
   agent page does, and follows the server's events on Redis (`hilo-bench:events`).
4. Places N real calls (Local channels into `hilo-inbound`, the simulated caller keys 1 for sales -> alice or
   2 for support -> bob; one lane per agent, calls in a lane one after another; callers cycle through a set
   of numbers, so early calls are new customers and later ones have a history). For each call it takes the
   `routing.queued` event's time (PostgreSQL's clock, when the fact was written) and the moment the pop
   arrives on the agent's WebSocket (this process's clock: the same machine clock), then lets the agent
   answer, hangs up and waits for `interaction.ended`. The first --warmup calls are not counted.
5. After each call, in the same run, baselines of the same payload size: a raw Redis publish -> subscriber in
   this process, and a Redis publish on the agent's channel -> the console WebSocket (Hilo's relay alone,
   no pop to build).
6. Prints p50/p95/p99/max of each, and writes the results into BENCHMARKS.md with the command, the machine
   and the date.

It shares the demo agents' SIPp phones and the `sim-` channel names with the stack tests: do not run both at
once.

    .run/venv/bin/python -m bench.screenpop [--calls N] [--lanes 1|2] [--warmup W] [--baseline-per-call K]"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import shlex
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from tqdm import tqdm

from asterisk.ari import AriClient
from bench import benchmarks_md
from bench.databases import bench_dsn, recreate_database
from console.screenpop import agent_channel
from console.users import add_user
from hilo.db import create_pool, migrate
from hilo.notifier import events_channel
from hilo.settings import REPO_ROOT, Settings, load_settings
from server.seed import seed_demo
from server.simcall import originate_sim_call

NAMESPACE = "hilo-bench"
BENCHMARKS = REPO_ROOT / "BENCHMARKS.md"
SECTION = "## Screen-pop latency (bench/screenpop.py)"
SERVER_LOG = REPO_ROOT / ".run" / "logs" / "bench-screenpop-hilo.log"
LANES = (("1", "alice", "sales"), ("2", "bob", "support"))  # digit keyed, agent, queue (dialplans/)
WANTED = ("routing.queued", "routing.offered", "agent.answered", "interaction.ended")
STEP_TIMEOUT_S = 30.0


# Measuring ---------------------------------------------------------------------------------------


@dataclass
class Series:
    label: str
    ms: list[float] = field(default_factory=list)

    def pct(self, q: float) -> float:
        ordered = sorted(self.ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    def row(self) -> str:
        top = max(self.ms, default=float("nan"))
        return (
            f"| {self.label} | {len(self.ms)} | {self.pct(0.5):.2f} | {self.pct(0.95):.2f} | {self.pct(0.99):.2f}"
            f" | {top:.2f} |"
        )


@dataclass
class Run:
    e2e: Series = field(default_factory=lambda: Series("**queued -> pop on the agent's console** (end to end)"))
    claim: Series = field(default_factory=lambda: Series("... queued -> routing.offered (agent claimed)"))
    build: Series = field(default_factory=lambda: Series("... routing.offered -> pop built (PostgreSQL reads)"))
    deliver: Series = field(default_factory=lambda: Series("... pop built -> console received (Redis + WebSocket)"))
    relay: Series = field(default_factory=lambda: Series("baseline: Redis publish -> console WebSocket (relay alone)"))
    raw: Series = field(default_factory=lambda: Series("baseline: Redis publish -> subscriber (raw pub/sub)"))
    errors: list[str] = field(default_factory=list)
    pop_bytes: list[int] = field(default_factory=list)
    new_callers: int = 0
    calls_done: int = 0
    load: tuple[float, float] = (0.0, 0.0)


class Mailbox:
    """What readers receive, keyed; `get` waits for a key, and a value that came first is kept for it."""

    def __init__(self) -> None:
        self._values: dict[Any, Any] = {}
        self._waiters: dict[Any, asyncio.Future[Any]] = {}

    def put(self, key: Any, value: Any) -> None:
        waiter = self._waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(value)
        else:
            self._values[key] = value

    async def get(self, key: Any, timeout: float = STEP_TIMEOUT_S) -> Any:
        if key in self._values:
            return self._values.pop(key)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[key] = waiter
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise TimeoutError(f"no {key[0]} within {timeout:g} s") from None
        finally:
            self._waiters.pop(key, None)


def at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["at"]).timestamp()


def caller_number(i: int, callers: int) -> str:
    return f"+3469100{i % callers:04d}"  # Spanish mobiles nobody in the demo customers has


# The server --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def hilo_server(dsn: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A `hilo serve` process of our own; yields its base URL and its /healthz answer once healthy."""
    port = free_port()
    env = {
        **os.environ,
        "HILO_NAMESPACE": NAMESPACE,
        "HILO_DATABASE_URL": dsn,
        "HILO_HTTP_HOST": "127.0.0.1",
        "HILO_HTTP_PORT": str(port),
        "HILO_WRAPUP_S": "0",
        "HILO_CRM_URL": "",
    }
    SERVER_LOG.parent.mkdir(parents=True, exist_ok=True)
    with SERVER_LOG.open("a") as log:
        log.write(f"\n===== {datetime.now(UTC).isoformat()} bench.screenpop: hilo serve =====\n")
        log.flush()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", "serve", cwd=REPO_ROOT, env=env, stdout=log, stderr=log
        )
    base = f"http://127.0.0.1:{port}"
    try:
        health = await wait_healthy(base, proc, 120)
        yield base, health
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)  # aiohttp's graceful stop: calls closed, sockets told
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def wait_healthy(base: str, proc: asyncio.subprocess.Process, within: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last = "no answer"
    async with aiohttp.ClientSession() as http:
        while loop.time() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"hilo serve exited with {proc.returncode}: see {SERVER_LOG}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{base}/healthz") as resp:
                    body: dict[str, Any] = await resp.json()
                    if resp.status == 200:
                        return body
                    last = json.dumps(body)
            await asyncio.sleep(0.5)
    raise RuntimeError(f"hilo serve not healthy within {within:g} s ({last}): see {SERVER_LOG}")


# The bench's own database ------------------------------------------------------------------------


async def prepare_database(dsn: str, settings: Settings) -> tuple[str, dict[str, str]]:
    """Migrated, demo-seeded, one console user per demo agent; returns PostgreSQL's version and the
    agents' passwords."""
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        version = str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
    pool = await create_pool(dsn, min_size=1, max_size=2)
    passwords = {}
    try:
        await seed_demo(pool, settings.dialplans_dir, settings.default_region)
        for _, agent, _ in LANES:
            passwords[agent] = secrets.token_urlsafe(16)
            await add_user(pool, f"bench-{agent}", passwords[agent], "agent", agent)
    finally:
        await pool.close()
    return version, passwords


# The clients -------------------------------------------------------------------------------------


async def follow_events(redis: aioredis.Redis, box: Mailbox, ready: asyncio.Event) -> None:
    pubsub = redis.pubsub()
    await pubsub.subscribe(events_channel(NAMESPACE))
    ready.set()
    try:
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            event = json.loads(message["data"])
            if event["type"] == "interaction.started":
                box.put(("interaction.started", event["data"].get("channel_ref")), event)
            elif event["type"] in WANTED:
                box.put((event["type"], event["interaction_id"]), event)
    finally:
        await pubsub.aclose()


async def follow_raw(redis: aioredis.Redis, channel: str, box: Mailbox, ready: asyncio.Event) -> None:
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    ready.set()
    try:
        async for message in pubsub.listen():
            if message["type"] == "message":
                received = time.perf_counter()
                box.put(("raw probe", json.loads(message["data"])["probe"]), received)
    finally:
        await pubsub.aclose()


@dataclass
class Console:
    ws: aiohttp.ClientWebSocketResponse
    reader: asyncio.Task[None]


async def console(http: aiohttp.ClientSession, base: str, agent: str, password: str, box: Mailbox) -> Console:
    """Sign in as the agent and read their console WebSocket into the mailbox."""
    async with http.post(f"{base}/console/api/login", json={"username": f"bench-{agent}", "password": password}) as r:
        body = await r.json()
        if r.status != 200:
            raise RuntimeError(f"sign-in as bench-{agent} refused: {body}")
    http.cookie_jar.clear()  # each socket says who it is by its token
    ws = await http.ws_connect(f"{base}/console/ws", headers={"Authorization": f"Bearer {body['token']}"})
    hello = json.loads((await ws.receive(timeout=10)).data)
    if hello.get("type") != "hello" or hello.get("agent_id") != agent:
        raise RuntimeError(f"unexpected first console message for {agent}: {hello}")

    async def read() -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            received_wall, received = time.time(), time.perf_counter()
            data = json.loads(message.data)
            if data.get("type") == "screenpop":
                box.put(("screenpop", data["interaction_id"]), (received_wall, len(message.data), data))
            elif data.get("type") == "bench-probe":
                box.put(("relay probe", data["probe"]), received)

    return Console(ws, asyncio.create_task(read()))


# One call ----------------------------------------------------------------------------------------


@dataclass
class Bench:
    ari: AriClient
    redis: aioredis.Redis
    http: aiohttp.ClientSession
    base: str
    token: str
    box: Mailbox
    run: Run
    args: argparse.Namespace
    raw_channel: str
    seen_callers: set[str] = field(default_factory=set)

    async def agent_available(self, agent: str, within: float = 10.0) -> None:
        """Wait until routing has the agent free again, so no call's pop waits for the last one's release."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            async with self.http.get(
                f"{self.base}/api/agents", headers={"Authorization": f"Bearer {self.token}"}
            ) as resp:
                states = {a["id"]: a["state"] for a in (await resp.json())["agents"]}
            if states.get(agent) == "available":
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"agent {agent} not available again within {within:g} s")

    async def call(self, i: int, lane: int, counted: bool) -> None:
        digit, agent, _ = LANES[lane]
        caller = caller_number(i, self.args.callers)
        await self.agent_available(agent)
        sim = await originate_sim_call(self.ari, "100", caller, digit, namespace=NAMESPACE)
        interaction = None
        try:
            started = await self.box.get(("interaction.started", sim.ivr_leg))
            interaction = started["interaction_id"]
            queued = await self.box.get(("routing.queued", interaction))
            offered = await self.box.get(("routing.offered", interaction))
            received_wall, size, pop = await self.box.get(("screenpop", interaction))
            await self.box.get(("agent.answered", interaction))
        finally:
            with contextlib.suppress(Exception):
                await self.ari.hangup(sim.caller_leg)
        await self.box.get(("interaction.ended", interaction))
        if caller not in self.seen_callers:
            self.seen_callers.add(caller)
            self.run.new_callers += counted
        if not counted:
            return
        built = datetime.fromisoformat(pop["offered_at"]).timestamp()
        run = self.run
        run.e2e.ms.append((received_wall - at(queued)) * 1000)
        run.claim.ms.append((at(offered) - at(queued)) * 1000)
        run.build.ms.append((built - at(offered)) * 1000)
        run.deliver.ms.append((received_wall - built) * 1000)
        run.pop_bytes.append(size)
        await self.baselines(agent, size)

    async def baselines(self, agent: str, size: int) -> None:
        """Same-size messages, one at a time: straight through Redis, and through Hilo's WebSocket relay."""
        for _ in range(self.args.baseline_per_call):
            for kind, channel, series in (
                ("raw probe", self.raw_channel, self.run.raw),
                ("relay probe", agent_channel(NAMESPACE, agent), self.run.relay),
            ):
                probe = str(uuid.uuid4())
                head = json.dumps({"type": "bench-probe", "probe": probe, "pad": ""})
                body = head[:-2] + "x" * max(0, size - len(head)) + '"}'
                sent = time.perf_counter()
                await self.redis.publish(channel, body)
                received = await self.box.get((kind, probe), 5)
                series.ms.append((received - sent) * 1000)


async def lane_worker(bench: Bench, lane: int, next_call: list[int], bar: tqdm[Any]) -> None:
    args = bench.args
    while next_call[0] < args.calls + args.warmup:
        i = next_call[0]
        next_call[0] += 1
        counted = i >= args.warmup
        try:
            await bench.call(i, lane, counted)
            bench.run.calls_done += counted
        except Exception as exc:  # one bad call is reported, the run goes on
            bench.run.errors.append(f"call {i} (lane {LANES[lane][1]}): {type(exc).__name__}: {exc}")
        e2e = bench.run.e2e
        bar.set_postfix_str(
            f"pop p50 {e2e.pct(0.5):.1f} ms, last {e2e.ms[-1] if e2e.ms else float('nan'):.1f} ms,"
            f" errors {len(bench.run.errors)}"
        )
        bar.update(1)


# Report ------------------------------------------------------------------------------------------


def machine() -> str:
    cpu, mem = "unknown CPU", ""
    try:
        if m := re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M):
            cpu = m.group(1).strip()
        if m := re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M):
            mem = f", {int(m.group(1)) / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}){mem}, {platform.system()} {platform.release()}"


def report(args: argparse.Namespace, command: str, versions: str, run: Run, seconds: float) -> str:
    rows = [s.row() for s in (run.e2e, run.claim, run.build, run.deliver, run.relay, run.raw)]
    size = sorted(run.pop_bytes)[len(run.pop_bytes) // 2] if run.pop_bytes else 0
    over_relay = run.e2e.pct(0.5) / run.relay.pct(0.5) if run.relay.ms else float("nan")
    errors = "\n".join(f"- {e}" for e in run.errors[:10]) or "- none"
    return f"""{SECTION}

Produced by `{command}` on {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}.
Machine: {machine()}; Python {platform.python_version()}; {versions}; everything on the same machine.

What runs: a `hilo serve` process of the bench's own (namespace `{NAMESPACE}`, its own database, the
stack's Asterisk, PostgreSQL and Redis), and this benchmark in another process as the agents' consoles
(signed in, one WebSocket per agent) and as the callers: {run.calls_done} calls measured of {args.calls}
asked ({args.warmup} warm-up calls before them, not counted), real Local-channel calls into Asterisk keying 1
(sales, alice) or 2 (support, bob), {args.lanes} at once, one call at a time per agent; callers cycle
through {args.callers} numbers ({run.new_callers} measured calls came from a caller new to Hilo, the others
from callers with a history). Run time {seconds:.0f} s. Load average {run.load[0]:.2f} before,
{run.load[1]:.2f} after.

"Queued" is the `routing.queued` event's time (PostgreSQL's clock, when the fact was written); "received"
is when the pop's WebSocket message arrived in this process (the same machine clock); "pop built" is the
pop's own `offered_at` (Hilo's clock, after its PostgreSQL reads). The baselines were measured in the same
run, after each call ({args.baseline_per_call} of each), with messages of the pop's size (median
{size:,} bytes).

| path | n | p50 ms | p95 ms | p99 ms | max ms |
| --- | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

End to end at p50 is {over_relay:.1f}x Hilo's bare relay path: the rest is routing claiming the agent with
the `routing.offered` event written, and building the pop from PostgreSQL.

Calls that failed: {len(run.errors)}
{errors}
"""


def write_section(text: str) -> None:
    benchmarks_md.write_section(SECTION, text, BENCHMARKS)


# Main --------------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, command: str) -> int:
    settings = load_settings()
    base_dsn = settings.database_url.get_secret_value()
    try:
        dsn = bench_dsn(base_dsn, args.database)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    await recreate_database(base_dsn, args.database)
    run = Run()
    try:
        pg_version, passwords = await prepare_database(dsn, settings)
        print(f"starting hilo serve (namespace {NAMESPACE}, database {args.database})", file=sys.stderr)
        async with hilo_server(dsn) as (base, _), contextlib.AsyncExitStack() as stack:
            redis = aioredis.from_url(settings.redis_url.get_secret_value())
            stack.push_async_callback(redis.aclose)
            http = await stack.enter_async_context(aiohttp.ClientSession())
            ari = AriClient(
                settings.ari_url, settings.ari_user, settings.ari_password.get_secret_value(), f"{NAMESPACE}-callers"
            )
            await ari.start()
            stack.push_async_callback(ari.close)
            await ari.wait_connected(10)
            box = Mailbox()
            raw_channel = f"{NAMESPACE}:bench-probe"
            events_ready, raw_ready = asyncio.Event(), asyncio.Event()
            readers = [
                asyncio.create_task(follow_events(redis, box, events_ready)),
                asyncio.create_task(follow_raw(redis, raw_channel, box, raw_ready)),
            ]
            await asyncio.wait_for(asyncio.gather(events_ready.wait(), raw_ready.wait()), 5)
            sockets = [await console(http, base, agent, passwords[agent], box) for _, agent, _ in LANES[: args.lanes]]
            redis_version = (await redis.info("server"))["redis_version"]
            token = settings.api_token.get_secret_value()
            async with http.get(f"{base}/api/health", headers={"Authorization": f"Bearer {token}"}) as resp:
                asterisk = (await resp.json())["ari"].get("asterisk") or "?"  # /healthz names no version
            versions = f"Asterisk {asterisk}; PostgreSQL {pg_version}; Redis {redis_version}"
            bench_ = Bench(ari, redis, http, base, settings.api_token.get_secret_value(), box, run, args, raw_channel)
            run.load = (os.getloadavg()[0], 0.0)
            t0 = time.monotonic()
            next_call = [0]
            with tqdm(total=args.calls + args.warmup, unit="call", desc="screen-pops", file=sys.stderr) as bar:
                await asyncio.gather(*(lane_worker(bench_, lane, next_call, bar) for lane in range(args.lanes)))
            seconds = time.monotonic() - t0
            run.load = (run.load[0], os.getloadavg()[0])
            for feed in sockets:
                await feed.ws.close()
                feed.reader.cancel()
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, *(feed.reader for feed in sockets), return_exceptions=True)
    finally:
        if not args.keep:
            await recreate_database(base_dsn, args.database, drop_only=True)
            print(f"dropped database {args.database}", file=sys.stderr)
    if not run.e2e.ms:
        print("error: no call was measured", *run.errors[:10], sep="\n", file=sys.stderr)
        return 1
    text = report(args, command, versions, run, seconds)
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"written to {BENCHMARKS}", file=sys.stderr)
    return 0 if not run.errors else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.screenpop", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="measured calls (default 200)")
    parser.add_argument("--warmup", type=int, default=4, help="calls first, not measured (default 4)")
    parser.add_argument("--lanes", type=int, choices=(1, 2), default=2, help="calls at once, one per agent")
    parser.add_argument("--callers", type=int, default=20, help="distinct caller numbers cycled (default 20)")
    parser.add_argument("--baseline-per-call", type=int, default=5, help="baseline samples of each kind per call")
    parser.add_argument("--database", default="hilo_bench_screenpop", help="the bench's own database")
    parser.add_argument("--keep", action="store_true", help="keep the bench database afterwards")
    parser.add_argument("--no-write", action="store_true", help="print the results only, not into BENCHMARKS.md")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "bench.screenpop", *(sys.argv[1:] if argv is None else argv)])
    return asyncio.run(bench(args, command))


if __name__ == "__main__":
    sys.exit(main())
