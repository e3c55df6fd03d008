"""The DTMF menu: prompt, read one digit, retry on a wrong or missing key, give up after `retries`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from dialplans.models import Menu

Record = Callable[[str, dict[str, Any]], Awaitable[object]]


class MenuSession(Protocol):
    """What a menu needs from the channel: a voice call today, a text chat later."""

    async def say(self, text: str, *, interruptible: bool = True) -> None: ...

    async def read_digit(self, timeout: float) -> str | None: ...


async def run_menu(session: MenuSession, menu: Menu, record: Record) -> str | None:
    """Return the chosen option's target, or None when the caller never made a valid choice."""
    for attempt in range(1, menu.retries + 1):
        await record("ivr.menu", {"attempt": attempt, "options": sorted(menu.options)})
        await session.say(menu.prompt)
        digit = await session.read_digit(menu.timeout_s)
        if digit is None:
            await record("ivr.no_input", {"attempt": attempt})
            await session.say(menu.no_input)
            continue
        target = menu.options.get(digit)
        await record("ivr.input", {"digit": digit, "valid": target is not None, "attempt": attempt})
        if target is not None:
            return target
        await session.say(menu.invalid)
    return None
