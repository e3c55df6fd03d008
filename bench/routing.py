"""Routing decision benchmark: `python -m bench.routing` (the stack must be up: `make stack`).

1. On the stack's Redis, under a namespace of its own (`hilo-bench-routing`, emptied before and after; no
   other namespace is touched), configures 8 queues (each needing its own skill; some with escalation
   steps) and 1,000 agents (2 queues each, skill levels 1-10, three languages at 0-5, capacity 1 call and
   0-3 chats), makes every agent busy, and queues interactions until 10,000 wait (a fifth of them chats,
   half with a language requirement, priorities 0-5).
2. Then, for --seconds, in two phases (one worker, then --workers workers, each on its own connection,
   closed loop), repeats the life of a conversation at an agent: `release` (the agent is free: the next
   decision gives it the best waiting interaction it qualifies for), `answered`, and a new arrival
   (`enqueue`: placed at once if some agent has room, else waits), so that 10,000 keep waiting; one offer
   in 20 is refused (`not_answered`: the agent goes away, the interaction back in its place) and the agent
   comes back (`presence`: another decision). Each of these is one script call: one event with all the
   decisions it causes, exactly what a Hilo node does.
3. Beside each cycle, the same worker times a raw round trip on the same connection: PING, and a trivial
   EVAL (`return 1`), so the decisions can be read against Redis' own floor; and Redis' own count of the
   time spent in the decision scripts (INFO commandstats).
4. Prints, and writes into BENCHMARKS.md, decisions per second and latencies (p50/p90/p99/max) per event.

This measures the decision (Redis) layer, not the PostgreSQL record the engine writes after each decision.

    .run/venv/bin/python -m bench.routing [--agents 1000] [--waiting 10000] [--seconds 20] [--workers 4]"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import shlex
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from tqdm import tqdm

from bench import benchmarks_md
from dialplans.models import Agent, Queue
from hilo.settings import REPO_ROOT, load_settings
from routing.model import Outcome
from routing.state import RoutingState

NAMESPACE = "hilo-bench-routing"
BENCHMARKS = REPO_ROOT / "BENCHMARKS.md"
SECTION = "## Routing decisions (bench/routing.py)"
QUEUES = 8
LANGUAGES = ("english", "spanish", "portuguese")
KINDS = ("enqueue", "release", "answered", "not_answered", "presence")


@dataclass
class Samples:
    ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    offers: int = 0
    cycles: int = 0
    server_us: float = float("nan")  # mean time Redis spent in one decision script call

    def add(self, kind: str, seconds: float) -> None:
        self.ms[kind].append(seconds * 1000)

    def decisions(self) -> int:
        return sum(len(self.ms[k]) for k in KINDS)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# The routing world ---------------------------------------------------------------------------------


def queues() -> list[Queue]:
    made = []
    for n in range(QUEUES):
        escalation = [{"after_s": 30, "skills": {f"q{n}": 1}}, {"after_s": 90, "overflow": f"q{(n + 1) % QUEUES}"}]
        made.append(
            Queue.model_validate(
                {
                    "id": f"q{n}",
                    "name": f"Queue {n}",
                    "skills": {f"q{n}": 2 if n % 2 else 1},
                    "priority": n % 3,
                    "aging_s": 60,
                    "escalation": escalation if n % 2 == 0 else [],
                    "agent_order": "best_skill" if n % 4 else "longest_idle",
                }
            )
        )
    return made


def agents(count: int, rng: random.Random) -> list[Agent]:
    made = []
    for n in range(count):
        served = rng.sample([f"q{k}" for k in range(QUEUES)], 2)
        skills = {q: rng.randint(2, 10) for q in served}
        skills.update({lang: level for lang in LANGUAGES if (level := rng.randint(0, 5)) > 0})
        made.append(
            Agent.model_validate(
                {
                    "id": f"a{n:04d}",
                    "name": f"Agent {n}",
                    "sip_endpoint": f"agent-bench-{n}",
                    "queues": served,
                    "skills": skills,
                    "capacity": {"voice": 1, "webchat": rng.choice([0, 0, 1, 3])},
                }
            )
        )
    return made


class World:
    """What the benchmark knows of the live state: assignments it may end, agents it sent away."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.assigned: list[str] = []
        self.away: list[str] = []

    def arrival(self) -> tuple[str, str, int, dict[str, int], str]:
        rng = self.rng
        skills = {rng.choice(LANGUAGES): rng.randint(1, 3)} if rng.random() < 0.5 else {}
        channel = "webchat" if rng.random() < 0.2 else "voice"
        return str(uuid.uuid4()), f"q{rng.randrange(QUEUES)}", rng.randint(0, 5), skills, channel


async def settle(state: RoutingState, world: World, outcome: Outcome, samples: Samples | None) -> None:
    """Answer (or, one in 20 when measuring, refuse) every offer an event made, as agents would."""
    pending = list(outcome.assignments)
    while pending:
        offer = pending.pop()
        if samples is not None:
            samples.offers += 1
        if samples is not None and world.rng.random() < 0.05:
            t = time.perf_counter()
            refused = await state.not_answered(offer.interaction_id, offer.agent_id)
            samples.add("not_answered", time.perf_counter() - t)
            world.away.append(offer.agent_id)
            pending += refused.assignments
            continue
        t = time.perf_counter()
        answered = await state.answered(offer.interaction_id, offer.agent_id)
        if samples is not None:
            samples.add("answered", time.perf_counter() - t)
        if answered.status == "assigned":
            world.assigned.append(offer.interaction_id)
        pending += answered.assignments


async def populate(state: RoutingState, world: World, args: argparse.Namespace) -> tuple[int, int]:
    for config in queues():
        await state.put_queue(config, default_max_wait_s=3600)
    for agent in tqdm(agents(args.agents, world.rng), desc="agents", unit=" agents", file=sys.stderr):
        await state.put_agent(agent, presence_if_new="available")
    waiting = 0
    bar = tqdm(total=args.waiting, desc="interactions waiting", unit=" waiting", file=sys.stderr)
    while waiting < args.waiting:
        iid, queue, priority, skills, channel = world.arrival()
        outcome = await state.enqueue(iid, queue, priority=priority, skills=skills, channel=channel)
        if outcome.status == "waiting":
            waiting += 1
            bar.update()
        await settle(state, world, outcome, None)
    bar.close()
    return len(world.assigned), waiting


# Measuring -----------------------------------------------------------------------------------------


async def worker(state: RoutingState, world: World, samples: Samples, until: float, bar: tqdm[Any]) -> None:
    redis = state.redis
    while time.perf_counter() < until:
        if world.away and world.rng.random() < 0.5:
            agent_id = world.away.pop(world.rng.randrange(len(world.away)))
            t = time.perf_counter()
            back = await state.set_presence(agent_id, "available")
            samples.add("presence", time.perf_counter() - t)
            await settle(state, world, back, samples)
        if world.assigned:
            iid = world.assigned.pop(world.rng.randrange(len(world.assigned)))
            t = time.perf_counter()
            freed = await state.release(iid)
            samples.add("release", time.perf_counter() - t)
            await settle(state, world, freed, samples)
        iid, queue, priority, skills, channel = world.arrival()
        t = time.perf_counter()
        arrived = await state.enqueue(iid, queue, priority=priority, skills=skills, channel=channel)
        samples.add("enqueue", time.perf_counter() - t)
        await settle(state, world, arrived, samples)
        t = time.perf_counter()
        await redis.ping()
        samples.add("ping", time.perf_counter() - t)
        t = time.perf_counter()
        await redis.eval("return 1", 0)  # EVAL, so INFO counts it apart from the decisions (EVALSHA)
        samples.add("eval", time.perf_counter() - t)
        samples.cycles += 1
        bar.update()


async def evalsha_stats(redis: aioredis.Redis) -> tuple[int, int]:
    """(calls, microseconds) of every EVALSHA the server ran so far: the scripts' own time, without the trip."""
    stats = (await redis.info("commandstats")).get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


async def phase(url: str, clients: int, world: World, seconds: float, label: str) -> tuple[Samples, float, float]:
    connections = [aioredis.from_url(url) for _ in range(clients)]
    samples = Samples()
    try:
        before = await evalsha_stats(connections[0])
        states = [RoutingState(r, NAMESPACE) for r in connections]
        for r in connections:
            await r.ping()
        bar = tqdm(desc=label, unit=" cycles", file=sys.stderr)
        started = time.perf_counter()
        until = started + seconds
        await asyncio.gather(*(worker(s, world, samples, until, bar) for s in states))
        elapsed = time.perf_counter() - started
        bar.close()
        after = await evalsha_stats(connections[0])
        calls = after[0] - before[0]
        samples.server_us = (after[1] - before[1]) / calls if calls else float("nan")
    finally:
        for r in connections:
            await r.aclose()
    return samples, elapsed, os.getloadavg()[0]


async def check(state: RoutingState) -> tuple[int, int]:
    """After the run: no agent beyond its capacity. Returns (agents checked, interactions waiting)."""
    checked = 0
    for agent_id in await state.agent_ids():
        live = await state.agent(agent_id)
        for key, value in live.items():
            if key.startswith("load:"):
                cap = int(live.get("cap:" + key[5:], "0"))
                assert int(value) <= cap, f"{agent_id} over capacity: {key}={value} > {cap}"
        checked += 1
    waiting: set[str] = set()
    for n in range(QUEUES):
        waiting.update(i for i, _ in await state.waiting(f"q{n}"))
    return checked, len(waiting)


# Reporting -----------------------------------------------------------------------------------------


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


def table(samples: Samples) -> str:
    labels = {
        "enqueue": "enqueue (arrival: placed at once or waits)",
        "release": "release (agent free: takes the best waiting)",
        "answered": "answered (room for a chat: next decision)",
        "not_answered": "not_answered (agent away, back in place)",
        "presence": "presence available (agent back: decision)",
    }
    rows = []
    every: list[float] = []
    for kind in KINDS:
        ms = samples.ms[kind]
        every += ms
        rows.append((labels[kind], ms))
    rows.append(("**every decision**", every))
    rows.append(("PING (same connection)", samples.ms["ping"]))
    rows.append(("EVAL `return 1` (same connection)", samples.ms["eval"]))
    return "\n".join(
        f"| {label} | {len(ms)} | {pct(ms, 0.5):.3f} | {pct(ms, 0.9):.3f} | {pct(ms, 0.99):.3f}"
        f" | {max(ms, default=float('nan')):.3f} |"
        for label, ms in rows
    )


def report(
    args: argparse.Namespace,
    command: str,
    redis_version: str,
    setup: tuple[int, int, float],
    phases: list[tuple[int, Samples, float, float]],
    after: tuple[int, int],
) -> str:
    busy, waiting, setup_s = setup
    parts = []
    for clients, samples, elapsed, load in phases:
        every = [x for k in KINDS for x in samples.ms[k]]
        floor = pct(samples.ms["ping"], 0.5)
        parts.append(
            f"""**{clients} worker{"s" if clients > 1 else ""}** ({clients} connection{"s" if clients > 1 else ""},
closed loop, {elapsed:.1f} s): **{samples.decisions() / elapsed:,.0f} decisions/s**, {samples.offers / elapsed:,.0f}
offers/s; decision p99 **{pct(every, 0.99):.3f} ms** against PING p99 {pct(samples.ms["ping"], 0.99):.3f} ms
(p50: {pct(every, 0.5):.3f} ms, {pct(every, 0.5) / floor:.1f}x PING). Inside Redis a script call took
{samples.server_us:.0f} µs on average (`INFO commandstats`: every EVALSHA the server ran meanwhile). Load average after:
{load:.2f}.

| event | n | p50 ms | p90 ms | p99 ms | max ms |
| --- | ---: | ---: | ---: | ---: | ---: |
{table(samples)}
"""
        )
    return f"""{SECTION}

Produced by `{command}` on {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}.
Machine: {machine()}; Python {platform.python_version()}; Redis {redis_version} on the same machine (the stack's,
under a namespace of its own; other work on the machine may share it).

{args.agents:,} agents in {QUEUES} queues (2 queues each, skill levels 1-10, three languages, 1 call + 0-3 chats);
{busy:,} interactions with agents and {waiting:,} waiting when measuring began (set up in {setup_s:.0f} s), a fifth
of them chats, half needing a language, priorities 0-5, escalation steps on half the queues. Each event below is
one script call, with every decision it causes (an agent freed takes the best waiting interaction it qualifies
for over its queues, channels and skill requirements; an arrival is matched against the available agents).
After the run: {after[0]:,} agents checked, none beyond its capacity; {after[1]:,} interactions waiting.

{chr(10).join(parts)}
Reading it: a decision costs its round trip (the PING row) plus the script's own work inside Redis (the
µs above), which is what bounds a node's decisions: Redis runs one script at a time. The rest is the client:
one Python process driving all workers on a machine whose cores it shares with Redis, which is why more
workers add little here. What grows with the number waiting is only reading the head of each (queue,
channel, skill requirement) set an agent qualifies for (sorted sets, logarithmic); what grows with the
number of agents is only the agents available in the interaction's queues, and here almost none are: the
{args.waiting:,} waiting keep them busy.
"""


def write_section(text: str) -> None:
    benchmarks_md.write_section(SECTION, text, BENCHMARKS)


# Main ----------------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, command: str) -> int:
    url = load_settings().redis_url.get_secret_value()
    redis = aioredis.from_url(url)
    state = RoutingState(redis, NAMESPACE)
    world = World(random.Random(args.seed))
    try:
        info = await redis.info("server")
        await state.clear()
        await state.configure(offer_ttl_s=3600)
        t = time.perf_counter()
        busy, waiting = await populate(state, world, args)
        setup = (busy, waiting, time.perf_counter() - t)
        phases = []
        for clients in (1, args.workers):
            samples, elapsed, load = await phase(url, clients, world, args.seconds, f"{clients} worker(s)")
            phases.append((clients, samples, elapsed, load))
        after = await check(state)
        text = report(args, command, str(info.get("redis_version", "?")), setup, phases, after)
        print(text)
        if not args.no_write:
            write_section(text)
            print(f"written to {BENCHMARKS}", file=sys.stderr)
    finally:
        if not args.keep:
            await state.clear()
        await redis.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.routing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--waiting", type=int, default=10_000, help="interactions kept waiting")
    parser.add_argument("--seconds", type=float, default=20, help="of each phase")
    parser.add_argument("--workers", type=int, default=4, help="concurrent workers of the second phase")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="leave the namespace's keys in Redis")
    parser.add_argument("--no-write", action="store_true", help="print only; BENCHMARKS.md untouched")
    args = parser.parse_args(argv)
    command = "python -m bench.routing" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])).rstrip()
    return asyncio.run(bench(args, command))


if __name__ == "__main__":
    sys.exit(main())
