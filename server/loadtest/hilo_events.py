"""Queue figures from Hilo's own events (Redis pub/sub `<namespace>:events`, what consoles and wallboards
read): when each interaction of the run was queued, answered by an agent or abandoned, and so the queue
waits and the service level.

A run's interactions are those started during it on the numbers (or messaging addresses) it dialled: run
it on a line no real customer uses meanwhile. The service level is the share of queued contacts answered
within their queue's threshold (routing.yaml `sla.within_s`) among those answered or abandoned."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from hilo.notifier import events_channel
from server.loadtest.stats import per_second, summary

log = logging.getLogger(__name__)


def _epoch(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


@dataclass
class Interaction:
    id: str
    channel: str = ""
    dialed: str | None = None
    channel_ref: str | None = None  # the caller's channel in Asterisk (voice)
    started: float | None = None
    queue: str | None = None
    queued: float | None = None
    answered: float | None = None
    agent: str | None = None
    ended: float | None = None
    outcome: str | None = None


@dataclass
class HiloEvents:
    interactions: dict[str, Interaction] = field(default_factory=dict)
    events: int = 0
    listeners: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)

    def add(self, event: dict[str, Any]) -> None:
        self.events += 1
        iid = event.get("interaction_id")
        at = _epoch(event.get("at"))
        if not iid or at is None:
            return
        item = self.interactions.setdefault(iid, Interaction(iid))
        item.channel = event.get("channel") or item.channel
        data = event.get("data") or {}
        kind = event.get("type")
        if kind == "interaction.started":
            item.started, item.dialed, item.channel_ref = at, data.get("dialed"), data.get("channel_ref")
        elif kind == "routing.queued" and item.queued is None:
            item.queued, item.queue = at, data.get("queue")
        elif kind == "agent.answered" and item.answered is None:
            item.answered, item.agent = at, data.get("agent")
        elif kind == "interaction.ended":
            item.ended, item.outcome = at, data.get("outcome")
        for listener in self.listeners:
            listener(event)

    def ours(self, dialed: set[str], since: float, until: float | None = None) -> list[Interaction]:
        """Interactions started on `dialed` between `since` (less a second: clocks) and `until`."""
        return [
            i
            for i in self.interactions.values()
            if i.started is not None
            and i.started >= since - 1
            and (until is None or i.started <= until)
            and i.dialed in dialed
        ]


def queue_figures(items: list[Interaction], sla_s: dict[str, float], start: float, seconds: int) -> dict[str, Any]:
    """Queued, answered by an agent, abandoned in the queue, waits and service level of `items`."""
    queued = [i for i in items if i.queued is not None]
    answered = [i for i in queued if i.answered is not None]
    abandoned = [i for i in queued if i.answered is None and i.ended is not None]
    waits = [i.answered - i.queued for i in answered if i.answered is not None and i.queued is not None]
    abandon_waits = [i.ended - i.queued for i in abandoned if i.ended is not None and i.queued is not None]

    def within(i: Interaction) -> bool:
        assert i.answered is not None and i.queued is not None
        return i.answered - i.queued <= sla_s.get(i.queue or "", 20.0)

    # the service level as it stood at the end of each second (cumulative over the run)
    settled = sorted(
        [(i.answered, within(i)) for i in answered if i.answered is not None]
        + [(i.ended, False) for i in abandoned if i.ended is not None]
    )
    level: list[float | None] = []
    good = total = 0
    k = 0
    for second in range(max(1, seconds)):
        edge = start + second + 1
        while k < len(settled) and settled[k][0] <= edge:
            total += 1
            good += settled[k][1]
            k += 1
        level.append(round(100 * good / total, 1) if total else None)
    outcomes: dict[str, int] = {}
    for i in items:
        if i.outcome:
            outcomes[i.outcome] = outcomes.get(i.outcome, 0) + 1
    in_sla = sum(within(i) for i in answered)
    settled_n = len(answered) + len(abandoned)
    return {
        "started": len(items),
        "queued": len(queued),
        "answered_by_agent": len(answered),
        "abandoned_in_queue": len(abandoned),
        "still_waiting": len(queued) - len(answered) - len(abandoned),
        "outcomes": outcomes,
        "queue_wait_s": summary(waits, 2),
        "abandoned_after_s": summary(abandon_waits, 2),
        "service_level_pct": round(100 * in_sla / settled_n, 1) if settled_n else None,
        "service_level_thresholds_s": {q: sla_s.get(q, 20.0) for q in sorted({i.queue or "" for i in queued})},
        "per_second": {
            "queued": per_second([i.queued for i in queued if i.queued], start, seconds),
            "agent_answered": per_second([i.answered for i in answered if i.answered], start, seconds),
            "abandoned": per_second([i.ended for i in abandoned if i.ended], start, seconds),
            "service_level_pct": level,
        },
        "waits": [
            [round(i.answered - start, 2), round(i.answered - i.queued, 3)]  # type: ignore[operator]
            for i in answered
        ],
    }


class EventFollower:
    """Subscribes to Hilo's events for the run; `ready` once subscribed."""

    def __init__(self, redis_url: str, namespace: str, sink: HiloEvents) -> None:
        self.redis = aioredis.from_url(redis_url)
        self.channel = events_channel(namespace)
        self.sink = sink
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 5.0) -> None:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), timeout)

    async def _run(self) -> None:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            self.ready.set()
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                try:
                    self.sink.add(json.loads(message["data"]))
                except (ValueError, TypeError):
                    log.debug("not an event: %r", message.get("data"))
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.redis.aclose()
