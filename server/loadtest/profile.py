"""What a load run does, checked before anything starts: the callers' arrival rate and ramp, how long, what
they key and how, and the text load. Every address it touches must be on loopback: a load test never leaves
the machine (a mistyped production address would be a real attack on a real carrier or server)."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

KEY_MODES = ("info", "rfc4733", "voice", "none")
KEYS = frozenset("0123456789*#")
MAX_RATE = 500.0  # calls per second: far above what one machine serves, a bound on typos
MAX_DURATION_S = 3600.0


class ProfileError(ValueError):
    """A profile value that cannot be run; the message names the option and what it must be."""


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_loopback(what: str, host: str) -> None:
    if not is_loopback_host(host):
        raise ProfileError(
            f"{what}: {host!r} is not a loopback address; the load test only targets this machine"
            " (127.0.0.0/8, ::1 or localhost)"
        )


def require_loopback_url(what: str, url: str) -> None:
    host = urlsplit(url).hostname
    if not host:
        raise ProfileError(f"{what}: {url!r} is not a URL with a host")
    require_loopback(what, host)


def split_hostport(what: str, value: str, default_port: int) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or "]" in port:
        host, port = value, str(default_port)
    try:
        number = int(port)
    except ValueError:
        raise ProfileError(f"{what}: {value!r} must be host[:port]") from None
    if not 0 < number < 65536:
        raise ProfileError(f"{what}: port {number} is out of range")
    return host.strip("[]"), number


@dataclass(frozen=True)
class VoiceLoad:
    number: str = "100"  # dialled on the trunk (dialplans/numbers.yaml)
    rate: float = 2.0  # new calls per second once ramped up
    ramp_s: float = 0.0  # from 0 to `rate` over this many seconds, at the start of `duration_s`
    duration_s: float = 20.0  # seconds during which calls are placed (the ramp included)
    key: str = "2"  # the menu choice; "" for none
    key_mode: str = "info"  # info (SIP INFO), rfc4733 (RTP events), voice (synthesized speech), none
    key_after_s: float = 2.5  # after the answer
    say: str = ""  # voice mode: the words said (default: the label of the choice, see runner)
    hold_s: float = 8.0  # on the line after the key, then the caller hangs up
    sip_target: str = "127.0.0.1:5060"  # Asterisk's SIP address
    trunk_ip: str = "127.0.0.2"  # the callers' source address: the carrier trunk Asterisk recognises
    callers: int = 200  # distinct caller numbers, cycled

    def check(self) -> None:
        if not self.number or not all(c.isalnum() or c in "+-_." for c in self.number):
            raise ProfileError(f"--number: {self.number!r} must be digits (or a dialplan extension name)")
        if not 0 < self.rate <= MAX_RATE:
            raise ProfileError(f"--rate: {self.rate:g} must be above 0 and at most {MAX_RATE:g} calls/s")
        if not 0 < self.duration_s <= MAX_DURATION_S:
            raise ProfileError(f"--duration: {self.duration_s:g} must be above 0 and at most {MAX_DURATION_S:g} s")
        if not 0 <= self.ramp_s <= self.duration_s:
            raise ProfileError(f"--ramp: {self.ramp_s:g} must be between 0 and --duration ({self.duration_s:g} s)")
        if self.key and (len(self.key) != 1 or self.key not in KEYS):
            raise ProfileError(f"--key: {self.key!r} must be one of 0-9, * or #, or empty for no choice")
        if self.key_mode not in KEY_MODES:
            raise ProfileError(f"--key-mode: {self.key_mode!r} must be one of {', '.join(KEY_MODES)}")
        if not 0 <= self.key_after_s <= 60:
            raise ProfileError(f"--key-after: {self.key_after_s:g} must be between 0 and 60 s")
        if not 0 <= self.hold_s <= 3600:
            raise ProfileError(f"--hold: {self.hold_s:g} must be between 0 and 3600 s")
        if not 1 <= self.callers <= 1000:
            raise ProfileError(f"--callers: {self.callers} must be between 1 and 1000 (caller_numbers())")
        host, _ = split_hostport("--sip", self.sip_target, 5060)
        require_loopback("--sip", host)
        require_loopback("--trunk-ip", self.trunk_ip)

    @property
    def sip_hostport(self) -> tuple[str, int]:
        return split_hostport("--sip", self.sip_target, 5060)

    def rate_at(self, t: float) -> float:
        """Calls per second asked at `t` seconds into the run: a linear ramp, then steady, then none."""
        if t < 0 or t >= self.duration_s:
            return 0.0
        if self.ramp_s > 0 and t < self.ramp_s:
            return self.rate * t / self.ramp_s
        return self.rate

    def expected_calls(self) -> int:
        """The calls the whole run places: the area under rate_at."""
        return max(1, round(self.rate * (self.duration_s - self.ramp_s / 2)))

    def call_seconds(self) -> float:
        """How long a call that goes as planned lasts after its answer."""
        return (self.key_after_s if self.keys else 0.0) + self.hold_s

    @property
    def keys(self) -> bool:
        """Whether callers answer the menu at all."""
        return bool(self.key) and self.key_mode != "none"

    def rate_steps(self, step_s: float = 0.5) -> list[tuple[float, float]]:
        """(time, rate) changes for SIPp's control socket: the ramp in `step_s` steps (each at its middle's
        rate), then the steady rate; the first is the rate SIPp starts with."""
        if self.ramp_s <= 0:
            return [(0.0, self.rate)]
        steps: list[tuple[float, float]] = []
        t = 0.0
        while t < self.ramp_s:
            rate = self.rate_at(min(t + step_s / 2, self.ramp_s))
            if not steps or steps[-1][1] != rate:
                steps.append((t, round(rate, 3)))
            t += step_s
        steps.append((self.ramp_s, self.rate))
        return steps


def caller_numbers(count: int) -> list[str]:
    """Caller numbers from Ofcom's range for drama (+44 7700 900000-900999): valid, never a subscriber's."""
    if not 1 <= count <= 1000:
        raise ProfileError(f"caller numbers: {count} must be between 1 and 1000")
    return [f"+447700900{i:03d}" for i in range(count)]


@dataclass(frozen=True)
class TextLoad:
    sms_rate: float = 0.0  # new SMS conversations per second (Twilio webhooks)
    whatsapp_rate: float = 0.0  # new WhatsApp conversations per second (Cloud API webhooks)
    chat_rate: float = 0.0  # new web chat visitors per second
    choice: str = ""  # what each customer answers the menu with ("" : they stop after the first reply)
    reply_timeout_s: float = 15.0

    @property
    def any(self) -> bool:
        return self.sms_rate > 0 or self.whatsapp_rate > 0 or self.chat_rate > 0

    def check(self) -> None:
        for name, rate in (("--sms-rate", self.sms_rate), ("--whatsapp-rate", self.whatsapp_rate)):
            if not 0 <= rate <= 100:
                raise ProfileError(f"{name}: {rate:g} must be between 0 and 100 conversations/s")
        if not 0 <= self.chat_rate <= 100:
            raise ProfileError(f"--chat-rate: {self.chat_rate:g} must be between 0 and 100 visitors/s")
        if len(self.choice) > 40:
            raise ProfileError("--chat-choice: at most 40 characters")
        if not 1 <= self.reply_timeout_s <= 120:
            raise ProfileError(f"--reply-timeout: {self.reply_timeout_s:g} must be between 1 and 120 s")


@dataclass(frozen=True)
class Profile:
    voice: VoiceLoad = field(default_factory=VoiceLoad)
    text: TextLoad = field(default_factory=TextLoad)
    agent_talk_s: float | None = None  # agents hang up this long after answering (None: their phones decide)
    settle_s: float = 5.0  # after the run: the centre must be at rest within this
    probe: bool = True  # after the run: one more call must reach an agent
    drain_s: float = 30.0  # calls still up this long after the last one was due are a failure

    def check(self) -> None:
        self.voice.check()
        self.text.check()
        if self.agent_talk_s is not None and not 0 < self.agent_talk_s <= 3600:
            raise ProfileError(f"--agent-talk: {self.agent_talk_s:g} must be above 0 and at most 3600 s")
        if not 0 < self.settle_s <= 120:
            raise ProfileError(f"--settle: {self.settle_s:g} must be above 0 and at most 120 s")
        if not 1 <= self.drain_s <= 600:
            raise ProfileError(f"--drain: {self.drain_s:g} must be between 1 and 600 s")

    def run_seconds(self) -> float:
        """An upper bound on how long the calls take: the last one placed, answered and held, plus drain."""
        return self.voice.duration_s + self.voice.call_seconds() + self.drain_s

    def as_json(self) -> dict[str, Any]:
        return asdict(self)
