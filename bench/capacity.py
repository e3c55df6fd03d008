"""Capacity: Hilo against the same menu written as plain dialplan, in one run on the same Asterisk
(`python -m bench.capacity`; the stack must be up: `make stack`, with no Hilo server of namespace `hilo`).

1. Starts a `hilo serve` of its own (namespace `hilo`, the Stasis app the carrier trunk's calls go to;
   database `hilo_bench_capacity`, dropped afterwards; wrap-up 0) and turns on the comparison line
   `bench-plain` (bench/plain_menu.py: Answer, Playback(hello-world), Read(choice,vm-press,1,,1,6), key 2 ->
   MusicOnHold).
2. The callers (`hilo loadtest`'s engine, server/loadtest/): SIPp on the carrier trunk (from 127.0.0.2)
   dialling the demo line 100 (Hilo) or bench-plain, key 2 by SIP INFO 2.5 s after the answer, hanging up
   8 s later, at a steady rate for --step seconds; each phone sends its 20 ms of silence from the answer on.
3. Each one's knee: the highest steady rate with zero failed calls over a step (a call fails unless the
   caller hangs up as planned; for Hilo also a call answered but never queued, i.e. the key lost; a step
   whose callers could not keep the rate, under 95% of it, does not pass either). The search starts at
   --start-rate, doubles while it passes, then halves the gap until it is within --resolution.
4. Compares, at the highest rate both passed, INVITE -> 200 OK and answer -> first prompt audio (on the RTP:
   the first packet above -30 dBFS the caller receives) and the CPU per succeeded call of Asterisk, the Hilo
   server, PostgreSQL (all backends) and Redis, read from /proc.
5. Soaks Hilo for --soak seconds at --soak-share of its knee: memory of the Hilo server and Asterisk from the
   end of the soak's first quarter to its end, and ghosts (channels left, callers left waiting, agents not
   available again) after it.
   A long call (bench/long_call.py: the demo line keyed to sales, alice answering, both sides talking) is held
   through the soak for --long-call minutes (default 20, or the soak's length if longer; 0: none), checked
   as it lasts and after; the soak starts once it talks and ends before it (its channels are not the soak's).
6. After every run: within 5 s no caller waiting, every agent available, no channel left, and the next call
   reaches an agent (Hilo's runs).
7. Writes each run's report (JSON and HTML with plots) under .run/bench/capacity/<time>/, a summary there,
   and the section of BENCHMARKS.md.

    .run/venv/bin/python -m bench.capacity [--step 60] [--soak 600] [--start-rate 4] [--max-rate 64]
        [--resolution 0.1] [--long-call 20] [--no-write]

The full profile is the default (about 50 minutes: the long call outlasts the soak by 10); `--step 20
--soak 120` is the reduced one (about 33; 15 with `--long-call 0`).
It places real calls into the shared Asterisk: run it alone (the stack tests' lock, /tmp/hilo-stack-tests.lock)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asterisk.ami import AmiClient
from bench import benchmarks_md, long_call
from bench.hilo_serve import Served, hilo_server
from bench.plain_menu import NUMBER as PLAIN_NUMBER
from bench.plain_menu import plain_line
from bench.screenpop import machine
from hilo.settings import REPO_ROOT, Settings, load_settings
from server.loadtest.checks import ghosts
from server.loadtest.cli import target_from_settings
from server.loadtest.profile import Profile, VoiceLoad
from server.loadtest.report import ANSWER_TO_AUDIO, INVITE_TO_ANSWER
from server.loadtest.rest import Ari
from server.loadtest.runner import LoadRun, Target, cancel_on_sigterm

STEPS_HEAD = (
    "| system | calls/s | passed | placed | succeeded | achieved /s | INVITE->200 p99 ms | answer->prompt p99 ms"
    " | CPU ms/call | load generator % core | queued | why not |\n"
    "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
)
SECTION = "## Capacity: Hilo against plain dialplan (bench/capacity.py)"
# Written by hand under the section (findings of a profile): kept when the section is written again.
KEPT = ("### Profile of a loaded server",)
OUT = REPO_ROOT / ".run" / "bench" / "capacity"
STACK = ("asterisk", "hilo", "postgres", "redis")  # the processes whose CPU a call costs
HILO_NUMBER = "100"
STEADY = 0.95  # a step whose callers came slower than this share of the rate asked did not hold it
SATURATED_MS = 1000.0  # INVITE -> 200 OK p99 above this: the call setup was queueing (noted, not a failure)


# The knee -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    system: str
    rate: float
    passed: bool
    why: str  # why not, or "ok"
    report: dict[str, Any] = field(repr=False, default_factory=dict)


def next_rate(
    tried: list[tuple[float, bool]], *, start: float, max_rate: float, min_rate: float, resolution: float
) -> float | None:
    """The next rate to try, or None when the knee is found: double from `start` while it passes (up to
    `max_rate`), halve while it fails (down to `min_rate`), then bisect until the gap between the highest
    rate that passed and the lowest above it that failed is within `resolution` of the former (relative)."""
    if not tried:
        return start
    passed = [r for r, ok in tried if ok]
    low = max(passed) if passed else None
    failed_above = [r for r, ok in tried if not ok and (low is None or r > low)]
    high = min(failed_above) if failed_above else None
    if high is None:
        assert low is not None
        return None if low >= max_rate else min(max_rate, low * 2)
    if low is None:
        return None if high <= min_rate else max(min_rate, round(high / 2, 2))
    if high - low <= max(resolution * low, 0.25):
        return None
    return round((low + high) / 2, 2)


def knee(tried: list[tuple[float, bool]]) -> float:
    """The highest rate that passed (0: none did)."""
    return max((r for r, ok in tried if ok), default=0.0)


def judge(report: dict[str, Any], rate: float, hilo: bool) -> tuple[bool, str]:
    """Whether a step held `rate` with zero failed calls, and if not, why."""
    voice = report["voice"]
    counts = voice["counts"]
    reasons = []
    if counts["failed"]:
        reasons.append(f"{counts['failed']} failed ({', '.join(f'{k} {v}' for k, v in voice['failures'].items())})")
    if hilo and voice.get("hilo"):
        lost = counts["answered"] - voice["hilo"]["queued"]
        if lost > 0:
            reasons.append(f"{lost} answered but never queued")
    achieved = voice.get("rate_achieved") or 0.0
    if achieved < STEADY * rate:
        reasons.append(f"callers came at {achieved:g}/s, under {STEADY:.0%} of {rate:g}/s")
    return (not reasons, "; ".join(reasons) or "ok")


_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (ERROR|CRITICAL) ([\w.]+): (.*)$")
_FRAME = re.compile(r'^  File "([^"]+)", line \d+, in (\w+)')


def server_errors(log: str, root: Path = REPO_ROOT) -> list[tuple[int, str]]:
    """The Hilo server's ERROR records, grouped: logger, message (digits masked), the exception the traceback
    ends with and the innermost frame of Hilo's own code in it; most frequent first."""
    counts: dict[str, int] = {}
    lines = log.splitlines()
    for i, line in enumerate(lines):
        match = _RECORD.match(line)
        if not match:
            continue
        block = []
        for following in lines[i + 1 :]:
            if _RECORD.match(following) or re.match(r"^\d{4}-\d\d-\d\d \d\d:", following):
                break
            block.append(following)
        # a chained traceback: the first part is where it went wrong, the last line what was finally raised
        first = []
        for b in block:
            if b.startswith(("The above exception", "During handling")):
                break
            first.append(b)
        frames = [
            f"{Path(m.group(1)).relative_to(root)} {m.group(2)}"
            for b in first
            if (m := _FRAME.match(b)) and m.group(1).startswith(str(root)) and "/.run/" not in m.group(1)
        ]
        raised = [b.strip() for b in block if b.strip() and not b.startswith((" ", "Traceback", "The above", "During"))]
        key = f"{match.group(2)}: {re.sub(r'[0-9*]{3,}', '…', match.group(3))}"
        if raised:
            key += f" ({raised[-1].split(':')[0]}" + (f", from {frames[-1]}" if frames else "") + ")"
        counts[key] = counts.get(key, 0) + 1
    return sorted(((n, k) for k, n in counts.items()), reverse=True)


def cpu_per_call(report: dict[str, Any]) -> dict[str, float | None]:
    procs = report["processes"]
    out: dict[str, float | None] = {name: (procs.get(name) or {}).get("cpu_ms_per_call") for name in STACK}
    known = [v for v in out.values() if v is not None]
    out["total"] = round(sum(known), 1) if known else None
    return out


def memory_growth(report: dict[str, Any], name: str, from_share: float = 0.25) -> dict[str, Any] | None:
    """A process group's resident memory from `from_share` into the load to the load's end, and growth %."""
    group = report["processes"].get(name)
    if not group or not group["t"]:
        return None
    load_s = report["load_seconds"]
    samples = [(t, mb) for t, mb in zip(group["t"], group["rss_mb"], strict=True) if mb > 0]
    start = [mb for t, mb in samples if t >= from_share * load_s]
    end = [mb for t, mb in samples if t <= load_s + 0.5]
    if not start or not end:
        return None
    first, last = start[0], end[-1]
    return {"from_mb": first, "to_mb": last, "growth_pct": round(100 * (last - first) / first, 1)}


# Running -----------------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    settings: Settings
    folder: Path
    hilo_target: Target
    plain_target: Target
    ari: Ari
    steps: list[Step] = field(default_factory=list)
    after_runs: list[dict[str, Any]] = field(default_factory=list)
    long_call_minutes: float = 0.0  # of the long call held through the soak (0: none)

    def voice(self, system: str, rate: float, duration: float) -> VoiceLoad:
        return VoiceLoad(
            number=HILO_NUMBER if system == "hilo" else PLAIN_NUMBER,
            rate=rate,
            duration_s=duration,
            key="2",
            key_mode="info",
            key_after_s=2.5,
            hold_s=8.0,
            sip_target=f"{self.settings.sip_host}:{self.settings.sip_port}",
            trunk_ip="127.0.0.2",
            callers=1000,
        )

    async def run(
        self, system: str, rate: float, duration: float, name: str, ignore: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        voice = self.voice(system, rate, duration)
        profile = Profile(voice=voice, probe=system == "hilo", settle_s=5.0)
        profile.check()
        await self.quiet(ignore=ignore)
        target = replace(self.hilo_target if system == "hilo" else self.plain_target, ignore_channels=ignore)
        run = LoadRun(profile, target, self.folder / name, label=f"{system} {rate:g}/s", command=self.args.command)
        report = await run.execute()
        self.after_runs.append({"run": name, **report["after_run"]})
        return report

    async def quiet(self, within: float = 60.0, ignore: frozenset[str] = frozenset()) -> None:
        """No call of an earlier step left on the trunk before the next starts."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not await ghosts(self.ari, self.hilo_target.trunk, None, ignore):
                return
            await asyncio.sleep(0.5)

    async def soak_with_long_call(
        self, rate: float, minutes: float, served: Served, settings: Settings
    ) -> tuple[dict[str, Any], long_call.Result]:
        """The soak with one long call (bench/long_call.py) held through it: the call is placed first, the soak
        starts once it talks (its channels are not the soak's ghosts), and the call lasts `minutes`."""
        await self.quiet()
        args = long_call.args_for(minutes, self.args.command, own_server=False)
        call = long_call.LongCall(settings, served.base, served.dsn, {served.pid}, args)
        call.result.beside = f"the capacity soak ({rate:g} calls/s for {self.args.soak:g} s)"
        task = asyncio.create_task(call.run(self.folder / "long-call"))
        try:
            await call.talking.wait()
            soak = await self.run("hilo", rate, self.args.soak, f"soak-{rate:g}", ignore=call.channels)
            result = await task
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return soak, result

    async def find_knee(self, system: str) -> list[tuple[float, bool]]:
        tried: list[tuple[float, bool]] = []
        while (rate := next_rate(tried, **self.search)) is not None and len(tried) < self.args.max_steps:
            report = await self.run(system, rate, self.args.step, f"{system}-{rate:g}")
            passed, why = judge(report, rate, system == "hilo")
            self.steps.append(Step(system, rate, passed, why, report))
            tried.append((rate, passed))
            print(f"{system} at {rate:g} calls/s: {'passed' if passed else 'failed: ' + why}", flush=True)
        return tried

    @property
    def search(self) -> dict[str, float]:
        return {
            "start": self.args.start_rate,
            "max_rate": self.args.max_rate,
            "min_rate": self.args.min_rate,
            "resolution": self.args.resolution,
        }

    def step_at(self, system: str, rate: float) -> Step | None:
        return next((s for s in self.steps if s.system == system and s.rate == rate and s.passed), None)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    cancel_on_sigterm()  # SIGTERM, like Ctrl-C, stops it with everything cleaned up
    settings = load_settings()
    folder = OUT / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    started = time.time()
    env = {"HILO_WRAPUP_S": "0"}
    async with hilo_server(
        settings, args.database, namespace="hilo", log_name="bench-capacity-hilo", env=env
    ) as served:
        hilo_settings = settings.model_copy(update={"namespace": "hilo", "http_port": served.port})
        hilo_voice = VoiceLoad(number=HILO_NUMBER, sip_target=f"{settings.sip_host}:{settings.sip_port}")
        plain_voice = replace(hilo_voice, number=PLAIN_NUMBER)
        ami = AmiClient(
            settings.ami_host, settings.ami_port, settings.ami_user, settings.ami_password.get_secret_value()
        )
        await ami.start()
        await asyncio.wait_for(ami.logged_in.wait(), 10)
        ari = Ari(settings.ari_url, settings.ari_user, settings.ari_password.get_secret_value())
        try:
            async with plain_line(ami, ari) as added:
                b = Bench(
                    args,
                    settings,
                    folder,
                    target_from_settings(hilo_settings, hilo_voice, hilo=True),
                    target_from_settings(hilo_settings, plain_voice, hilo=False),
                    ari,
                )
                # warm-up: Hilo's first calls load its speech models and fill its caches; not counted
                await b.run("hilo", 1.0, 5.0, "warmup")
                tried = {system: await b.find_knee(system) for system in ("plain", "hilo")}
                knees = {system: knee(t) for system, t in tried.items()}
                compare_rate = min(knees.values())
                compared: dict[str, dict[str, Any]] = {}
                if compare_rate > 0:
                    for system in ("plain", "hilo"):
                        step = b.step_at(system, compare_rate)
                        if step is None:
                            report = await b.run(system, compare_rate, args.step, f"{system}-{compare_rate:g}-compare")
                            ok, why = judge(report, compare_rate, system == "hilo")
                            step = Step(system, compare_rate, ok, why, report)
                            b.steps.append(step)
                        compared[system] = step.report
                soak_rate = round(max(args.min_rate, args.soak_share * knees["hilo"]), 2)
                b.long_call_minutes = args.long_call if args.long_call is not None else max(20.0, args.soak / 60)
                held: long_call.Result | None = None
                if b.long_call_minutes > 0:
                    soak, held = await b.soak_with_long_call(soak_rate, b.long_call_minutes, served, hilo_settings)
                else:
                    soak = await b.run("hilo", soak_rate, args.soak, f"soak-{soak_rate:g}")
        finally:
            await ari.close()
            await ami.close()
    summary = summarize(b, tried, knees, compare_rate, compared, soak, soak_rate, added)
    if held is not None:
        summary["long_call"] = asdict(held)
    summary["targets"] = evaluate(summary)
    summary["seconds"] = round(time.time() - started)
    summary["measured_at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    summary["folder"] = str(folder)
    summary["hilo_health"] = {k: served.health.get(k) for k in ("status",)}
    log = served.log_text()
    (folder / "hilo-serve.log").write_text(log)
    summary["server_errors"] = server_errors(log)
    (folder / "capacity.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    return summary


def _lat(report: dict[str, Any], name: str, q: str = "p99") -> float | None:
    value = report["voice"]["latency_ms"][name].get(q)
    return None if value is None else float(value)


def summarize(
    b: Bench,
    tried: dict[str, list[tuple[float, bool]]],
    knees: dict[str, float],
    compare_rate: float,
    compared: dict[str, dict[str, Any]],
    soak: dict[str, Any],
    soak_rate: float,
    added: list[Any],
) -> dict[str, Any]:
    latency = {
        system: {
            name: {q: r["voice"]["latency_ms"][name].get(q) for q in ("n", "p50", "p90", "p99", "max")}
            for name in (INVITE_TO_ANSWER, ANSWER_TO_AUDIO)
        }
        for system, r in compared.items()
    }
    cpu = {system: cpu_per_call(r) for system, r in compared.items()}
    soak_after = soak["after_run"]
    soak_ghosts = {
        "channels": (soak_after.get("after_run_ghost_channels") or 0),
        "waiting": soak_after.get("after_run_waiting") or 0,
        "agents_not_available": soak_after.get("after_run_agents_not_available"),
    }
    memory = {name: memory_growth(soak, name) for name in ("hilo", "asterisk")}
    return {
        "command": b.args.command,
        "profile": {
            "step_s": b.args.step,
            "soak_s": b.args.soak,
            "soak_share": b.args.soak_share,
            "long_call_minutes": b.long_call_minutes,
            "start_rate": b.args.start_rate,
            "max_rate": b.args.max_rate,
            "resolution": b.args.resolution,
        },
        "plain_line_added_at_run_time": len(added) > 0,
        "steps": [
            {"system": s.system, "rate": s.rate, "passed": s.passed, "why": s.why, **_step_figures(s.report)}
            for s in b.steps
        ],
        "knees": knees,
        "knees_at_max": {system: k >= b.args.max_rate for system, k in knees.items()},
        "tried": tried,
        "compare_rate": compare_rate,
        "latency_ms": latency,
        "cpu_ms_per_call": cpu,
        "soak": {
            "rate": soak_rate,
            "counts": soak["voice"]["counts"],
            "failures": soak["voice"]["failures"],
            "memory": memory,
            "ghosts": soak_ghosts,
            "after_run": soak_after.get("summary"),
        },
        "after_runs": b.after_runs,
        "machine": _machine(),
        "versions": {"asterisk": soak["target"].get("asterisk"), "python": platform.python_version()},
    }


def evaluate(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target of the issue, met (True), missed (False) or not measured (None), with its figures."""
    targets: dict[str, tuple[bool | None, str]] = {}
    knees = summary["knees"]
    ratio = knees["hilo"] / knees["plain"] if knees["plain"] else None
    steady = [s["rate"] for s in summary["steps"] if s["system"] == "plain" and s["passed"] and not _saturated(s)]
    steady_ratio = knees["hilo"] / max(steady) if steady else None
    targets["knee"] = (
        None if ratio is None else ratio >= 0.9,
        "plain has no knee"
        if ratio is None
        else f"Hilo's knee {ratio:.2f}x plain's (target at least 0.9x)"
        + (f"; {steady_ratio:.2f}x plain's highest rate with its setup unsaturated" if steady_ratio else ""),
    )
    latency, cpu = summary["latency_ms"], summary["cpu_ms_per_call"]
    if "hilo" in latency and "plain" in latency:
        for key, name, bound in (("invite_to_200", INVITE_TO_ANSWER, 20), ("first_prompt", ANSWER_TO_AUDIO, 100)):
            h, p = latency["hilo"][name]["p99"], latency["plain"][name]["p99"]
            delta = None if h is None or p is None else round(h - p, 1)
            targets[key] = (
                None if delta is None else delta <= bound,
                f"p99 {_signed(delta)} ms against plain (target within {bound})",
            )
        hc, pc = cpu["hilo"]["total"], cpu["plain"]["total"]
        cpu_ratio = hc / pc if hc is not None and pc else None
        targets["cpu_per_call"] = (
            None if cpu_ratio is None else cpu_ratio <= 2,
            f"{cpu_ratio:.1f}x plain's (target at most 2x)" if cpu_ratio is not None else "not measured",
        )
    soak = summary["soak"]
    growth = (soak["memory"].get("hilo") or {}).get("growth_pct")
    ghosts = soak["ghosts"]
    no_ghosts = not ghosts["channels"] and not ghosts["waiting"] and not ghosts["agents_not_available"]
    targets["soak"] = (
        None if growth is None else growth < 5 and no_ghosts,
        f"Hilo server memory {_signed(growth)}% (target under 5%); after it {ghosts['channels']} channel(s) left,"
        f" {ghosts['waiting']} caller(s) waiting, agents not available: {ghosts['agents_not_available'] or 'none'}",
    )
    held = summary.get("long_call")
    if held is not None:
        targets["long_call"] = (
            bool(held["ok"]),
            f"one call held {held['talk_s']} s through the soak"
            + (
                ": completed, recorded, agent available again, nothing left"
                if held["ok"]
                else ": " + "; ".join(held["problems"])
            ),
        )
    every = summary["after_runs"]
    probes = [a["probe"] for a in every if "probe" in a]
    at_rest = sum(bool(a.get("after_run_at_rest")) for a in every)
    reached = sum(bool(p.get("reached_agent")) for p in probes)
    targets["after_runs"] = (
        at_rest == len(every) and reached == len(probes),
        f"at rest within 5 s after {at_rest} of {len(every)} runs; the next call reached an agent after"
        f" {reached} of {len(probes)}",
    )
    return {k: {"met": v[0], "detail": v[1]} for k, v in targets.items()}


def _step_figures(report: dict[str, Any]) -> dict[str, Any]:
    voice = report["voice"]
    return {
        "offered": voice["counts"]["offered"],
        "succeeded": voice["counts"]["succeeded"],
        "achieved": voice["rate_achieved"],
        "invite_to_200_p99": _lat(report, INVITE_TO_ANSWER),
        "first_prompt_p99": _lat(report, ANSWER_TO_AUDIO),
        "cpu_total_ms": cpu_per_call(report)["total"],
        "generator_pct": _generator_pct(report),
        "queued": (voice.get("hilo") or {}).get("queued"),
        "service_level_pct": (voice.get("hilo") or {}).get("service_level_pct"),
    }


def _generator_pct(report: dict[str, Any]) -> float | None:
    """The load generator's CPU (SIPp and the process driving the callers' RTP), in % of one core."""
    procs, seconds = report["processes"], report.get("load_seconds") or 0
    cpu = sum((procs.get(name) or {}).get("cpu_s", 0.0) for name in ("sipp", "loadtest"))
    return round(100 * cpu / seconds) if seconds else None


def _signed(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+g}"


def _machine() -> str:
    return machine()


# BENCHMARKS.md ------------------------------------------------------------------------------------


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def section(summary: dict[str, Any], reduced: bool, full_command: str, rendered_from: Path | None = None) -> str:
    measured = summary.get("measured_at") or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rendered = (
        f"; this text was written afterwards from that run's saved figures (`python -m bench.capacity"
        f" --section-from {rendered_from}`)"
        if rendered_from is not None
        else ""
    )
    p = summary["profile"]
    label = "**Reduced profile**" if reduced else "Full profile"
    steps = "\n".join(
        f"| {s['system']} | {s['rate']:g} | {'yes' if s['passed'] else 'no'} | {s['offered']} | {s['succeeded']}"
        f" | {_cell(s['achieved'])} | {_cell(s['invite_to_200_p99'])} | {_cell(s['first_prompt_p99'])}"
        f" | {_cell(s['cpu_total_ms'])} | {_cell(s['generator_pct'])} | {_cell(s['queued'])} | {_why(s)} |"
        for s in summary["steps"]
    )
    lat_rows = []
    for name in (INVITE_TO_ANSWER, ANSWER_TO_AUDIO):
        for system in ("plain", "hilo"):
            s = summary["latency_ms"].get(system, {}).get(name)
            if s:
                lat_rows.append(
                    f"| {name} | {system} | {s['n']} | {_cell(s['p50'])} | {_cell(s['p90'])} | {_cell(s['p99'])}"
                    f" | {_cell(s['max'])} |"
                )
    cpu_rows = []
    for system in ("plain", "hilo"):
        c = summary["cpu_ms_per_call"].get(system)
        if c:
            cpu_rows.append(f"| {system} | " + " | ".join(_cell(c[k]) for k in (*STACK, "total")) + " |")
    targets = "\n".join(
        f"| {name} | {'met' if t['met'] else ('not measured' if t['met'] is None else '**missed**')} | {t['detail']} |"
        for name, t in summary["targets"].items()
    )
    errors = "\n".join(f"- {n} x {what}" for n, what in summary.get("server_errors", [])[:6]) or "- none"
    soak = summary["soak"]
    mem = "; ".join(
        f"{name} {m['from_mb']} -> {m['to_mb']} MB ({m['growth_pct']:+g}%)" for name, m in soak["memory"].items() if m
    )
    return f"""{SECTION}

{label}, produced by `{summary["command"]}` on {measured} ({summary["seconds"] / 60:.0f} minutes){rendered}.
The full profile is `{full_command}` (60 s steps, a 10-minute soak): not run here.
Machine: {summary["machine"]}; Python {summary["versions"]["python"]}; Asterisk {summary["versions"]["asterisk"]};
everything on the same machine, the load generator included (SIPp and the callers' RTP in Python: their CPU
is in each run's report, not in the figures below).

What runs: callers on the carrier trunk (SIPp from 127.0.0.2, one caller number of 1000 per call) dial the
demo line 100 (a `hilo serve` of the bench's own: namespace `hilo`, its own database, wrap-up 0; the demo
agents' SIPp phones answer) or `bench-plain` (the same menu as plain dialplan on the same Asterisk:
`Answer()`, `Playback(hello-world)`, `Read(choice,vm-press,1,,1,6)`, key 2 -> `MusicOnHold()`), key 2 by SIP
INFO 2.5 s after the answer and hang up 8 s later; each phone sends 20 ms of silence every 20 ms from the
answer. The demo's one support agent (bob) takes one call at a time: the other callers wait in the queue and
hang up after their 8 s, abandoned (not a failure). A step is {p["step_s"]:g} s at a steady rate; it
passes with zero failed calls (every caller hangs up as planned; for Hilo every answered call also reaches
the queue) and the rate held. The search starts at {p["start_rate"]:g} calls/s, doubles, then bisects to
{p["resolution"]:.0%}. CPU per call: what Asterisk, the Hilo server, PostgreSQL (all backends) and Redis used
during the step (/proc), divided by the calls that succeeded. Answer -> first prompt: from the 200 OK read by
SIPp to the first RTP packet above -30 dBFS the
caller receives. Reports (JSON, and HTML pages with plots) of every run: `.run/bench/capacity/<time>/`.

**Knees**: plain dialplan {_knee_text(summary, "plain")}, Hilo {_knee_text(summary, "hilo")}. The call setup
kept INVITE -> 200 OK p99 under {SATURATED_MS / 1000:g} s (a steady state, not a queue growing) up to: plain
dialplan {_unsaturated(summary, "plain")}, Hilo {_unsaturated(summary, "hilo")}. The load generator shares
the machine's two cores: its share is in the table.

{STEPS_HEAD}
{steps}

Compared at {summary["compare_rate"]:g} calls/s (the highest rate both passed):

| latency (ms) | system | n | p50 | p90 | p99 | max |
| --- | --- | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(lat_rows)}

| CPU ms per succeeded call | Asterisk | Hilo server | PostgreSQL | Redis | total |
| --- | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(cpu_rows)}

**Soak**: Hilo at {soak["rate"]:g} calls/s ({p["soak_share"]:.0%} of its knee) for {p["soak_s"]:g} s:
{soak["counts"]["offered"]} calls, {soak["counts"]["succeeded"]} succeeded, failures {soak["failures"] or "none"}.
Resident memory from a quarter into the soak to its end: {mem or "not measured"}. After it: {soak["after_run"]}
{_long_call_text(summary)}

Errors in the Hilo server's log during the benchmark (grouped; digits masked):
{errors}

| target | result | figures |
| --- | --- | --- |
{targets}
"""


def _long_call_text(summary: dict[str, Any]) -> str:
    held = summary.get("long_call")
    if held is None:  # a run saved before the long call was part of the soak says nothing of it
        return (
            "No long call was held through the soak (`--long-call 0`)."
            if "long_call_minutes" in summary["profile"]
            else ""
        )
    verdict = "passed" if held["ok"] else "failed: " + "; ".join(held["problems"])
    return (
        f"A long call (bench/long_call.py, {held['minutes']:g} minutes, the demo line keyed to sales) was held"
        f' through the soak: {verdict}; its figures are in the section "{long_call.SECTION.removeprefix("## ")}".'
    )


def _saturated(step: dict[str, Any]) -> bool:
    return (step.get("invite_to_200_p99") or 0.0) > SATURATED_MS


def _why(step: dict[str, Any]) -> str:
    if step["passed"] and _saturated(step):
        return f"ok, but INVITE->200 p99 over {SATURATED_MS / 1000:g} s: call setup saturated"
    return str(step["why"])


def _unsaturated(summary: dict[str, Any], system: str) -> str:
    """The highest rate a system passed with its call setup under SATURATED_MS, and the next rate tried."""
    steps = sorted((s for s in summary["steps"] if s["system"] == system), key=lambda s: s["rate"])
    good = [s["rate"] for s in steps if s["passed"] and not _saturated(s)]
    if not good:
        return "no rate"
    above = [s for s in steps if s["rate"] > max(good)]
    tail = f" ({above[0]['rate']:g}: p99 {_cell(above[0]['invite_to_200_p99'])} ms)" if above else ""
    return f"{max(good):g} calls/s{tail}"


def _knee_text(summary: dict[str, Any], system: str) -> str:
    rate = summary["knees"][system]
    if summary["knees_at_max"].get(system):
        return f"at least {rate:g} calls/s (the highest rate tried)"
    return f"{rate:g} calls/s" if rate else "none (it failed at every rate tried)"


def write_from(folder: Path) -> int:
    """The section again from a saved run (capacity.json and the server's log kept beside it)."""
    summary = json.loads((folder / "capacity.json").read_text())
    summary["targets"] = evaluate(summary)
    log = folder / "hilo-serve.log"
    if log.exists():
        summary["server_errors"] = server_errors(log.read_text())
    profile = summary["profile"]
    reduced = profile["step_s"] < 60 or profile["soak_s"] < 600
    if "measured_at" not in summary:  # a run saved before its time was kept: its folder is named by its start
        summary["measured_at"] = datetime.strptime(folder.name, "%Y%m%d-%H%M%S").strftime("%Y-%m-%d %H:%M UTC (start)")
    full = folder.resolve()
    where = full.relative_to(REPO_ROOT) if full.is_relative_to(REPO_ROOT) else full
    benchmarks_md.write_section(
        SECTION, section(summary, reduced, "python -m bench.capacity", rendered_from=where), keep=KEPT
    )
    print(f"BENCHMARKS.md written from {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--step", type=float, default=60.0, help="seconds of calls per rate (default 60)")
    parser.add_argument("--soak", type=float, default=600.0, help="seconds of the soak (default 600)")
    parser.add_argument("--soak-share", type=float, default=0.7, help="soak rate, as a share of Hilo's knee")
    parser.add_argument("--start-rate", type=float, default=4.0, help="first rate tried (calls/s, default 4)")
    parser.add_argument("--max-rate", type=float, default=64.0, help="highest rate tried (default 64)")
    parser.add_argument("--min-rate", type=float, default=0.5, help="lowest rate tried (default 0.5)")
    parser.add_argument("--resolution", type=float, default=0.1, help="knee found within this share (0.1)")
    parser.add_argument("--max-steps", type=int, default=8, help="rates tried at most per system (default 8)")
    parser.add_argument(
        "--long-call", type=float, default=None, help="minutes of a long call (bench/long_call.py) held through the"
        " soak (default: 20, or the soak's length if longer; 0: none)",
    )  # fmt: skip
    parser.add_argument("--database", default="hilo_bench_capacity", help="the bench server's database")
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    parser.add_argument(
        "--section-from", type=Path, default=None, help="write BENCHMARKS.md from a run's folder, measuring nothing"
    )
    args = parser.parse_args(argv)
    if args.section_from is not None:
        return write_from(args.section_from)
    args.command = "python -m bench.capacity " + shlex.join(argv if argv is not None else sys.argv[1:])
    args.command = args.command.strip()
    try:
        summary = asyncio.run(bench(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("stopped before the end (everything it started is stopped): nothing written", file=sys.stderr)
        return 130
    print(json.dumps(summary["targets"], indent=1, ensure_ascii=False))
    if not args.no_write:
        reduced = args.step < 60 or args.soak < 600
        benchmarks_md.write_section(SECTION, section(summary, reduced, "python -m bench.capacity"), keep=KEPT)
        if "long_call" in summary:
            held = long_call.Result(**summary["long_call"])
            benchmarks_md.write_section(long_call.SECTION, long_call.section(held), keep=long_call.KEPT)
        print("BENCHMARKS.md written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
