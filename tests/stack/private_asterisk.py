"""A private Asterisk for one test, for configurations the shared one must not load (the production profile's
TLS transport): the stack's own Asterisk 22 binaries, from its chroot, started through the chroot's dynamic
loader (so nothing is installed on the host, no chroot or mount is needed, and the shared Asterisk is not
touched), on a configuration folder of the test's own, listening only on an address of its own. It loads only
the modules it is given, and dies with the test process."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path

from tests.stack.expect import eventually

PR_SET_PDEATHSIG = 1
LIB = "usr/lib/x86_64-linux-gnu"


def free_port(address: str) -> int:
    """A port free on `address` for both UDP and TCP (SIP's transports share one number)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((address, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((address, port))
                except OSError:
                    continue
            return port
    raise AssertionError(f"no port free for UDP and TCP on {address}")


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class PrivateAsterisk:
    root: Path  # the stack's Asterisk chroot (HILO_ASTERISK_ROOT)
    folder: Path  # the test's own: etc/ (its configuration), and Asterisk's run, spool, log and lib folders
    modules: list[str]
    process: asyncio.subprocess.Process | None = None
    etc: Path = field(init=False)

    def __post_init__(self) -> None:
        self.etc = self.folder / "etc"

    @property
    def available(self) -> str | None:
        """Why it cannot run here, or None."""
        for path in ("usr/sbin/asterisk", "usr/lib64/ld-linux-x86-64.so.2", f"{LIB}/asterisk/modules/res_pjsip.so"):
            if not (self.root / path).exists():
                return f"{self.root / path} is missing (the stack's Asterisk chroot, `make stack`)"
        return None

    def command(self, *args: str) -> list[str]:
        libraries = f"{self.root / LIB}:{self.root / 'usr/lib'}"
        loader = self.root / "usr/lib64/ld-linux-x86-64.so.2"
        return [str(loader), "--library-path", libraries, str(self.root / "usr/sbin/asterisk"), *args]

    def configure(self, files: dict[str, str]) -> None:
        """asterisk.conf (every folder inside `folder`, modules from the chroot), modules.conf (only
        `modules`), a logger, and the given files (name -> text)."""
        for sub in ("etc", "lib", "spool", "run", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        directories = {
            "astcachedir": "lib",
            "astetcdir": "etc",
            "astvarlibdir": "lib",
            "astdbdir": "lib",
            "astkeydir": "lib",
            "astagidir": "lib",
            "astspooldir": "spool",
            "astrundir": "run",
            "astlogdir": "log",
        }
        lines = ["[directories]", *(f"{k} => {self.folder / v}" for k, v in directories.items())]
        lines += [
            f"astmoddir => {self.root / LIB / 'asterisk/modules'}",
            f"astdatadir => {self.root / 'usr/share/asterisk'}",
            f"astsbindir => {self.root / 'usr/sbin'}",
            "[options]",
        ]
        (self.etc / "asterisk.conf").write_text("\n".join(lines) + "\n")
        load = "\n".join(f"load => {m}" for m in self.modules)
        (self.etc / "modules.conf").write_text(f"[modules]\nautoload=no\n{load}\n")
        (self.etc / "logger.conf").write_text("[general]\n[logfiles]\nmessages => notice,warning,error\n")
        for name, text in files.items():
            (self.etc / name).write_text(text)

    async def rx(self, command: str, within: float = 10.0) -> tuple[int, str]:
        """A CLI command through the control socket: (exit status, output)."""
        proc = await asyncio.create_subprocess_exec(
            *self.command("-C", str(self.etc / "asterisk.conf"), "-rx", command),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), within)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        return proc.returncode or 0, out.decode(errors="replace")

    async def start(self, within: float = 20.0) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.command("-C", str(self.etc / "asterisk.conf"), "-f", "-n"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )

        async def booted() -> bool:
            assert self.process is not None
            if self.process.returncode is not None:
                raise AssertionError(f"Asterisk exited ({self.process.returncode}): {self.log()[-2000:]}")
            status, out = await self.rx("core waitfullybooted", within=within)
            return status == 0 and "fully booted" in out.lower()

        await eventually(booted, within=within, what=f"the private Asterisk fully booted ({self.log()[-500:]})")

    def log(self) -> str:
        path = self.folder / "log" / "messages"
        return path.read_text(errors="replace") if path.exists() else ""

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
