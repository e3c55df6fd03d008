"""The plain-dialplan comparison line of bench/capacity.py: extension `bench-plain` on the trunks, context
`hilo-bench-plain` (asterisk/etc/extensions.conf), answering only while the global HILO_BENCH_PLAIN is 1.

`plain_line` turns it on for the benchmark's run and off afterwards. An Asterisk started from a configuration
older than these contexts gets the shipped lines added to its running dialplan for the run (AMI
DialplanExtensionAdd: memory only, nothing written) and removed afterwards, so the benchmark measures the
same menu on the Asterisk that is running, without reloading anyone's dialplan."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asterisk.ami import AmiClient
from hilo.settings import REPO_ROOT
from server.loadtest.rest import Ari

EXTENSIONS = REPO_ROOT / "asterisk" / "etc" / "extensions.conf"
CONTEXTS = ("hilo-bench", "hilo-bench-plain")
NUMBER = "bench-plain"
GATE = "HILO_BENCH_PLAIN"
_SECTION = re.compile(r"^\[([^\]]+)\]", re.M)
_EXTEN = re.compile(r"^exten\s*=>\s*([^,]+),(\d+),([A-Za-z]+)\((.*)\)\s*$")


@dataclass(frozen=True)
class Line:
    context: str
    extension: str
    priority: int
    application: str
    data: str


def shipped_lines(text: str, contexts: tuple[str, ...] = CONTEXTS) -> list[Line]:
    """The `exten =>` lines of `contexts` in extensions.conf (numbered priorities only, as shipped)."""
    lines: list[Line] = []
    parts = _SECTION.split(text)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name not in contexts:
            continue
        for raw in body.splitlines():
            match = _EXTEN.match(raw.strip())
            if match:
                extension, priority, application, data = match.groups()
                lines.append(Line(name, extension, int(priority), application, data))
            elif raw.strip() and not raw.strip().startswith(";"):
                raise ValueError(f"{EXTENSIONS.name} [{name}]: cannot add {raw.strip()!r} over AMI")
    return lines


def _ok(reply: Any) -> bool:
    first = reply[0] if isinstance(reply, list) and reply else reply
    return str(first.get("Response", "")).lower() == "success"


async def _has(ami: AmiClient, context: str, extension: str) -> bool:
    """Whether `extension` matches in `context` (its includes followed): an empty or missing context does
    not (ShowDialPlan answers an error, not a list)."""
    reply = await ami.action({"Action": "ShowDialPlan", "Context": context, "Extension": extension})
    return isinstance(reply, list) and any(m.get("Event") == "ListDialplan" for m in reply)


async def _add(ami: AmiClient, line: Line) -> None:
    reply = await ami.action(
        {
            "Action": "DialplanExtensionAdd",
            "Context": line.context,
            "Extension": line.extension,
            "Priority": str(line.priority),
            "Application": line.application,
            "ApplicationData": line.data,
            "Replace": "yes",
        }
    )
    if not _ok(reply):
        raise RuntimeError(f"AMI DialplanExtensionAdd {line} refused: {dict(reply)}")


@contextlib.asynccontextmanager
async def plain_line(ami: AmiClient, ari: Ari, path: Path = EXTENSIONS) -> AsyncIterator[list[Line]]:
    """The comparison line answering for the duration; yields the lines added at run time (none when the
    running dialplan has them already)."""
    added: list[Line] = []
    try:
        shipped = shipped_lines(await asyncio.to_thread(path.read_text))
        wanted = []
        if not await _has(ami, "hilo-bench-plain", "s"):
            wanted += [line for line in shipped if line.context == "hilo-bench-plain"]
        if not await _has(ami, "hilo-bench", NUMBER):
            wanted += [line for line in shipped if line.context == "hilo-bench"]
        if not await _has(ami, "hilo-inbound", NUMBER):
            # hilo-inbound's include of hilo-bench cannot be added over AMI: the extension goes into
            # hilo-inbound itself (it is no number, so it shadows none)
            wanted.append(Line("hilo-inbound", NUMBER, 1, "Goto", f"hilo-bench,{NUMBER},1"))
        for line in wanted:
            await _add(ami, line)
            added.append(line)
        await ari.set_global(GATE, "1")
        yield added
    finally:
        with contextlib.suppress(Exception):
            await ari.set_global(GATE, "0")
        for line in reversed(added):
            with contextlib.suppress(Exception):
                await ami.action(
                    {
                        "Action": "DialplanExtensionRemove",
                        "Context": line.context,
                        "Extension": line.extension,
                        "Priority": str(line.priority),
                    }
                )
