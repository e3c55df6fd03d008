"""A long call: one real call held talking for many minutes, checked while it lasts and after it ends
(`python -m bench.long_call --minutes 20`; the stack must be up, with no Hilo server of namespace `hilo`).

1. Starts a `hilo serve` of its own (bench/hilo_serve.py: namespace `hilo`, the Stasis app the carrier
   trunk's calls go to; database `hilo_bench_long_call`, dropped afterwards; wrap-up 0) and turns recording
   on for the sales queue (the demo records nothing).
2. One SIPp caller on the carrier trunk (from 127.0.0.2, the `hilo loadtest` caller scenario) dials the demo
   line 100, keys 1 (sales) by SIP INFO, is answered by the demo agent alice's SIPp phone, and hangs up
   `--minutes` later. Both phones' audio is sent from here: the caller's RTP (silence through the menu, a
   440 Hz tone once an agent answers) to Asterisk's port from the 200 OK's SDP, the agent's (300 Hz; the
   SIPp agents send none) to the agent channel's RTP port, as tests/stack/audio.py's `talk_into` does.
3. Every `--check-every` seconds: the caller's and the agent's channels and the bridge holding both are
   still in Asterisk (ARI), the interaction is open (PostgreSQL), and audio flows both ways: Asterisk's RTP
   counts of both channels (`GET /channels/{id}/rtp_statistics`) and the packets each phone received grew
   by at least half of what 20 ms packets would give. Progress is printed every minute.
4. After the hang-up: the interaction ended `completed`, its recording is stored and as long as the talk
   (agent answer to hang-up, within --tolerance seconds), alice is available again, and no channel or bridge
   of the call is left.
5. Writes the result (JSON) under .run/bench/long_call/<time>/ and the section of BENCHMARKS.md.

It places a real call into the shared Asterisk: run it alone, holding the stack tests' lock
(`flock /tmp/hilo-stack-tests.lock python -m bench.long_call --minutes 20`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import random
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg

from bench import benchmarks_md
from bench.hilo_serve import hilo_server
from bench.screenpop import machine
from hilo.settings import REPO_ROOT, Settings, load_settings
from server.loadtest.checks import available_agents, ghosts
from server.loadtest.hilo_events import EventFollower, HiloEvents
from server.loadtest.media import RTP_HEADER, linear_to_ulaw, peak, rtp_packet, threshold_from_dbfs
from server.loadtest.procs import children_map, pids_listening, read_process, with_descendants
from server.loadtest.profile import VoiceLoad
from server.loadtest.rest import Ari, HiloApi, RestError
from server.loadtest.runner import cancel_on_sigterm
from server.loadtest.sipp import LogTail, SippRun

SECTION = "## Long call (bench/long_call.py)"
# Written by hand under the section (what a run found): kept when the section is written again.
KEPT = ("### What the 20-minute run found",)
OUT = REPO_ROOT / ".run" / "bench" / "long_call"
NUMBER = "100"  # the demo line
KEY = "1"  # sales: alice's queue, which the capacity benchmark's callers (key 2, support) leave alone
QUEUE, AGENT = "sales", "alice"
CALLER = "+441632960001"  # Ofcom's drama range for 01632: never a subscriber's, outside `hilo loadtest`'s
TRUNK_IP, TRUNK = "127.0.0.2", "carrier-sim"  # its calls go to the Stasis app `hilo`
CALLER_TONE, AGENT_TONE = 440, 300
PACKETS_PER_S = 50  # 20 ms packets
FLOWING = 0.5  # a check passes when each count grew by at least this share of PACKETS_PER_S x seconds
AUDIBLE = threshold_from_dbfs(-30)
STALL_S = 1.0  # a /healthz answer slower than this is a stall of the server
_TROUBLE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (WARNING|ERROR|CRITICAL) ")


# The phones' audio -------------------------------------------------------------------------------


class Phone(asyncio.DatagramProtocol):
    """One side's phone: sends 20 ms PCMU packets (silence, or a tone once `talk()`) to `remote`, paced, and
    counts what it receives (all packets, and those with a sample above -30 dBFS)."""

    def __init__(self, name: str, freq: int) -> None:
        self.name = name
        self.period = bytes(linear_to_ulaw(round(4000 * math.sin(2 * math.pi * freq * i / 8000))) for i in range(8000))
        self.silence = bytes([0xFF]) * 160
        self.remote: tuple[str, int] | None = None
        self.talking = False
        self.sent = self.received = self.audible = 0
        self.transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self, host: str, port: int = 0) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self.transport = transport
        return transport.get_extra_info("sockname")[:2]  # type: ignore[no-any-return]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(data) <= RTP_HEADER or data[0] >> 6 != 2:
            return
        self.received += 1
        if peak(data[RTP_HEADER:]) >= AUDIBLE:
            self.audible += 1

    def send_to(self, remote: tuple[str, int]) -> None:
        self.remote = remote
        if self._task is None:
            self._task = asyncio.create_task(self._send(), name=f"long-call-rtp-{self.name}")

    def talk(self) -> None:
        self.talking = True

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        seq, ssrc, start, n = random.getrandbits(16), random.getrandbits(32), loop.time(), 0
        while True:
            offset = (n * 160) % 8000
            payload = self.period[offset : offset + 160] if self.talking else self.silence
            if self.transport is not None and self.remote is not None:
                self.transport.sendto(rtp_packet(0, seq + n, (n * 160) & 0xFFFFFFFF, ssrc, payload), self.remote)
                self.sent += 1
            n += 1
            await asyncio.sleep(max(start + n * 0.02 - loop.time(), 0))  # paced like a phone

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.transport is not None:
            self.transport.close()

    def counts(self) -> dict[str, int]:
        return {"sent": self.sent, "received": self.received, "audible": self.audible}


# Checks ------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One look at the call, `t` seconds after the agent answered."""

    t: float
    problems: list[str]
    rtp: dict[str, dict[str, int]]  # caller / agent: Asterisk's txcount, rxcount of the channel
    phones: dict[str, dict[str, int]]  # caller / agent phone: sent, received, audible
    hilo_rss_mb: float | None
    asterisk_rss_mb: float | None


def flow_problems(before: Sample, now: Sample, share: float = FLOWING) -> list[str]:
    """Audio that did not flow between two samples: every count that grew by less than `share` of 20 ms
    packets over the time between them (Asterisk's counts of both channels, and what each phone heard)."""
    seconds = now.t - before.t
    least = share * PACKETS_PER_S * seconds
    problems = []
    for side in ("caller", "agent"):
        for count in ("txcount", "rxcount"):
            grew = now.rtp.get(side, {}).get(count, 0) - before.rtp.get(side, {}).get(count, 0)
            if grew < least:
                problems.append(f"{side} channel {count} grew by {grew} in {seconds:.0f} s (at least {least:.0f})")
        for count in ("received", "audible"):
            grew = now.phones[side][count] - before.phones[side][count]
            if grew < least:
                problems.append(f"{side} phone {count} grew by {grew} in {seconds:.0f} s (at least {least:.0f})")
    return problems


def recording_problem(recorded_s: float | None, talk_s: float, tolerance_s: float) -> str | None:
    if recorded_s is None:
        return "no stored recording"
    if abs(recorded_s - talk_s) > tolerance_s:
        return f"recording {recorded_s:.1f} s against {talk_s:.1f} s of talk (tolerance {tolerance_s:g} s)"
    return None


def rss_mb(pids: set[int]) -> float | None:
    every = with_descendants(pids, children_map())
    sizes = [p[2] for p in (read_process(pid) for pid in every) if p is not None]
    return round(sum(sizes) / 2**20, 1) if sizes else None


@dataclass
class Where:
    """What the call is in Asterisk and Hilo, once the agent answered."""

    interaction: str
    caller_channel: str
    agent_channel: str
    bridge: str
    answered_at: float  # epoch, Hilo's agent.answered


@dataclass
class Result:
    command: str
    minutes: float
    beside: str = ""  # the load it ran alongside (the capacity soak), if any
    started_at: str = ""
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    talk_s: float | None = None
    outcome: str | None = None
    hangup_by: str | None = None
    recording_s: float | None = None
    recording_state: str | None = None
    agent_available_after: bool | None = None
    left_behind: list[str] = field(default_factory=list)
    server_log: list[str] = field(default_factory=list)  # the Hilo server's warnings and errors meanwhile (own)
    # the Hilo server's /healthz, asked every second from the call's start to the end of the checks after it:
    # the slowest answer, and every one slower than STALL_S [(UTC time it was asked, seconds)]
    health_slowest_s: float | None = None
    health_stalls: list[tuple[str, float]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    memory_mb: dict[str, list[float | None]] = field(default_factory=dict)  # hilo / asterisk: [start, end]
    machine: str = ""
    asterisk: str | None = None
    seconds: float = 0.0


class LongCall:
    def __init__(self, settings: Settings, hilo_url: str, dsn: str, hilo_pids: set[int], args: argparse.Namespace):
        self.settings = settings
        self.args = args
        self.dsn = dsn
        self.hilo_pids = hilo_pids
        self.ari = Ari(settings.ari_url, settings.ari_user, settings.ari_password.get_secret_value())
        self.api = HiloApi(hilo_url, settings.api_token.get_secret_value())
        self.events = HiloEvents()
        self.caller = Phone("caller", CALLER_TONE)
        self.agent = Phone("agent", AGENT_TONE)
        self.asterisk_pids = pids_listening(settings.sip_port, udp=True)
        self.result = Result(args.command, args.minutes, machine=machine())
        self.talking = asyncio.Event()  # set once both phones talk: `channels` are known then
        self.channels: frozenset[str] = frozenset()

    def say(self, text: str) -> None:
        print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)

    async def run(self, folder: Path) -> Result:
        started = time.time()
        self.result.started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self.ari.close)
            stack.push_async_callback(self.api.close)
            self.result.asterisk = ((await self.ari.info()).get("system") or {}).get("version")
            follower = EventFollower(self.settings.redis_url.get_secret_value(), self.settings.namespace, self.events)
            await follower.start()
            stack.push_async_callback(follower.close)
            restore = await self.record_queue()
            stack.push_async_callback(restore)
            rtp = await self.caller.open(TRUNK_IP)
            stack.push_async_callback(self.caller.close)
            stack.push_async_callback(self.agent.close)
            voice = VoiceLoad(
                number=NUMBER,
                rate=1.0,
                duration_s=1.0,
                key=KEY,
                key_after_s=2.5,
                hold_s=self.args.minutes * 60 + self.args.answer_margin,
                sip_target=f"{self.settings.sip_host}:{self.settings.sip_port}",
                trunk_ip=TRUNK_IP,
                callers=1,
            )
            voice.check()
            sipp = SippRun(voice, folder, rtp, [CALLER], calls=1, name="long-call")
            await sipp.start()
            stack.push_async_callback(sipp.stop)
            tail = LogTail(sipp.log_file)
            stack.callback(tail.close)
            stack.push_async_callback(self.end_call)  # before SIPp stops: a call that broke is not left up
            self.result.memory_mb = {"hilo": [rss_mb(self.hilo_pids)], "asterisk": [rss_mb(self.asterisk_pids)]}
            watch = asyncio.create_task(self.watch_health())
            stack.push_async_callback(_cancelled, watch)
            self.say(f"calling {NUMBER} from {CALLER} (SIPp on {TRUNK_IP}), key {KEY}: {QUEUE}, agent {AGENT}")
            try:
                where = await self.connect(tail)
                self.channels = frozenset({where.caller_channel, where.agent_channel})
                self.talking.set()
                await self.hold(where, tail)
                await self.after(where, tail)
            except LongCallError as exc:
                self.result.problems.append(str(exc))
                self.say(f"FAILED: {exc}")
            finally:
                self.talking.set()  # whoever waits for it learns the call broke from `result`
            self.result.memory_mb["hilo"].append(rss_mb(self.hilo_pids))
            self.result.memory_mb["asterisk"].append(rss_mb(self.asterisk_pids))
        self.result.seconds = round(time.time() - started, 1)
        self.result.ok = not self.result.problems
        return self.result

    async def end_call(self) -> None:
        """Hang up what is left of the call (nothing, when it ended as planned): its legs, and the caller's
        channel on the trunk when it broke before they were known."""
        with contextlib.suppress(RestError):
            left = set(self.channels)
            for channel in await self.ari.endpoint_channels("PJSIP", TRUNK):
                if await self._is_ours(channel):
                    left.add(channel)
            for channel in left:
                await self.ari.hangup(channel)

    async def watch_health(self) -> None:
        """How fast the server answers while the call lasts and after it (a stalled event loop shows here)."""
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                asked, began = datetime.now(UTC), time.monotonic()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.api.base}/healthz") as resp:
                        await resp.read()
                took = round(time.monotonic() - began, 2)
                self.result.health_slowest_s = max(self.result.health_slowest_s or 0.0, took)
                if took > STALL_S:
                    self.result.health_stalls.append((f"{asked:%H:%M:%S}", took))
                    self.say(f"the Hilo server took {took:g} s to answer /healthz (asked at {asked:%H:%M:%S})")
                await asyncio.sleep(max(0.0, 1.0 - took))

    async def record_queue(self) -> Any:
        """Recording on for the sales queue (over the admin API); returns what puts the queue back."""
        path = f"/api/routing/queues/{QUEUE}"
        before = dict((await self.api.call("GET", path))["queue"])
        await self.api.call("PUT", path, body={**before, "recording": {"record": True}})

        async def restore() -> None:
            try:
                await self.api.call("PUT", path, body=before)
            except RestError as exc:
                self.result.problems.append(f"putting the {QUEUE} queue back: {exc}")
                self.say(f"FAILED: putting the {QUEUE} queue back: {exc}")

        return restore

    async def connect(self, tail: LogTail) -> Where:
        """From the INVITE to the agent talking: the caller's audio starts at the answer, the agent's once
        their leg is up; the caller talks once the agent answered."""
        deadline = time.monotonic() + 90
        answered = None
        while time.monotonic() < deadline:
            for event in tail.read():
                if event.step == "A" and len(event.extra) >= 2:
                    self.caller.send_to((event.extra[0], int(event.extra[1])))
                    self.say(f"answered by Hilo; Asterisk's RTP for the caller at {event.extra[0]}:{event.extra[1]}")
                elif event.step in ("R", "X", "E"):
                    raise LongCallError(f"the call ended before an agent answered (SIPp step {event.step})")
            mine = [i for i in self.events.interactions.values() if i.dialed == NUMBER and i.channel_ref]
            for item in mine:
                if item.answered is not None and await self._is_ours(item.channel_ref or ""):
                    answered = item
            if answered is not None:
                break
            await asyncio.sleep(0.2)
        if answered is None or answered.channel_ref is None or answered.answered is None:
            raise LongCallError("no agent answered within 90 s")
        if answered.agent != AGENT:
            raise LongCallError(f"answered by {answered.agent}, not {AGENT}")
        agent_channel = await self._agent_channel(answered.id)
        bridge = await self._bridge_of(answered.channel_ref, agent_channel)
        found = await self.ari.call("GET", f"/channels/{quote(agent_channel)}/variable", variable="CHANNEL(rtp,src)")
        host, _, port = str(found["value"]).rpartition(":")
        await self.agent.open("127.0.0.1")
        self.agent.send_to((host, int(port)))
        self.agent.talk()
        self.caller.talk()
        self.say(f"interaction {answered.id}: {AGENT} answered; bridge {bridge}; both phones talking")
        return Where(answered.id, answered.channel_ref, agent_channel, bridge, answered.answered)

    async def _is_ours(self, channel: str) -> bool:
        return await self.ari.variable(channel, "CALLERID(num)") == CALLER

    async def _agent_channel(self, interaction: str, within: float = 10) -> str:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for c in await self.ari.channels():
                if c["id"].startswith(f"{self.settings.namespace}-agent-{interaction}-") and c["state"] == "Up":
                    return str(c["id"])
            await asyncio.sleep(0.2)
        raise LongCallError(f"no agent channel up for {interaction} within {within:g} s")

    async def _bridge_of(self, *channels: str, within: float = 10) -> str:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for b in await self.ari.call("GET", "/bridges") or []:
                if set(channels) <= set(b.get("channels", [])):
                    return str(b["id"])
            await asyncio.sleep(0.2)
        raise LongCallError(f"no bridge holds {', '.join(channels)} within {within:g} s")

    async def look(self, where: Where) -> Sample:
        problems = []
        rtp: dict[str, dict[str, int]] = {}
        for side, channel in (("caller", where.caller_channel), ("agent", where.agent_channel)):
            try:
                stats = await self.ari.call("GET", f"/channels/{quote(channel)}/rtp_statistics") or {}
                rtp[side] = {k: int(stats.get(k, 0)) for k in ("txcount", "rxcount")}
            except RestError as exc:
                problems.append(f"{side} channel {channel}: {exc}")
        try:
            bridge = await self.ari.call("GET", f"/bridges/{quote(where.bridge)}") or {}
            held = set(bridge.get("channels", []))
            if not {where.caller_channel, where.agent_channel} <= held:
                problems.append(f"bridge {where.bridge} holds {sorted(held)}, not both legs")
        except RestError as exc:
            problems.append(f"bridge {where.bridge}: {exc}")
        row = await self._interaction(where.interaction)
        if row is None or row["ended_at"] is not None:
            problems.append(f"interaction {where.interaction} is not open: {dict(row) if row else 'no row'}")
        try:  # the agent stays taken while talking: never offered another call mid-way
            state = {a["id"]: a.get("state") for a in (await self.api.wallboard()).get("agents", [])}.get(AGENT)
            if state == "available":
                problems.append(f"{AGENT} shows available while talking")
        except RestError as exc:
            problems.append(f"wallboard: {exc}")
        return Sample(
            round(time.time() - where.answered_at, 1),
            problems,
            rtp,
            {"caller": self.caller.counts(), "agent": self.agent.counts()},
            rss_mb(self.hilo_pids),
            rss_mb(self.asterisk_pids),
        )

    async def _interaction(self, interaction: str) -> asyncpg.Record | None:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetchrow(
                "SELECT state, outcome, hangup_by, answered_at, ended_at FROM interactions WHERE id = $1",
                interaction,
            )
        finally:
            await conn.close()

    async def hold(self, where: Where, tail: LogTail) -> None:
        """The call as it lasts: a look every --check-every seconds until SIPp hangs up (or the call breaks)."""
        first = await self.look(where)
        self.result.samples.append(asdict(first))
        last, printed = first, 0.0
        while True:
            steps = [e.step for e in tail.read()]
            if "E" in steps:  # the caller hung up as planned
                return
            if "R" in steps:
                raise LongCallError(f"the far end hung up on the caller {time.time() - where.answered_at:.0f} s in")
            await asyncio.sleep(min(self.args.check_every, 1.0))
            if time.time() - where.answered_at - last.t < self.args.check_every:
                continue
            now = await self.look(where)
            problems = now.problems + flow_problems(last, now)
            now.problems = problems
            self.result.samples.append(asdict(now))
            if now.t - printed >= 60 or problems:
                printed = now.t
                self.say(self.progress(first, now))
            if problems:
                raise LongCallError(f"{now.t:.0f} s into the talk: " + "; ".join(problems))
            last = now

    def progress(self, first: Sample, now: Sample) -> str:
        def grown(side: str, count: str) -> int:
            return now.rtp.get(side, {}).get(count, 0) - first.rtp.get(side, {}).get(count, 0)

        return (
            f"minute {now.t / 60:.1f} of {self.args.minutes:g}: {'up' if not now.problems else 'BROKEN'};"
            f" RTP since the answer: caller tx {grown('caller', 'txcount')} rx {grown('caller', 'rxcount')},"
            f" agent tx {grown('agent', 'txcount')} rx {grown('agent', 'rxcount')};"
            f" phones heard caller {now.phones['caller']['audible']} agent {now.phones['agent']['audible']}"
            f" audible packets; RSS Hilo {now.hilo_rss_mb} MB, Asterisk {now.asterisk_rss_mb} MB"
        )

    async def after(self, where: Where, tail: LogTail) -> None:
        """After the hang-up: outcome, recording, the agent available, nothing left."""
        ended = await self._wait(lambda: self._ended(where.interaction), 15)
        if ended is None:
            raise LongCallError(f"interaction {where.interaction} not ended within 15 s of the hang-up")
        self.result.outcome, self.result.hangup_by = ended["outcome"], ended["hangup_by"]
        self.result.talk_s = round(ended["ended_at"].timestamp() - where.answered_at, 1)
        if ended["outcome"] != "completed":
            self.result.problems.append(f"outcome {ended['outcome']!r} (hung up by {ended['hangup_by']})")
        rec = await self._wait(lambda: self._recording(where.interaction), self.args.recording_wait)
        self.result.recording_state = rec["state"] if rec else None
        self.result.recording_s = rec["duration_s"] if rec else None
        if (problem := recording_problem(self.result.recording_s, self.result.talk_s, self.args.tolerance)) is not None:
            self.result.problems.append(problem)
        available = await self._wait(self._agent_available, 10)
        self.result.agent_available_after = bool(available)
        if not available:
            self.result.problems.append(f"{AGENT} not available again within 10 s")
        self.result.left_behind = await self._left(where)
        if self.result.left_behind:
            self.result.problems.append(f"left behind: {', '.join(self.result.left_behind)}")
        self.say(
            f"ended {self.result.outcome} after {self.result.talk_s} s of talk; recording"
            f" {self.result.recording_state} {self.result.recording_s} s; {AGENT} available:"
            f" {self.result.agent_available_after}; left behind: {self.result.left_behind or 'nothing'}"
        )

    async def _ended(self, interaction: str) -> asyncpg.Record | None:
        row = await self._interaction(interaction)
        return row if row is not None and row["ended_at"] is not None else None

    async def _recording(self, interaction: str) -> asyncpg.Record | None:
        conn = await asyncpg.connect(self.dsn)
        try:
            row = await conn.fetchrow(
                "SELECT state, duration_s, storage_key FROM recordings WHERE interaction_id = $1 AND kind = 'call'"
                " ORDER BY started_at LIMIT 1",
                interaction,
            )
        finally:
            await conn.close()
        return row if row is not None and row["state"] in ("stored", "failed") else None

    async def _agent_available(self) -> bool | None:
        return True if AGENT in available_agents(await self.api.wallboard()) else None

    async def _left(self, where: Where) -> list[str]:
        left = []
        names = {c["id"] for c in await self.ari.channels()}
        left += [f"channel {c}" for c in (where.caller_channel, where.agent_channel) if c in names]
        bridges = {b["id"] for b in await self.ari.call("GET", "/bridges") or []}
        left += [f"bridge {where.bridge}"] if where.bridge in bridges else []
        if self.args.own_server:  # the whole trunk and every agent leg: nothing else calls meanwhile
            left += [f"channel {c}" for c in await ghosts(self.ari, TRUNK, self.settings.namespace)]
        return sorted(set(left))

    async def _wait(self, probe: Any, within: float) -> Any:
        """`probe()` until it finds something (not None) or `within` has passed; a server that does not answer
        counts as "not yet" (its stalls are in `health_stalls`)."""
        deadline = time.monotonic() + within
        while True:
            found = None
            with contextlib.suppress(RestError):
                found = await probe()
            if found is not None or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(0.25)


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class LongCallError(RuntimeError):
    """The long call broke: what, and when."""


# Running -----------------------------------------------------------------------------------------


async def long_call(args: argparse.Namespace) -> Result:
    """The long call against a Hilo server of its own (the standalone run)."""
    cancel_on_sigterm()  # SIGTERM, like Ctrl-C, stops it with everything cleaned up
    settings = load_settings()
    folder = OUT / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    env = {"HILO_WRAPUP_S": "0"}
    async with hilo_server(
        settings, args.database, namespace="hilo", log_name="bench-long-call-hilo", env=env
    ) as served:
        hilo_settings = settings.model_copy(update={"namespace": "hilo", "http_port": served.port})
        call = LongCall(hilo_settings, served.base, served.dsn, {served.pid}, args)
        result = await call.run(folder)
        log = served.log_text()
        (folder / "hilo-serve.log").write_text(log)
        result.server_log = [line for line in log.splitlines() if _TROUBLE.search(line)]
    (folder / "long_call.json").write_text(json.dumps(asdict(result), indent=1, default=str) + "\n")
    print(f"result: {folder / 'long_call.json'}")
    return result


# BENCHMARKS.md ------------------------------------------------------------------------------------


def section(result: Result) -> str:
    samples = result.samples
    first, last = (samples[0], samples[-1]) if samples else ({}, {})

    def grown(side: str, count: str) -> str:
        if not samples:
            return "-"
        return str(last["rtp"].get(side, {}).get(count, 0) - first["rtp"].get(side, {}).get(count, 0))

    def heard(side: str) -> str:
        return str(last["phones"][side]["audible"]) if samples else "-"

    def mem(name: str) -> str:
        values = result.memory_mb.get(name) or []
        if len(values) < 2 or values[0] is None or values[1] is None:
            return "not measured"
        return f"{values[0]} -> {values[1]} MB ({100 * (values[1] - values[0]) / values[0]:+.1f}%)"

    problems = "\n".join(f"- {p}" for p in result.problems) or "- none"
    span = f"{samples[-1]['t'] - samples[0]['t']:.0f} s" if samples else "-"
    beside = f", alongside {result.beside}" if result.beside else ""
    return f"""{SECTION}

Produced by `{result.command}` on {result.started_at} ({result.seconds / 60:.0f} minutes in all){beside}.
Machine: {result.machine}; Asterisk {result.asterisk}.

What runs: one SIPp caller on the carrier trunk (127.0.0.2) dials the demo line {NUMBER} of a `hilo serve` of
the bench's own (namespace `hilo`, its own database, recording turned on for the {QUEUE} queue), keys {KEY}
by SIP INFO and is answered by {AGENT}'s SIPp phone; the caller's phone sends a {CALLER_TONE} Hz tone and the
agent's a {AGENT_TONE} Hz one (20 ms PCMU packets, sent by the bench) until the caller hangs up
{result.minutes:g} minutes later. Every {_every(result)} s the bench checks the two channels and their bridge
in Asterisk (ARI), the interaction open in PostgreSQL, and that Asterisk's RTP counts of both channels and the
audible packets each phone received grew by at least {FLOWING:.0%} of 50 packets/s.

**Result: {"passed" if result.ok else "failed"}.** Talk (agent answer to hang-up): {result.talk_s} s;
outcome `{result.outcome}` (hung up by {result.hangup_by}); {len(samples)} checks over {span}.

| RTP packets during the talk | tx (Asterisk sent) | rx (Asterisk received) | audible packets the phone heard |
| --- | ---: | ---: | ---: |
| caller's channel | {grown("caller", "txcount")} | {grown("caller", "rxcount")} | {heard("caller")} |
| agent's channel | {grown("agent", "txcount")} | {grown("agent", "rxcount")} | {heard("agent")} |

Recording: {result.recording_state}, {result.recording_s} s long against {result.talk_s} s of talk. {AGENT}
available again afterwards: {result.agent_available_after}; left behind: {", ".join(result.left_behind) or "nothing"}.
Resident memory from the call's start to its end: Hilo server {mem("hilo")}; Asterisk {mem("asterisk")}.
The Hilo server's `/healthz`, asked every second from the call's start to the end of the checks after it:
slowest answer {result.health_slowest_s} s; answers slower than {STALL_S:g} s: {_stalls(result)}.

Problems:
{problems}
{_server_log(result)}"""


def _stalls(result: Result) -> str:
    if not result.health_stalls:
        return "none"
    return ", ".join(f"{took:g} s (asked at {asked} UTC)" for asked, took in result.health_stalls[:5])


def _server_log(result: Result) -> str:
    if not result.server_log:
        return "" if result.beside else "\nThe Hilo server logged no warning or error during the run.\n"
    shown = "\n".join(f"    {line[:200]}" for line in result.server_log[:5])
    count = len(result.server_log)
    return f"\nThe Hilo server's warnings and errors during the run ({count}; the first five):\n\n{shown}\n"


def _every(result: Result) -> str:
    ts = [s["t"] for s in result.samples]
    gaps = [b - a for a, b in itertools.pairwise(ts)]
    return f"{min(gaps):.0f}" if gaps else "-"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.long_call", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="talk time (default 20)")
    parser.add_argument("--check-every", type=float, default=30.0, help="seconds between checks (default 30)")
    parser.add_argument("--tolerance", type=float, default=5.0, help="recording length against the talk, in s")
    parser.add_argument("--recording-wait", type=float, default=60.0, help="seconds to wait for it to be stored")
    parser.add_argument("--answer-margin", type=float, default=5.0, help="caller's hold beyond --minutes: the"
                        " seconds from its key to the agent's answer (default 5)")  # fmt: skip
    parser.add_argument("--database", default="hilo_bench_long_call", help="the bench server's database")
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    return parser


def args_for(minutes: float, command: str, own_server: bool) -> argparse.Namespace:
    """The options of a long call placed by another benchmark (bench/capacity.py's soak): the defaults."""
    args = parser().parse_args(["--minutes", f"{minutes:g}"])
    args.command, args.own_server = command, own_server
    return args


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not 0 < args.minutes <= 59:
        parser().error(f"--minutes: {args.minutes:g} must be above 0 and at most 59")
    args.own_server = True
    args.command = ("python -m bench.long_call " + shlex.join(argv if argv is not None else sys.argv[1:])).strip()
    try:
        result = asyncio.run(long_call(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("stopped before the end (everything it started is stopped): nothing written", file=sys.stderr)
        return 130
    print("passed" if result.ok else "FAILED: " + "; ".join(result.problems))
    if not args.no_write:
        benchmarks_md.write_section(SECTION, section(result), keep=KEPT)
        print("BENCHMARKS.md written")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
