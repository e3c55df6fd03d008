"""A context of this tree's `asterisk/etc/extensions.conf` put into the running Asterisk through AMI, for the
length of a test: the shared stack's Asterisk runs the dialplan it was started with, and a test of a new
context must not reload it (other tests' calls run through it). Priority labels become numbers (AMI's
DialplanExtensionAdd takes numbers only), and so do the labels GotoIf jumps to."""

from __future__ import annotations

import re
from pathlib import Path

from asterisk.ami import AmiClient

EXTENSIONS_CONF = Path(__file__).resolve().parents[2] / "asterisk" / "etc" / "extensions.conf"
_LINE = re.compile(r"^\s*(?:exten\s*=>\s*([^,]+),1|same\s*=>\s*n(?:\((\w+)\))?),(\w+)\((.*)\)\s*$")


def context_lines(name: str, text: str | None = None) -> list[tuple[str, int, str, str]]:
    """(extension, priority, application, data) of every line of context `name`."""
    text = EXTENSIONS_CONF.read_text() if text is None else text
    section = text.split(f"[{name}]\n", 1)[1].split("\n[", 1)[0]
    rows: list[tuple[str, int, str, str]] = []
    labels: dict[str, int] = {}
    exten, priority = "", 0
    for line in section.splitlines():
        match = _LINE.match(re.sub(r"\s+;.*$", "", line))  # without its comment
        if match is None:
            continue
        if match.group(1) is not None:
            exten, priority = match.group(1).strip(), 1
        else:
            priority += 1
        if match.group(2):
            labels[match.group(2)] = priority
        rows.append((exten, priority, match.group(3), match.group(4)))
    jump = re.compile(r"([?:])(\w+)(?=:\w+$|$)")
    return [
        (
            e,
            p,
            app,
            jump.sub(lambda m: m.group(1) + str(labels.get(m.group(2), m.group(2))), data) if app == "GotoIf" else data,
        )
        for e, p, app, data in rows
    ]


async def add_context(ami: AmiClient, name: str, text: str | None = None) -> None:
    for exten, priority, app, data in context_lines(name, text):
        reply = await ami.action(
            {
                "Action": "DialplanExtensionAdd",
                "Context": name,
                "Extension": exten,
                "Priority": str(priority),
                "Application": app,
                "ApplicationData": data,
                "Replace": "yes",
            }
        )
        if str(getattr(reply, "success", "")) == "False" or "error" in str(reply).lower():
            raise RuntimeError(f"Asterisk did not add {name},{exten},{priority}: {reply}")


async def remove_context(ami: AmiClient, name: str, text: str | None = None) -> None:
    for exten, priority, _, _ in context_lines(name, text):
        await ami.action(
            {"Action": "DialplanExtensionRemove", "Context": name, "Extension": exten, "Priority": str(priority)}
        )
