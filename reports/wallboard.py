"""The wallboard's picture of now: per queue (waiting, longest wait, rolling service level, ASA, abandoned,
agents by state), per agent (state and since when, handled today) and per channel.

Queue figures come from the timeline (reports/facts.py) through the same formulas as the reports
(reports/kpis.py), over each time slot a page may choose (dialplans/kpis.yaml's rolling window, the last
15 minutes, the last hour, today): one read of the last hour per tick serves the short slots, today's
earlier contacts are re-read every TODAY_RELOAD_S. Agent states are read from the live board through
`AgentBoard.agents()` only. What a page receives is cut from this snapshot per subscription
(reports/wallboard_view.py). Times are sent as instants (`since`, `oldest_queued_at`), so the
page counts the seconds itself and a picture only changes when something happened."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from reports import facts
from reports.alerts import QueueNow
from reports.config import KpiConfig
from reports.kpis import Contact, compute
from reports.service import rules_of
from reports.wallboard_view import SLOT_SPANS, AgentNow, Snapshot
from routing.live import AgentBoard


@dataclass(frozen=True)
class QueueInfo:
    id: str
    name: str


def start_of_day(now: datetime, config: KpiConfig) -> datetime:
    local = now.astimezone(config.zone)
    return datetime(local.year, local.month, local.day, tzinfo=config.zone).astimezone(UTC)


def _since(raw: str | None) -> str | None:
    if not raw or not raw.isdigit():
        return None
    return datetime.fromtimestamp(int(raw) / 1000, UTC).isoformat()


# Today's contacts that started before the last hour are re-read this often; the last hour every tick.
TODAY_RELOAD_S = 15.0


class Wallboard:
    def __init__(self, pool: asyncpg.Pool, board: AgentBoard, config: KpiConfig, queues: Sequence[QueueInfo]) -> None:
        self.pool = pool
        self.board = board
        self.config = config
        self.queues = list(queues)
        self._today: tuple[datetime, datetime, list[Contact]] | None = None  # (day start, loaded at, contacts)

    async def _contacts_today(self, now: datetime, day: datetime, recent_from: datetime) -> list[Contact]:
        """Today's contacts that started before `recent_from`, read again at most every TODAY_RELOAD_S: the
        slots' work per tick is one read of the last hour, whatever slots the pages chose."""
        if recent_from <= day:
            return []
        cached = self._today
        if cached is None or cached[0] != day or (now - cached[1]).total_seconds() >= TODAY_RELOAD_S:
            cached = (day, now, await facts.load_contacts(self.pool, day, now))
            self._today = cached
        return [c for c in cached[2] if c.started_at < recent_from]

    async def build(self, now: datetime | None = None) -> tuple[Snapshot, list[QueueNow]]:
        """The snapshot every subscriber's view is cut from (reports/wallboard_view.py; open alerts are
        added by the monitor) and what the alerts look at: every queue over the configured window."""
        now = now or datetime.now(UTC)
        config = self.config
        windows = {"window": config.rolling_window, **SLOT_SPANS}
        recent_from = now - max(windows.values())
        day = start_of_day(now, config)
        waiting = await facts.waiting_now(self.pool)
        recent = await facts.load_contacts(self.pool, recent_from, now)
        earlier_today = await self._contacts_today(now, day, recent_from)
        today = await facts.since(self.pool, day)
        active = await facts.open_by_channel(self.pool)
        talking = await facts.talking_now(self.pool)
        agent_rows = await self.pool.fetch("SELECT id, name, queues, teams, capacity FROM agents ORDER BY id")
        rules = rules_of(config)
        contacts = {slot: [c for c in recent if c.started_at >= now - span] for slot, span in windows.items()}
        contacts["today"] = [*earlier_today, *(c for c in recent if c.started_at >= day)]

        lives = await self.board.agents([row["id"] for row in agent_rows])
        agents = []
        for row, live in zip(agent_rows, lives, strict=True):
            state = live.get("state", "offline")
            capacity = row["capacity"]
            if isinstance(capacity, str):
                capacity = json.loads(capacity)
            agents.append(
                AgentNow(
                    id=row["id"],
                    name=row["name"],
                    queues=tuple(row["queues"]),
                    teams=tuple(row["teams"]),
                    channels=frozenset(ch for ch, n in (capacity or {}).items() if n),
                    state=state,
                    reason=live.get("reason") or None if state == "away" else None,
                    since=_since(live.get("since")),
                    handled_today=today.handled_by_agent.get(row["id"], 0),
                    interaction_id=talking.get(row["id"]),  # on a call now: supervisors may join it
                )
            )

        known = [q.id for q in self.queues]
        seen = {c.queue for c in contacts["window"]} | {w.queue for w in waiting}
        extra = sorted(q for q in seen if q and q not in known)
        names = {q.id: q.name for q in self.queues}
        order = [*known, *extra]
        by_queue: dict[str | None, list[Contact]] = defaultdict(list)
        for contact in contacts["window"]:
            by_queue[contact.queue].append(contact)
        measured = []
        for queue in order:
            in_line = [w for w in waiting if w.queue == queue]
            oldest = min((w.queued_at for w in in_line), default=None)
            longest = (now - oldest).total_seconds() if oldest else 0.0
            sl = compute(by_queue.get(queue, []), rules).service_level
            measured.append(QueueNow(queue, len(in_line), max(0.0, longest), sl))
        snapshot = Snapshot(
            at=now,
            timezone=config.timezone,
            window_minutes=config.rolling_window_minutes,
            queues=[(q, names.get(q, q)) for q in order],
            service_level_s={q: config.service_level_of(q) for q in order},
            thresholds={q: config.thresholds_of(q).model_dump() for q in order},
            agents=agents,
            waiting=waiting,
            contacts=contacts,
            active_by_channel=active,
            today=today,
            rules=rules,
        )
        return snapshot, measured
