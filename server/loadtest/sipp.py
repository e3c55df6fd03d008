"""Running SIPp for a load run: its command line, its control socket (the rate is changed while it runs, and
`q` stops new calls), its per-call log (read as it is written) and its statistics file (-trace_stat)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import re
import shutil
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path

from server.loadtest.profile import ProfileError, VoiceLoad
from server.loadtest.scenario import LOG_TAG, caller_scenario, injection_file

SIPP = "sipp"


@dataclass(frozen=True)
class LogEvent:
    step: str  # I, A, K, R, E, X (scenario.py)
    call_id: str
    at: float  # epoch seconds, SIPp's clock (the machine's)
    extra: tuple[str, ...] = ()


def parse_log_line(line: str) -> LogEvent | None:
    """One line of the scenario's log, or None for anything else SIPp writes there."""
    parts = line.rstrip("\r\n").split("|")
    if len(parts) < 4 or parts[0] != LOG_TAG:
        return None
    stamp = parts[3].split("\t")[-1].strip()  # [timestamp] is "date TAB time TAB epoch"
    try:
        at = float(stamp)
    except ValueError:
        return None
    return LogEvent(parts[1], parts[2], at, tuple(parts[4:]))


class LogTail:
    """The events of a log file as it grows (complete lines only); the file is kept open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: io.TextIOWrapper | None = None
        self._partial = ""

    def read(self) -> list[LogEvent]:
        if self._file is None:
            try:
                self._file = self.path.open("r", encoding="latin-1")
            except FileNotFoundError:
                return []
        text = self._partial + self._file.read()
        lines = text.split("\n")
        self._partial = lines.pop()
        return [e for e in (parse_log_line(line) for line in lines) if e is not None]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def parse_stat_csv(text: str) -> list[dict[str, str]]:
    """SIPp's -trace_stat file: a header row and one row per period, `;`-separated."""
    rows = list(csv.reader(io.StringIO(text), delimiter=";"))
    if not rows:
        return []
    header = [h.strip() for h in rows[0]]
    return [dict(zip(header, (v.strip() for v in row), strict=False)) for row in rows[1:] if any(row)]


def stat_failures(row: dict[str, str]) -> dict[str, int]:
    """The cumulative failure counts of a statistics row by SIPp's reason (FailedCall(C) is their total)."""
    failures = {}
    for key, value in row.items():
        if key.startswith("Failed") and key.endswith("(C)") and key != "FailedCall(C)":
            with contextlib.suppress(ValueError):
                if int(value):
                    failures[key[len("Failed") : -len("(C)")]] = int(value)
    return failures


def sipp_duration_ms(value: str) -> float | None:
    """SIPp's "HH:MM:SS:microseconds" (its statistics' times) in milliseconds."""
    parts = value.split(":")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return None
    h, m, s, us = (int(p) for p in parts)
    return ((h * 60 + m) * 60 + s) * 1000 + us / 1000


def stat_int(row: dict[str, str], key: str) -> int:
    try:
        return int(row.get(key, "0") or 0)
    except ValueError:
        return 0


def free_udp_port(host: str, pair: bool = False) -> int:
    """A free UDP port on `host` (with `pair`, the next-but-one is free too: SIPp binds media and video)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if not pair:
            return port
        if port > 65533:
            continue
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
            ):
                a.bind((host, port))
                b.bind((host, port + 2))
        except OSError:
            continue
        return port
    raise OSError(f"no free UDP port pair on {host}")


@dataclass
class SippRun:
    """One SIPp caller process. Files go into `folder` (kept with the report)."""

    voice: VoiceLoad
    folder: Path
    rtp: tuple[str, int]
    numbers: list[str]
    calls: int
    name: str = "callers"
    process: asyncio.subprocess.Process | None = None
    control: tuple[str, int] = ("127.0.0.1", 0)
    started_at: float = 0.0
    killed: bool = False
    _sock: socket.socket | None = field(default=None, repr=False)

    @property
    def log_file(self) -> Path:
        return self.folder / f"{self.name}-events.log"

    @property
    def stat_file(self) -> Path:
        return self.folder / f"{self.name}-stat.csv"

    @property
    def error_file(self) -> Path:
        return self.folder / f"{self.name}-errors.log"

    def command(self) -> list[str]:
        host, port = self.voice.sip_hostport
        call_s = self.voice.call_seconds()
        limit = max(50, int(self.voice.rate * (call_s + 30) * 2))
        return [
            SIPP,
            f"{host}:{port}",
            "-sf", str(self.folder / f"{self.name}.xml"),
            "-inf", str(self.folder / f"{self.name}.csv"),
            "-s", self.voice.number,
            "-i", self.voice.trunk_ip,
            "-p", "0",
            "-mi", self.voice.trunk_ip,
            "-mp", str(free_udp_port(self.voice.trunk_ip, pair=True)),
            "-ci", self.control[0],
            "-cp", str(self.control[1]),
            "-r", f"{self.voice.rate_steps()[0][1]:g}",
            "-rp", "1000",
            "-m", str(self.calls),
            "-l", str(limit),
            "-recv_timeout", "40000",  # no answer in 40 s: the call fails instead of waiting for ever
            "-aa",
            "-nostdin",
            "-trace_logs", "-log_file", str(self.log_file),
            "-trace_stat", "-stf", str(self.stat_file), "-fd", "1",
            "-trace_err", "-error_file", str(self.error_file),
        ]  # fmt: skip

    async def start(self) -> None:
        if shutil.which(SIPP) is None:
            raise ProfileError("sipp is not installed (Debian package sip-tester)")
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{self.name}.xml").write_text(caller_scenario(self.voice, *self.rtp))
        (self.folder / f"{self.name}.csv").write_text(injection_file(self.numbers))
        self.control = (self.voice.trunk_ip, free_udp_port(self.voice.trunk_ip))
        out = (self.folder / f"{self.name}-sipp.out").open("wb")
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.command(), stdout=out, stderr=asyncio.subprocess.STDOUT, cwd=self.folder
            )
        finally:
            out.close()
        self.started_at = asyncio.get_running_loop().time()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def _send(self, command: str) -> None:
        if self._sock is not None and self.running:
            with contextlib.suppress(OSError):
                self._sock.sendto(command.encode(), self.control)

    def set_rate(self, rate: float) -> None:
        self._send(f"cset rate {rate:g}")

    def stop_new_calls(self) -> None:
        """SIPp's soft exit: no new call; it exits once the calls under way end."""
        self._send("q")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def wait(self, timeout: float) -> int | None:
        if self.process is None:
            return None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self.process.wait(), timeout)
        return None

    async def stop(self, grace_s: float = 3.0) -> int | None:
        """End SIPp for good: its soft exit (no new call; it leaves when its calls end) for `grace_s`, then
        SIGTERM, then SIGKILL. Killed, its calls are left up in Asterisk: `killed` says so."""
        if self.process is None:
            return None
        if self.running:
            self.stop_new_calls()
            if await self.wait(grace_s) is None and self.running:
                self.killed = True
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(signal.SIGTERM)
                if await self.wait(3) is None and self.running:
                    with contextlib.suppress(ProcessLookupError):
                        self.process.kill()
                    await self.process.wait()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        return self.process.returncode

    def stats(self) -> list[dict[str, str]]:
        try:
            return parse_stat_csv(self.stat_file.read_text(encoding="latin-1"))
        except FileNotFoundError:
            return []

    def errors_tail(self, count: int = 5) -> list[str]:
        """SIPp's last reports of trouble (its notes on receive timeouts with a label to go to, which the
        scenario uses on purpose, left out)."""
        try:
            text = self.error_file.read_text(encoding="latin-1")
        except FileNotFoundError:
            return []
        entries = [e.strip() for e in _ENTRY.split(text) if e.strip()]
        return [e[:400] for e in entries if "jumping to label" not in e and "events occurred" not in e][-count:]


_ENTRY = re.compile(r"(?=\d{4}-\d\d-\d\d\t\d\d:\d\d:\d\d\.\d+\t)")
