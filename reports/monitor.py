"""Keeps the wallboard current on this Hilo node: rebuilds the picture every `refresh_s` seconds and at
once when a call event arrives on `<namespace>:events`, raises and clears queue alerts, pushes a changed
picture to every wallboard page connected here, and keeps today's KPIs for the Prometheus metrics.

Each page subscribes with a filter (reports/wallboard_view.py): the snapshot is built once per tick, then
cut once per distinct filter, and each cut is pushed to its pages when it changed.

Every node runs one; they share nothing but PostgreSQL and Redis (alerts are announced once, see
reports/alerts.py). Agent states change without an event, so the periodic rebuild is what shows them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from hilo.notifier import events_channel
from reports import alerts
from reports.config import KpiConfig
from reports.kpis import GROUPINGS, Contact, Kpis, compute
from reports.service import Reports, rules_of
from reports.wallboard import Wallboard, start_of_day
from reports.wallboard_view import ALL, BoardFilter, Snapshot, view

log = logging.getLogger(__name__)

Viewer = Callable[[str], Awaitable[None]]
Dropped = Callable[[], None]  # told to a viewer the monitor gave up on (its page should be disconnected)

# Events after which the picture is rebuilt at once rather than at the next tick.
WAKING_EVENTS = frozenset(
    {
        "interaction.started",
        "routing.queued",
        "routing.offered",
        "routing.not_answered",
        "routing.timeout",
        "agent.answered",
        "interaction.ended",
        "callback.requested",
    }
)
COALESCE_S = 0.1  # a burst of events makes one rebuild
TODAY_EVERY_S = 15.0  # today's KPIs (for /metrics) are recomputed this often
# A page gets this long to take a picture; one that does not (a stalled socket) is dropped, so it never holds
# up the refresh, the alerts or the other pages for longer. Its page reconnects and gets the current picture.
PUSH_TIMEOUT_S = 5.0


def alert_values(measured: list[alerts.QueueNow]) -> dict[tuple[str, str], float]:
    values: dict[tuple[str, str], float] = {}
    for q in measured:
        values[(q.queue, "waiting")] = q.waiting
        values[(q.queue, "longest_wait")] = round(q.longest_wait_s, 1)
        if q.service_level is not None:
            values[(q.queue, "service_level")] = round(q.service_level * 100, 1)
    return values


class WallboardMonitor:
    def __init__(self, wallboard: Wallboard, reports: Reports, redis: aioredis.Redis, namespace: str) -> None:
        self.wallboard = wallboard
        self.reports = reports
        self.redis = redis
        self.channel = events_channel(namespace)
        self.latest: dict[str, Any] | None = None  # the unfiltered picture (API, metrics)
        self.snapshot: Snapshot | None = None
        self.today: dict[str, dict[str, Kpis]] = {}  # grouping -> group ("" for none) -> figures
        self._viewers: dict[Viewer, BoardFilter] = {}
        self._on_drop: dict[Viewer, Dropped] = {}
        self._shown: dict[str, str] = {}  # filter key -> the last picture pushed for it, without its time
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._today_at = 0.0
        self._latest_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def config(self) -> KpiConfig:
        return self.wallboard.config

    def set_config(self, config: KpiConfig) -> None:
        self.wallboard.config = config
        self.reports.config = config
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="wallboard-refresh"),
            asyncio.create_task(self._follow(), name="wallboard-events"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- viewers -----------------------------------------------------------------------------------
    async def add_viewer(self, viewer: Viewer, subscription: BoardFilter = ALL, on_drop: Dropped | None = None) -> None:
        """A page connected: it gets the current picture through its filter now, then every change. A page
        that fails to take a picture within PUSH_TIMEOUT_S is dropped, and `on_drop` called."""
        # Added first, so no change is missed in between; the page may get one picture twice.
        self._viewers[viewer] = subscription
        if on_drop is not None:
            self._on_drop[viewer] = on_drop
        if self.snapshot is None:
            await self.refresh()
        if self.snapshot is not None:
            picture = view(self.snapshot, subscription)
            self._shown.setdefault(subscription.key, _without_time(picture))
            await self._send(viewer, json.dumps(picture))

    def remove_viewer(self, viewer: Viewer) -> None:
        self._on_drop.pop(viewer, None)
        gone = self._viewers.pop(viewer, None)
        if gone is not None and gone not in self._viewers.values():
            self._shown.pop(gone.key, None)

    # -- the work ----------------------------------------------------------------------------------
    async def current(self) -> dict[str, Any]:
        """The picture, rebuilt only if older than the refresh period (API polling costs no more)."""
        loop = asyncio.get_running_loop()
        if self.latest is not None and loop.time() - self._latest_at < self.config.refresh_s:
            return self.latest
        return await self.refresh()

    async def current_for(self, subscription: BoardFilter) -> dict[str, Any]:
        """`current()` cut to one subscription."""
        picture = await self.current()
        return picture if subscription == ALL or self.snapshot is None else view(self.snapshot, subscription)

    async def refresh(self) -> dict[str, Any]:
        """Rebuild the picture, settle the alerts, push the picture if it changed."""
        async with self._lock:
            snapshot, measured = await self.wallboard.build()
            found = [b for q in measured for b in alerts.breaches(q, self.config.thresholds_of(q.queue))]
            await alerts.reconcile(self.reports.pool, found, alert_values(measured))
            open_now = await alerts.open_alerts(self.reports.pool)
            snapshot.alerts = [a.as_dict() for a in open_now]
            self.snapshot = snapshot
            picture = view(snapshot, ALL)
            self.latest = picture
            self._latest_at = asyncio.get_running_loop().time()
            await self._push(snapshot)
            return picture

    async def _push(self, snapshot: Snapshot) -> None:
        """Each distinct subscription is cut once, and sent to its pages if it changed: to every page at
        once, each given PUSH_TIMEOUT_S, so the slowest page bounds the push, not the sum of them."""
        by_key: dict[str, list[Viewer]] = defaultdict(list)
        filters: dict[str, BoardFilter] = {}
        for viewer, subscription in list(self._viewers.items()):
            by_key[subscription.key].append(viewer)
            filters[subscription.key] = subscription
        sends: list[Awaitable[None]] = []
        for key, viewers in by_key.items():
            picture = view(snapshot, filters[key])
            shown = _without_time(picture)
            if shown == self._shown.get(key):
                continue
            self._shown[key] = shown
            text = json.dumps(picture)
            sends.extend(self._send(viewer, text) for viewer in viewers)
        if sends:
            await asyncio.gather(*sends)

    async def _send(self, viewer: Viewer, text: str) -> None:
        """One picture to one page; a page that fails or is too slow is dropped (never raises)."""
        try:
            await asyncio.wait_for(viewer(text), PUSH_TIMEOUT_S)
        except Exception as exc:  # a page gone away, or stalled (TimeoutError)
            if isinstance(exc, TimeoutError):
                log.warning("wallboard: a page took more than %ss to take the picture: dropped", PUSH_TIMEOUT_S)
            on_drop = self._on_drop.get(viewer)
            self.remove_viewer(viewer)
            if on_drop is not None:
                try:
                    on_drop()
                except Exception:
                    log.exception("wallboard: closing a dropped page failed")

    async def refresh_today(self) -> None:
        """Today's figures (since midnight in the configured zone) for every grouping, for /metrics."""
        now = datetime.now(UTC)
        contacts, after = await self.reports.contacts_with_followups(start_of_day(now, self.config), now, now)
        rules = rules_of(self.config)
        today: dict[str, dict[str, Kpis]] = {}
        for name, grouping in GROUPINGS.items():
            groups: dict[str, list[Contact]] = defaultdict(list)
            for contact in contacts:
                key = grouping.key(contact)
                if name == "none" or key is not None:
                    groups[key or ""].append(contact)
            today[name] = {key: compute(members, rules, after) for key, members in groups.items()}
        self.today = today

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            try:
                await self.refresh()
                if loop.time() - self._today_at >= TODAY_EVERY_S:
                    await self.refresh_today()
                    self._today_at = loop.time()
            except Exception as exc:  # PostgreSQL or Redis away for a moment must not end the wallboard
                log.warning("wallboard: cannot refresh (%s: %s)", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.refresh_s)
                await asyncio.sleep(COALESCE_S)

    async def _follow(self) -> None:
        backoff = 0.5
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                backoff = 0.5
                async for message in pubsub.listen():
                    if message["type"] != "message":
                        continue
                    with contextlib.suppress(ValueError, TypeError, AttributeError):
                        if json.loads(message["data"]).get("type") in WAKING_EVENTS:
                            self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("wallboard: event feed lost (%s); the periodic refresh goes on", type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


def _without_time(picture: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in picture.items() if k != "at"}, sort_keys=True)


WALLBOARD = web.AppKey("wallboard", WallboardMonitor)
