"""One load run, start to report: everything is set up before the first call, the calls are driven and
watched, the centre is checked at rest afterwards, and every process and socket the run opened is closed
whatever happens (a run stops by itself: calls are placed for `duration`, then at most `drain` more seconds
are given to the calls under way)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from server.loadtest import page, report
from server.loadtest.agents import AgentTalk
from server.loadtest.calls import CallBook
from server.loadtest.checks import Rest, available_agents, wait_at_rest
from server.loadtest.hilo_events import EventFollower, HiloEvents, queue_figures
from server.loadtest.media import MediaAgent
from server.loadtest.procs import Sampler, find_stack
from server.loadtest.profile import Profile, VoiceLoad, caller_numbers
from server.loadtest.rest import Ari, HiloApi, RestError
from server.loadtest.sipp import LogTail, SippRun, sipp_duration_ms, stat_failures

log = logging.getLogger(__name__)


def cancel_on_sigterm() -> None:
    """SIGTERM cancels the running task like Ctrl-C does, so a run stopped either way cleans up."""
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


class LoadError(RuntimeError):
    """The run could not place its load (SIPp would not start, ...)."""


@dataclass(frozen=True)
class Target:
    """Where the load goes and how to watch it (all on loopback: profile.require_loopback*)."""

    trunk: str  # the PJSIP endpoint of the trunk the callers come in on
    ari_url: str
    ari_user: str
    ari_password: str
    hilo: bool = True  # Hilo answers the number: queue figures, wallboard check, probe call
    namespace: str = "hilo"
    hilo_url: str | None = None
    api_token: str = ""
    redis_url: str = ""
    ports: dict[str, int | None] = field(default_factory=dict)  # sip, http, postgres, redis
    sla_s: dict[str, float] = field(default_factory=dict)
    # channels of a call that is not the run's and may outlive it (the capacity soak's long call): never a
    # ghost of the run, never swept
    ignore_channels: frozenset[str] = frozenset()


class CallDriver:
    """Reads a SIPp run's log as it grows into a CallBook, and sends the RTP menu choice at its moment."""

    def __init__(self, sipp: SippRun, book: CallBook, media: MediaAgent, voice: VoiceLoad, speech: bytes | None):
        self.tail = LogTail(sipp.log_file)
        self.book = book
        self.media = media
        self.voice = voice
        self.speech = speech

    def pump(self) -> None:
        for event in self.tail.read():
            call = self.book.add(event)
            if event.step in ("E", "R", "X"):
                self.media.close_call(call.call_id)
            if event.step != "A" or call.media is None:
                continue
            self.media.open_call(call.call_id, call.media, event.at + self.voice.call_seconds() + 60)
            if not self.voice.keys:
                continue
            at = event.at + self.voice.key_after_s
            if self.voice.key_mode == "rfc4733":
                self.media.plan(call.call_id, at, "key", self.voice.key)
            elif self.voice.key_mode == "voice" and self.speech:
                self.media.plan(call.call_id, at, "speech", self.speech)


class LoadRun:
    def __init__(
        self,
        profile: Profile,
        target: Target,
        folder: Path,
        *,
        label: str = "",
        command: str = "",
        speech: bytes | None = None,
        progress: bool = True,
        text_driver: Any = None,  # messaging.TextDriver, when the profile has text load
    ) -> None:
        self.profile = profile
        self.target = target
        self.folder = folder
        self.label = label or f"{profile.voice.rate:g} calls/s for {profile.voice.duration_s:g} s"
        self.command = command
        self.speech = speech
        self.progress = progress
        self.text_driver = text_driver
        self.book = CallBook()
        self.events = HiloEvents()
        self.swept = 0  # trunk channels hung up after SIPp had to be killed
        self.talk: AgentTalk | None = None

    async def execute(self) -> dict[str, Any]:
        voice = self.profile.voice
        numbers = caller_numbers(voice.callers)
        async with contextlib.AsyncExitStack() as stack:
            ari = Ari(self.target.ari_url, self.target.ari_user, self.target.ari_password)
            stack.push_async_callback(ari.close)
            api = (
                HiloApi(self.target.hilo_url, self.target.api_token)
                if self.target.hilo and self.target.hilo_url
                else None
            )
            if api is not None:
                stack.push_async_callback(api.close)
            asterisk = await ari.info()  # fails early, with ARI's error, if Asterisk is not there
            media = MediaAgent(voice.trunk_ip)
            media.start()
            stack.push_async_callback(media.close)
            agents_before: set[str] = set()
            if self.target.hilo:
                follower = EventFollower(self.target.redis_url, self.target.namespace, self.events)
                await follower.start()
                stack.push_async_callback(follower.close)
                if api is not None:
                    agents_before = available_agents(await api.wallboard())
            if self.target.hilo and self.profile.agent_talk_s:
                talk = AgentTalk(ari, self.target.namespace, self.profile.agent_talk_s, self.events, {voice.number})
                self.talk = talk
                stack.push_async_callback(talk.close)
            ports = self.target.ports
            sampler = Sampler(
                find_stack(
                    sip_port=ports.get("sip") or voice.sip_hostport[1],
                    http_port=ports.get("http"),
                    pg_port=ports.get("postgres"),
                    redis_port=ports.get("redis"),
                )
            )
            sipp = SippRun(voice, self.folder, media.address, numbers, voice.expected_calls())
            # stopped early (Ctrl-C, SIGTERM): SIPp is given its calls' time to end; killed, its calls are hung up
            stack.push_async_callback(self._sweep_trunk, ari, sipp)
            stack.push_async_callback(sipp.stop, voice.call_seconds() + 5)
            driver = CallDriver(sipp, self.book, media, voice, self.speech)

            started_at = datetime.now(UTC)
            t0 = time.time()
            sampler.sample(t0)
            if self.text_driver is not None:
                await self.text_driver.start(t0)
                stack.push_async_callback(self.text_driver.close)
            await sipp.start()
            assert sipp.process is not None
            sampler.add("sipp", {sipp.process.pid})
            # this process alone (SIPp, its child, is counted above): the callers' RTP, the log, the sampling
            sampler.add("loadtest", {os.getpid()}, descendants=False)
            load_end = await self._drive(sipp, driver, sampler, t0)
            if self.text_driver is not None:
                await self.text_driver.finish()
            rc = await sipp.stop()
            await self._sweep_trunk(ari, sipp)
            if not self.book.placed:
                errors = " | ".join(line for line in sipp.errors_tail(3) if line.strip())
                raise LoadError(f"SIPp placed no call (exit {rc}; {sipp.folder}): {errors}")

            for call in self.book.placed:
                if call.answered is not None and call.media is not None:
                    call.first_audio = media.first_audio(call.media[1], call.answered - 1.0, call.ended)

            after = await self._after_run(ari, api, media, numbers[0], agents_before, load_end)
            sampler.sample(time.time())

            seconds = report.seconds_between(t0, load_end)
            section = report.voice_section(self.book, t0, seconds, voice.rate)
            stats = sipp.stats()
            section["sipp"] = {
                "exit_code": rc,
                "failures": stat_failures(stats[-1]) if stats else {},
                # SIPp's own mean INVITE -> 200 (ms resolution), beside the per-call figures from its log
                "response_time_avg_ms": sipp_duration_ms(stats[-1].get("ResponseTime1(C)", "")) if stats else None,
                "errors_tail": sipp.errors_tail(5),
                "killed": sipp.killed,
                "channels_hung_up_after_kill": self.swept,
                "command": " ".join(sipp.command()[:2]) + " ...",
            }
            section["media"] = {"packets_received": media.packets, "packets_sent": media.sent,
                                "streams": len(media.streams), "late_send_ticks": media.late_ticks}  # fmt: skip
            if self.target.hilo:
                last_invite = max((c.invited for c in self.book.placed if c.invited), default=load_end)
                ours = self.events.ours({voice.number}, t0, last_invite + 1)
                section["hilo"] = queue_figures(ours, self.target.sla_s, t0, seconds)
                # a call answered that never reached a queue: the menu lost its key (or Hilo failed the call)
                section["hilo"]["answered_not_queued"] = max(
                    0, section["counts"]["answered"] - section["hilo"]["queued"]
                )
                if self.talk is not None:
                    section["agent_talk"] = {"talk_s": self.profile.agent_talk_s, "ended": self.talk.ended,
                                             "caller_left_first": self.talk.missed}  # fmt: skip
            succeeded = self.book.counts()["succeeded"]
            result: dict[str, Any] = {
                "format": report.FORMAT,
                "label": self.label,
                "command": self.command,
                "started_at": started_at.isoformat(timespec="seconds"),
                "ended_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "load_seconds": round(load_end - t0, 1),
                "profile": self.profile.as_json(),
                "target": {
                    "sip": voice.sip_target,
                    "trunk": self.target.trunk,
                    "trunk_ip": voice.trunk_ip,
                    "number": voice.number,
                    "hilo": self.target.hilo,
                    "namespace": self.target.namespace if self.target.hilo else None,
                    "asterisk": (asterisk.get("system") or {}).get("version"),
                },
                "machine": report.machine(),
                "voice": section,
                "processes": report.process_section(sampler, t0, load_end, succeeded),
                "processes_missing": sampler.missing,
                "after_run": after,
            }
            if self.text_driver is not None:
                result["text"] = self.text_driver.report()
            report.write(result, self.folder, page.render(result))
            return result

    async def _after_run(
        self,
        ari: Ari,
        api: HiloApi | None,
        media: MediaAgent,
        number: str,
        agents_before: set[str],
        load_end: float,
    ) -> dict[str, Any]:
        """At rest within settle_s; then (Hilo, a menu choice) one more call must reach an agent, and the centre
        must be at rest again."""
        voice = self.profile.voice
        namespace = self.target.namespace if self.target.hilo else None
        after: dict[str, Any] = {"at_rest_within_s": self.profile.settle_s}
        rest = await wait_at_rest(
            ari, api, trunk=self.target.trunk, namespace=namespace, agents_before=agents_before,
            within_s=self.profile.settle_s, since=load_end, ignore=self.target.ignore_channels,
        )  # fmt: skip
        after.update(_rest_json(rest, "after_run"))
        probe: dict[str, Any] | None = None
        again: Rest | None = None
        if self.target.hilo and self.profile.probe and voice.keys:
            probe, probe_end = await self._probe(ari, media, number)
            after["probe"] = probe
            again = await wait_at_rest(
                ari, api, trunk=self.target.trunk, namespace=namespace, agents_before=agents_before,
                within_s=self.profile.settle_s, since=probe_end, ignore=self.target.ignore_channels,
            )  # fmt: skip
            after.update(_rest_json(again, "after_probe"))
        after["ok"] = (
            rest.at_rest and (probe is None or bool(probe.get("reached_agent"))) and (again is None or again.at_rest)
        )
        after["summary"] = _summary(rest, probe, again, self.profile.settle_s)
        return after

    async def _sweep_trunk(self, ari: Ari, sipp: SippRun) -> int:
        """Hang up the trunk's channels left by a SIPp that had to be killed (its calls would stay up)."""
        if not sipp.killed:
            return 0
        ended = 0
        with contextlib.suppress(RestError):
            for channel in await ari.endpoint_channels("PJSIP", self.target.trunk):
                if channel in self.target.ignore_channels:
                    continue
                await ari.hangup(channel)
                ended += 1
        if ended:
            log.warning("SIPp was stopped with calls up: hung up %d channel(s) of trunk %s", ended, self.target.trunk)
        self.swept += ended
        return ended

    async def _drive(self, sipp: SippRun, driver: CallDriver, sampler: Sampler, t0: float) -> float:
        """Places the calls (rate steps on SIPp's control socket), samples, shows progress; returns when SIPp
        has ended its last call, or at the run's bound (then SIPp is stopped)."""
        voice = self.profile.voice
        steps = voice.rate_steps()[1:]
        stop_new_at = t0 + voice.duration_s + 2  # -m ends the calls by then; `q` is the bound
        deadline = t0 + self.profile.run_seconds()
        total = int(voice.duration_s + voice.call_seconds())
        bar = tqdm(total=total, unit="s", desc=self.label, disable=not self.progress, leave=True)
        shown = 0
        next_sample = t0 + 1
        stopped = False
        try:
            while sipp.running:
                now = time.time()
                driver.pump()
                while steps and now >= t0 + steps[0][0]:
                    sipp.set_rate(steps.pop(0)[1])
                if not stopped and now >= stop_new_at:
                    sipp.stop_new_calls()
                    stopped = True
                if now >= next_sample:
                    sampler.sample(now)
                    next_sample += 1
                    elapsed = int(now - t0)
                    if elapsed > shown and shown < total:
                        bar.update(min(elapsed, total) - shown)
                        shown = min(elapsed, total)
                    counts = self.book.counts()
                    waiting = sum(
                        1 for i in self.events.ours({voice.number}, t0)
                        if i.queued is not None and i.answered is None and i.ended is None
                    )  # fmt: skip
                    shown_counts: dict[str, object] = {
                        "placed": counts["offered"], "up": counts["in_call"], "ok": counts["succeeded"],
                        "failed": counts["failed"], **({"queued": waiting} if self.target.hilo else {}),
                    }  # fmt: skip
                    bar.set_postfix(shown_counts)
                if now > deadline:
                    log.warning("calls still up %g s after the last was due: stopping SIPp", self.profile.drain_s)
                    break
                await asyncio.sleep(0.005)  # the log is read this often: a phone starts its audio at once
        finally:
            bar.close()
        await sipp.stop()
        driver.pump()
        driver.tail.close()
        if self.talk is not None:
            self.book.agent_ended(self.talk.call_ids)
        self.book.close()
        ends = [c.last_seen for c in self.book.placed if c.last_seen is not None]
        return max([*ends, t0 + 1])

    async def _probe(self, ari: Ari, media: MediaAgent, number: str) -> tuple[dict[str, Any], float]:
        """One more call with the same menu choice: it must reach an agent. Returns what it found and when the
        call ended."""
        voice = replace(
            self.profile.voice, rate=1.0, ramp_s=0.0, duration_s=1.0, hold_s=max(8.0, self.profile.voice.hold_s)
        )
        book = CallBook()
        sipp = SippRun(voice, self.folder, media.address, [number], 1, name="probe")
        driver = CallDriver(sipp, book, media, voice, self.speech)
        start = time.time()
        reached: dict[str, Any] = {"reached_agent": False}
        try:
            await sipp.start()
            deadline = start + voice.key_after_s + voice.hold_s + 15
            while sipp.running and time.time() < deadline:
                driver.pump()
                for item in self.events.ours({voice.number}, start):
                    if item.answered is not None and item.started is not None and item.started >= start - 0.5:
                        reached = {
                            "reached_agent": True,
                            "agent": item.agent,
                            "after_answer_s": round(item.answered - (book.placed[0].answered or start), 2)
                            if book.placed
                            else None,
                        }
                await asyncio.sleep(0.1)
            await sipp.wait(max(0.0, deadline - time.time()))
        finally:
            await sipp.stop()
            await self._sweep_trunk(ari, sipp)
            driver.pump()
            driver.tail.close()
            book.close()
        calls = book.placed
        reached["call"] = calls[0].outcome if calls else "not placed"
        return reached, (calls[0].last_seen if calls and calls[0].last_seen else time.time())


def _rest_json(rest: Rest, prefix: str) -> dict[str, Any]:
    return {
        f"{prefix}_at_rest": rest.at_rest,
        f"{prefix}_after_s": rest.after_s,
        f"{prefix}_ghost_channels": len(rest.ghost_channels),
        f"{prefix}_waiting": rest.waiting,
        f"{prefix}_agents_not_available": ", ".join(rest.agents_not_available) or None,
        **({f"{prefix}_errors": "; ".join(rest.errors)} if rest.errors else {}),
    }


def _summary(rest: Rest, probe: dict[str, Any] | None, again: Rest | None, within: float) -> str:
    words = [_rest_words(rest, "after the run", within)]
    if probe is not None:
        if probe.get("reached_agent"):
            words.append(f"the next call reached agent {probe.get('agent')}")
        else:
            words.append(f"the next call did NOT reach an agent ({probe.get('call')})")
    if again is not None and not again.at_rest:
        words.append(_rest_words(again, "after that call", within))
    return "; ".join(words) + "."


def _rest_words(rest: Rest, when: str, within: float) -> str:
    if rest.at_rest:
        return f"At rest {rest.after_s:g} s {when} (bound {within:g} s)"
    problems = []
    if rest.ghost_channels:
        problems.append(f"{len(rest.ghost_channels)} channel(s) left in Asterisk")
    if rest.waiting:
        problems.append(f"{rest.waiting} caller(s) still waiting")
    if rest.agents_not_available:
        problems.append(f"agents not available: {', '.join(rest.agents_not_available)}")
    problems += rest.errors
    return f"NOT at rest {within:g} s {when}: " + "; ".join(problems)
