"""SIPp callers for stack tests: one scenario of tests/sipp/, one call, from a chosen loopback address (the
carrier trunk's 127.0.0.3, or an address Asterisk knows nothing of), with its output kept for the
failure message."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

from hilo.settings import REPO_ROOT
from tests.stack.conftest import Stack

SCENARIOS = REPO_ROOT / "tests" / "sipp"
CARRIER_TEST = "127.0.0.3"  # Asterisk's carrier-test trunk (pjsip.conf): its calls go to the Stasis app hilo-test


@dataclass
class SippCall:
    process: asyncio.subprocess.Process

    async def finished(self, within: float) -> tuple[int, str]:
        """SIPp's exit status and the end of its output, once the scenario is over (bounded)."""
        output, _ = await asyncio.wait_for(self.process.communicate(), within)
        assert self.process.returncode is not None
        return self.process.returncode, output.decode(errors="replace")[-3000:]

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def start_sipp(
    stack: Stack,
    scenario: str,
    *,
    service: str,
    address: str = CARRIER_TEST,
    variables: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: int = 60,
) -> SippCall:
    """One call of tests/sipp/<scenario> to `service` from `address` (SIP on any free port of it, media on its
    port 6000, SIPp's default).
    `cwd`: the working folder (where a scenario finds the pcap it plays)."""
    assert shutil.which("sipp"), "SIPp (Debian package sip-tester) is needed; `make stack` installs it"
    settings = stack.settings
    args = [
        f"{settings.sip_host}:{settings.sip_port}",
        "-sf", str(SCENARIOS / scenario),
        "-i", address,
        "-p", "0",
        "-ci", address,  # SIPp's control socket, else on all addresses
        "-s", service,
        "-m", "1",
        "-timeout", f"{timeout_s}s",
        "-timeout_error",
        "-nostdin",
    ]  # fmt: skip
    for name, value in (variables or {}).items():
        args += ["-set", name, value]
    process = await asyncio.create_subprocess_exec(
        "sipp", *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    return SippCall(process)
