"""`hilo loadtest`: the peak simulator's command line (docs/loadtest.md)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from hilo.settings import REPO_ROOT, Settings
from server.loadtest.checks import trunk_for
from server.loadtest.media import encode_ulaw, read_wav_pcm16
from server.loadtest.profile import (
    KEY_MODES,
    Profile,
    ProfileError,
    TextLoad,
    VoiceLoad,
    require_loopback,
    require_loopback_url,
)
from server.loadtest.rest import RestError
from server.loadtest.runner import LoadError, LoadRun, Target, cancel_on_sigterm

DEFAULT_OUT = REPO_ROOT / ".run" / "loadtest"


def add_loadtest_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "loadtest",
        help="drive a peak of calls (and chats) against the running stack on loopback; JSON and HTML report",
        description="SIPp callers on a carrier trunk at a steady rate (after a ramp), keying the menu, "
        "holding, hanging up; optional text load; a report with plots at the end. Only loopback targets.",
    )
    v = VoiceLoad()
    p.add_argument("--number", default=v.number, help="the number dialled (default %(default)s, the demo line)")
    p.add_argument("--rate", type=float, default=v.rate, help="new calls per second (default %(default)s)")
    p.add_argument("--ramp", type=float, default=v.ramp_s, help="seconds to climb to --rate (default %(default)s)")
    p.add_argument("--duration", type=float, default=v.duration_s, help="seconds of new calls, ramp included")
    p.add_argument("--hold", type=float, default=v.hold_s, help="seconds on the line after the key (default 8)")
    p.add_argument("--key", default=v.key, help="the menu choice (default %(default)s; '' for none)")
    p.add_argument("--key-mode", choices=KEY_MODES, default=v.key_mode, help="how it is keyed (default info)")
    p.add_argument("--key-after", type=float, default=v.key_after_s, help="seconds after the answer (2.5)")
    p.add_argument("--say", default="", help='--key-mode voice: the words said, e.g. "technical support"')
    p.add_argument("--sip", default=None, help="Asterisk's SIP address (default HILO_SIP_HOST:HILO_SIP_PORT)")
    p.add_argument("--trunk-ip", default=v.trunk_ip, help="callers' source address, a trunk's (default 127.0.0.2)")
    p.add_argument("--callers", type=int, default=v.callers, help="distinct caller numbers (default 200)")
    p.add_argument("--agent-talk", type=float, default=None, help="agents hang up this long after answering")
    p.add_argument("--sms-rate", type=float, default=0.0, help="new SMS conversations per second")
    p.add_argument("--whatsapp-rate", type=float, default=0.0, help="new WhatsApp conversations per second")
    p.add_argument("--chat-rate", type=float, default=0.0, help="new web chat visitors per second")
    p.add_argument("--chat-choice", default="", help="what text customers answer the menu with ('' : nothing)")
    p.add_argument("--no-hilo", action="store_true", help="the number is plain dialplan: no queue figures, no probe")
    p.add_argument("--no-probe", action="store_true", help="skip the call placed after the run")
    p.add_argument("--settle", type=float, default=5.0, help="seconds the centre has to be at rest afterwards")
    p.add_argument("--drain", type=float, default=30.0, help="seconds calls may overrun before SIPp is stopped")
    p.add_argument("--out", type=Path, default=None, help="report folder (default .run/loadtest/<time>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def profile_from_args(args: argparse.Namespace, settings: Settings) -> Profile:
    voice = VoiceLoad(
        number=args.number,
        rate=args.rate,
        ramp_s=args.ramp,
        duration_s=args.duration,
        key=args.key,
        key_mode=args.key_mode,
        key_after_s=args.key_after,
        say=args.say,
        hold_s=args.hold,
        sip_target=args.sip or f"{settings.sip_host}:{settings.sip_port}",
        trunk_ip=args.trunk_ip,
        callers=args.callers,
    )
    text = TextLoad(
        sms_rate=args.sms_rate, whatsapp_rate=args.whatsapp_rate, chat_rate=args.chat_rate, choice=args.chat_choice
    )
    profile = Profile(
        voice=voice,
        text=text,
        agent_talk_s=args.agent_talk,
        settle_s=args.settle,
        probe=not args.no_probe,
        drain_s=args.drain,
    )
    profile.check()
    if voice.key_mode == "voice" and voice.keys and not voice.say.strip():
        raise ProfileError('--say: voice mode needs the words the callers say, e.g. --say "technical support"')
    return profile


def target_from_settings(settings: Settings, voice: VoiceLoad, *, hilo: bool = True) -> Target:
    """What to load and watch, from the settings of the server under test; refuses anything not on loopback."""
    from dialplans.models import load_routing

    require_loopback_url("HILO_ARI_URL", settings.ari_url)
    require_loopback("HILO_HTTP_HOST", settings.http_host)
    redis_url = settings.redis_url.get_secret_value()
    database_url = settings.database_url.get_secret_value()
    require_loopback_url("HILO_REDIS_URL", redis_url)
    require_loopback_url("HILO_DATABASE_URL", database_url)
    trunk = trunk_for(voice.trunk_ip)
    if trunk is None:
        raise ProfileError(f"--trunk-ip: no trunk of asterisk/etc/pjsip.conf takes calls from {voice.trunk_ip}")
    routing = load_routing(settings.dialplans_dir)
    return Target(
        trunk=trunk,
        ari_url=settings.ari_url,
        ari_user=settings.ari_user,
        ari_password=settings.ari_password.get_secret_value(),
        hilo=hilo,
        namespace=settings.namespace,
        hilo_url=f"http://{settings.http_host}:{settings.http_port}",
        api_token=settings.api_token.get_secret_value(),
        redis_url=redis_url,
        ports={
            "sip": voice.sip_hostport[1],
            "http": settings.http_port,
            "postgres": urlsplit(database_url).port or 5432,
            "redis": urlsplit(redis_url).port or 6379,
        },
        sla_s={q.id: float(q.sla.within_s) for q in routing.queues},
    )


async def synthesized(settings: Settings, text: str) -> bytes:
    """What voice-mode callers say: `text` synthesized (speech.tts, US English), as PCMU."""
    from speech.tts import synthesize_wav, voice_for

    folder = settings.tts_cache_dir / "loadtest"
    folder.mkdir(parents=True, exist_ok=True)
    wav = folder / f"say-{hashlib.sha256(text.encode()).hexdigest()[:16]}.wav"
    if not wav.exists():
        await asyncio.to_thread(synthesize_wav, text, voice_for("en", None), wav)
    return encode_ulaw(read_wav_pcm16(wav))


async def run_loadtest_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        profile = profile_from_args(args, settings)
        target = target_from_settings(settings, profile.voice, hilo=not args.no_hilo)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    folder = args.out or DEFAULT_OUT / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    speech = await synthesized(settings, profile.voice.say) if profile.voice.key_mode == "voice" else None
    text_driver = None
    if profile.text.any:
        from server.loadtest.messaging import TextDriver

        try:
            text_driver = TextDriver.from_settings(settings, profile.text, profile.voice.duration_s)
        except ProfileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    run = LoadRun(
        profile,
        target,
        folder,
        command="hilo loadtest " + shlex.join(sys.argv[2:] if len(sys.argv) > 2 else []),
        speech=speech,
        progress=not args.no_progress,
        text_driver=text_driver,
    )
    cancel_on_sigterm()
    try:
        result = await run.execute()
    except (RestError, ProfileError, LoadError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        print("stopped before the end: no report", file=sys.stderr)
        return 130
    voice = result["voice"]
    counts, latency = voice["counts"], voice["latency_ms"]
    print(
        f"{counts['offered']} calls placed, {counts['answered']} answered, {counts['succeeded']} succeeded,"
        f" {counts['failed']} failed {voice['failures'] or ''}".rstrip()
    )
    for name, s in latency.items():
        print(f"  {name}: p50 {s['p50']} ms, p99 {s['p99']} ms (n={s['n']})")
    if voice.get("hilo"):
        h = voice["hilo"]
        print(
            f"  queued {h['queued']}, answered by an agent {h['answered_by_agent']}, abandoned"
            f" {h['abandoned_in_queue']}, service level {h['service_level_pct']}%,"
            f" answered but never queued {h['answered_not_queued']}"
        )
    for name, p in result["processes"].items():
        print(f"  {name}: {p['cpu_s']} CPU s, {p['cpu_ms_per_call']} ms per succeeded call, RSS {p['rss_mb_last']} MB")
    print(result["after_run"]["summary"])
    print(f"report: {folder / 'report.json'} and {folder / 'report.html'}")
    return 0 if counts["failed"] == 0 and result["after_run"]["ok"] else 1
