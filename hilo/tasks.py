"""Stopping background tasks for sure."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def cancel_until_done(tasks: Iterable[asyncio.Task[object]], recancel_s: float = 1.0) -> None:
    """Cancels `tasks` and waits for them to end, cancelling again every `recancel_s` those still running.

    One cancel is not always enough: a cancellation can be swallowed on its way (Python 3.11's `wait_for`
    loses it when the awaited call completes at the same moment), and a loop that swallowed it sleeps on as
    if nothing had been asked, holding up a shutdown for ever."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=recancel_s)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved here: a task that failed earlier has logged its failure itself
