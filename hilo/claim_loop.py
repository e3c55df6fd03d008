"""The loop every durable work queue in PostgreSQL shares (the messaging inbox and outbox, webhook
deliveries, recording transcripts): claim due rows (a lease written with `FOR UPDATE SKIP LOCKED`, so
nodes share the work), work on them a few at a time, and sleep until a NOTIFY on `channel`, the next due
time or `poll_s` (a missed notification only delays). The retry delay after a failure is `backoff`."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import random
from typing import Generic, TypeVar

import asyncpg

log = logging.getLogger(__name__)
T = TypeVar("T")


class ClaimLoop(abc.ABC, Generic[T]):
    """Subclasses say how to claim, work on and time their own rows; the loop is the same for all."""

    name = "worker"

    def __init__(self, dsn: str | None, channel: str, *, concurrency: int, poll_s: float) -> None:
        self.dsn = dsn
        self.channel = channel
        self.concurrency = concurrency
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self._busy: set[asyncio.Task[None]] = set()
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    @abc.abstractmethod
    async def _claim(self, limit: int) -> list[T]:
        """Lease up to `limit` due items."""

    @abc.abstractmethod
    async def _work(self, item: T) -> None:
        """Do one claimed item; an exception is logged and the item's own retry rules apply."""

    @abc.abstractmethod
    async def _seconds_to_next_due(self) -> float | None:
        """Seconds until the next item falls due (<= 0: due now), None when nothing is waiting."""

    async def _idle(self) -> None:
        """Called when a pass claimed nothing: housekeeping (pruning old rows) goes here."""

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        self._wake.set()

    async def seconds_to_next_due(self) -> float:
        """How long the loop sleeps now if nothing wakes it (at most `poll_s`)."""
        due = await self._seconds_to_next_due()
        return self.poll_s if due is None else min(self.poll_s, max(0.0, due) + 0.005)

    async def start(self) -> None:
        if self.running:
            return
        await self._listen()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Stop claiming and cancel the work in hand: what was cut short keeps its lease and is taken up
        again when the lease runs out (by this node restarted or another one)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._busy):
            task.cancel()
        await asyncio.gather(*self._busy, return_exceptions=True)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None

    async def _listen(self) -> None:
        if self.dsn is None:
            return
        try:
            self._listener = await asyncpg.connect(self.dsn)
            await self._listener.add_listener(self.channel, lambda *_: self._wake.set())
        except (OSError, asyncpg.PostgresError) as exc:
            self._listener = None
            log.warning("%s: cannot LISTEN (%s); polling every %ss", self.name, exc, self.poll_s)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                if self.dsn is not None and (self._listener is None or self._listener.is_closed()):
                    await self._listen()
                free = self.concurrency - len(self._busy)
                claimed = await self._claim(free) if free > 0 else []
                for item in claimed:
                    task = asyncio.create_task(self._work(item), name=f"{self.name}-item")
                    self._busy.add(task)
                    task.add_done_callback(self._task_done)
                if claimed:
                    continue  # there may be more due
                await self._idle()
                # At capacity, a finishing task wakes the loop; otherwise the next due time does.
                wait = await self.seconds_to_next_due() if free > 0 else self.poll_s
            except Exception as exc:  # the database away for a while must not end the loop
                log.warning("%s: cannot claim work (%s: %s); retrying", self.name, type(exc).__name__, exc)
                wait = self.poll_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._busy.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: task failed", self.name, exc_info=task.exception())
        self._wake.set()  # a slot is free, and the next item may be due


def backoff(base_s: float, max_s: float, attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones: exponential, capped, jittered (half to all,
    so the receivers or providers coming back are not hit by every node at once)."""
    full = min(max_s, base_s * 2.0 ** max(0, attempts - 1))
    return full / 2 + random.uniform(0, full / 2)
