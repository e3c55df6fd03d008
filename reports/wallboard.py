"""The wallboard's picture of now: per queue (waiting, longest wait, rolling service level, ASA, abandoned,
agents by state), per agent (state and since when, handled today) and per channel.

Queue figures come from the timeline (reports/facts.py) through the same formulas as the reports
(reports/kpis.py), over the rolling window of dialplans/kpis.yaml; agent states are read from the live
board through `AgentBoard.agents()` only. Times are sent as instants (`since`, `oldest_queued_at`), so the
page counts the seconds itself and a picture only changes when something happened."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from reports import facts
from reports.alerts import QueueNow
from reports.config import KpiConfig
from reports.kpis import Contact, Kpis, compute
from reports.service import rules_of
from routing.live import AGENT_STATES, AgentBoard


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


def _rolling(k: Kpis) -> dict[str, Any]:
    return {
        "offered": k.offered,
        "answered": k.answered,
        "abandoned": k.abandoned,
        "service_level": k.service_level,
        "asa_s": k.asa_s,
        "abandonment_rate": k.abandonment_rate,
    }


WAITING_SHOWN = 50


class Wallboard:
    def __init__(self, pool: asyncpg.Pool, board: AgentBoard, config: KpiConfig, queues: Sequence[QueueInfo]) -> None:
        self.pool = pool
        self.board = board
        self.config = config
        self.queues = list(queues)

    async def build(self, now: datetime | None = None) -> tuple[dict[str, Any], list[QueueNow]]:
        """The picture (JSON-ready, without alerts: the monitor adds them) and what the alerts look at."""
        now = now or datetime.now(UTC)
        config = self.config
        waiting = await facts.waiting_now(self.pool)
        recent = await facts.load_contacts(self.pool, now - config.rolling_window, now)
        today = await facts.since(self.pool, start_of_day(now, config))
        active = await facts.open_by_channel(self.pool)
        talking = await facts.talking_now(self.pool)
        agent_rows = await self.pool.fetch("SELECT id, name, queues FROM agents ORDER BY id")
        rules = rules_of(config)

        by_queue: dict[str | None, list[Contact]] = defaultdict(list)
        by_channel: dict[str, list[Contact]] = defaultdict(list)
        for contact in recent:
            by_queue[contact.queue].append(contact)
            by_channel[contact.channel].append(contact)
        waiting_by_queue: dict[str, list[facts.Waiting]] = defaultdict(list)
        waiting_by_channel: dict[str, int] = defaultdict(int)
        for one in waiting:
            waiting_by_queue[one.queue].append(one)
            waiting_by_channel[one.channel] += 1

        agents = []
        states_by_queue: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(AGENT_STATES, 0))
        lives = await self.board.agents([row["id"] for row in agent_rows])
        for row, live in zip(agent_rows, lives, strict=True):
            state = live.get("state", "offline")
            for queue in row["queues"]:
                counts = states_by_queue[queue]
                counts[state] = counts.get(state, 0) + 1
            agents.append(
                {
                    "id": row["id"],
                    "name": row["name"],
                    "queues": list(row["queues"]),
                    "state": state,
                    "reason": live.get("reason") or None if state == "away" else None,
                    "since": _since(live.get("since")),
                    "handled_today": today.handled_by_agent.get(row["id"], 0),
                    "interaction_id": talking.get(row["id"]),  # on a call now: supervisors may join it
                }
            )

        known = [q.id for q in self.queues]
        extra = sorted({q for q in [*by_queue, *waiting_by_queue] if q and q not in known})
        names = {q.id: q.name for q in self.queues}
        queues, measured = [], []
        for queue in [*known, *extra]:
            in_line = waiting_by_queue.get(queue, [])
            oldest = min((w.queued_at for w in in_line), default=None)
            longest = (now - oldest).total_seconds() if oldest else 0.0
            kpis = compute(by_queue.get(queue, []), rules)
            measured.append(QueueNow(queue, len(in_line), max(0.0, longest), kpis.service_level))
            queues.append(
                {
                    "queue": queue,
                    "name": names.get(queue, queue),
                    "waiting": len(in_line),
                    "oldest_queued_at": oldest.isoformat() if oldest else None,
                    "service_level_s": config.service_level_of(queue),
                    **_rolling(kpis),
                    "agents": states_by_queue.get(queue, dict.fromkeys(AGENT_STATES, 0)),
                    "thresholds": config.thresholds_of(queue).model_dump(),
                }
            )

        channels = []
        for channel in sorted({"voice", *active, *by_channel, *today.started_by_channel}):
            channels.append(
                {
                    "channel": channel,
                    "active": active.get(channel, 0),
                    "waiting": waiting_by_channel.get(channel, 0),
                    "started_today": today.started_by_channel.get(channel, 0),
                    "handled_today": today.handled_by_channel.get(channel, 0),
                    **_rolling(compute(by_channel.get(channel, []), rules)),
                }
            )
        picture = {
            "type": "wallboard",
            "at": now.isoformat(),
            "timezone": config.timezone,
            "window_minutes": config.rolling_window_minutes,
            "queues": queues,
            "agents": agents,
            "channels": channels,
            # the longest-waiting first, for supervisors to move (at most WAITING_SHOWN)
            "waiting": [
                {
                    "interaction_id": w.interaction_id,
                    "queue": w.queue,
                    "channel": w.channel,
                    "since": w.queued_at.isoformat(),
                }
                for w in waiting[:WAITING_SHOWN]
            ],
        }
        return picture, measured
