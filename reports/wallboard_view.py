"""What one wallboard subscriber sees: the node's snapshot (reports/wallboard.py) cut down to a filter
(channels, queues, teams), with its rolling figures over one time slot and its queues grouped by team or
channel with subtotals.

Filtering happens here, on the server, per subscription: a supervisor limited to some teams (their scope,
routing/scope.py) never receives the other teams' agents, queues or waiting contacts, and one without teams
receives none. The snapshot is built once per tick with every slot's
contacts; each distinct filter is then rendered once per tick, however many pages share it (the monitor
keys its pushes by `BoardFilter.key`). Rates are recomputed from the contacts of a group, never summed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from reports.facts import Today, Waiting
from reports.kpis import Contact, KpiRules, Kpis, compute
from routing.live import AGENT_STATES
from routing.scope import NO_TEAMS

CHANNELS = ("voice", "sms", "whatsapp", "webchat")
# Time slots of the rolling figures: `window` is kpis.yaml's rolling_window_minutes (what alerts use).
SLOTS = ("window", "15m", "1h", "today")
SLOT_SPANS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1)}
GROUPINGS = ("none", "team", "channel")
NO_TEAM = ""  # the group of queues no agent with a team serves
WAITING_SHOWN = 50
MAX_VALUES = 50  # values in one filter field


class FilterError(ValueError):
    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


@dataclass(frozen=True)
class BoardFilter:
    """One subscription. Empty sets mean "all"; `scope` is the teams a supervisor is limited to (None: all;
    empty: a supervisor without teams, who sees nothing)."""

    channels: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()
    teams: frozenset[str] = frozenset()
    slot: str = "window"
    group: str = "none"
    scope: frozenset[str] | None = None

    @property
    def key(self) -> str:
        scope = "*" if self.scope is None else ",".join(sorted(self.scope))
        parts = [",".join(sorted(s)) for s in (self.channels, self.queues, self.teams)]
        return "|".join([*parts, self.slot, self.group, scope])

    def limited_to(self, scope: Iterable[str] | None) -> BoardFilter:
        """This filter for someone limited to `scope` teams (`Scope.teams_shown`, routing/scope.py): a team
        outside it is refused, none asked means all of theirs; no teams at all, nothing."""
        if scope is None:
            return self
        allowed = frozenset(scope)
        outside = sorted(self.teams - allowed)
        if outside:
            yours = ", ".join(sorted(allowed)) if allowed else NO_TEAMS
            raise FilterError("team", f"{', '.join(outside)} is not one of your teams ({yours})")
        return replace(self, scope=allowed)

    @property
    def teams_in_effect(self) -> frozenset[str] | None:
        return self.teams or self.scope


ALL = BoardFilter()


def _values(query: Mapping[str, str], name: str) -> frozenset[str]:
    raw = query.get(name, "")
    values = frozenset(v.strip() for v in raw.split(",") if v.strip())
    if len(values) > MAX_VALUES:
        raise FilterError(name, f"at most {MAX_VALUES} values")
    for value in values:
        if len(value) > 64:
            raise FilterError(name, f"{value[:20]}…: longer than 64 characters")
    return values


def parse_filter(query: Mapping[str, str]) -> BoardFilter:
    """A filter from a page's query string: `channel`, `queue`, `team` (comma-separated), `slot`, `group`.
    Unknown queues and teams are allowed (they show nothing); unknown channels, slots or groupings are not."""
    channels = _values(query, "channel")
    unknown = sorted(channels - set(CHANNELS))
    if unknown:
        raise FilterError("channel", f"{', '.join(unknown)}: not one of {', '.join(CHANNELS)}")
    slot = query.get("slot") or "window"
    if slot not in SLOTS:
        raise FilterError("slot", f"{slot[:20]}: not one of {', '.join(SLOTS)}")
    group = query.get("group") or "none"
    if group not in GROUPINGS:
        raise FilterError("group", f"{group[:20]}: not one of {', '.join(GROUPINGS)}")
    return BoardFilter(channels, _values(query, "queue"), _values(query, "team"), slot, group)


@dataclass(frozen=True)
class AgentNow:
    id: str
    name: str
    queues: tuple[str, ...]
    teams: tuple[str, ...]
    channels: frozenset[str]  # those it has capacity for
    state: str
    reason: str | None
    since: str | None
    handled_today: int
    interaction_id: str | None


@dataclass
class Snapshot:
    """Everything the node knows this tick, unfiltered; `view` cuts it per subscription."""

    at: datetime
    timezone: str
    window_minutes: float
    queues: list[tuple[str, str]]  # (id, name) in display order
    service_level_s: dict[str, float]
    thresholds: dict[str, dict[str, Any]]
    agents: list[AgentNow]
    waiting: list[Waiting]  # longest first
    contacts: dict[str, list[Contact]]  # slot -> contacts that started in it
    active_by_channel: dict[str, int]
    today: Today
    rules: KpiRules
    alerts: list[dict[str, Any]] = field(default_factory=list)  # open queue alerts (set by the monitor)

    @property
    def teams(self) -> list[str]:
        return sorted({t for a in self.agents for t in a.teams})


def _rolling(k: Kpis) -> dict[str, Any]:
    return {
        "offered": k.offered,
        "answered": k.answered,
        "abandoned": k.abandoned,
        "service_level": k.service_level,
        "asa_s": k.asa_s,
        "abandonment_rate": k.abandonment_rate,
    }


def _states(agents: Iterable[AgentNow]) -> dict[str, int]:
    counts = dict.fromkeys(AGENT_STATES, 0)
    for a in agents:
        counts[a.state] = counts.get(a.state, 0) + 1
    return counts


def _waiting_figures(waiting: list[Waiting]) -> dict[str, Any]:
    oldest = min((w.queued_at for w in waiting), default=None)
    return {"waiting": len(waiting), "oldest_queued_at": oldest.isoformat() if oldest else None}


class _Cut:
    """The snapshot's parts a filter lets through."""

    def __init__(self, snap: Snapshot, f: BoardFilter) -> None:
        teams = f.teams_in_effect
        channels = set(f.channels or CHANNELS)
        self.channels = channels
        self.agents = [
            a
            for a in snap.agents
            if (teams is None or teams & set(a.teams)) and (not f.channels or f.channels & a.channels)
        ]
        team_queues = None if teams is None else {q for a in snap.agents if teams & set(a.teams) for q in a.queues}
        self.queue_ids = [
            q for q, _ in snap.queues if (team_queues is None or q in team_queues) and (not f.queues or q in f.queues)
        ]
        if f.queues:
            self.agents = [a for a in self.agents if f.queues & set(a.queues)]
        shown = set(self.queue_ids)
        self.queue_filtered = teams is not None or bool(f.queues)
        self.waiting = [w for w in snap.waiting if w.queue in shown and w.channel in channels]
        self.contacts = [
            c for c in snap.contacts[f.slot] if c.channel in channels and (not self.queue_filtered or c.queue in shown)
        ]
        self.today = [c for c in snap.contacts["today"] if c.channel in channels and c.queue in shown]


def view(snap: Snapshot, f: BoardFilter = ALL) -> dict[str, Any]:
    """The picture one subscriber gets (JSON-ready)."""
    cut = _Cut(snap, f)
    names = dict(snap.queues)
    contacts_by_queue: dict[str | None, list[Contact]] = defaultdict(list)
    contacts_by_channel: dict[str, list[Contact]] = defaultdict(list)
    for c in cut.contacts:
        contacts_by_queue[c.queue].append(c)
        contacts_by_channel[c.channel].append(c)
    waiting_by_queue: dict[str, list[Waiting]] = defaultdict(list)
    for w in cut.waiting:
        waiting_by_queue[w.queue].append(w)
    alert_kinds: dict[str, list[str]] = defaultdict(list)
    for alert in snap.alerts:
        alert_kinds[alert["queue"]].append(alert["kind"])

    def queue_row(
        queue: str, contacts: list[Contact], waiting: list[Waiting], agents: list[AgentNow]
    ) -> dict[str, Any]:
        return {
            "queue": queue,
            "name": names.get(queue, queue),
            **_waiting_figures(waiting),
            "service_level_s": snap.service_level_s.get(queue),
            **_rolling(compute(contacts, snap.rules)),
            "agents": _states(agents),
            "thresholds": snap.thresholds.get(queue, {}),
            "alerts": alert_kinds.get(queue, []),
        }

    def agents_of(queues: Iterable[str], channel: str | None = None) -> list[AgentNow]:
        wanted = set(queues)
        return [a for a in cut.agents if wanted & set(a.queues) and (channel is None or channel in a.channels)]

    queues = [
        queue_row(q, contacts_by_queue.get(q, []), waiting_by_queue.get(q, []), agents_of([q])) for q in cut.queue_ids
    ]
    picture: dict[str, Any] = {
        "type": "wallboard",
        "at": snap.at.isoformat(),
        "timezone": snap.timezone,
        "window_minutes": snap.window_minutes,
        "slot": f.slot,
        "filter": {
            "channel": sorted(f.channels),
            "queue": sorted(f.queues),
            "team": sorted(f.teams),
            "slot": f.slot,
            "group": f.group,
        },
        "choices": {
            "channels": list(CHANNELS),
            "queues": [{"id": q, "name": n} for q, n in snap.queues if _visible_queue(snap, f, q)],
            "teams": sorted(f.scope) if f.scope is not None else snap.teams,
        },
        "queues": queues,
        "queue_groups": _groups(snap, f, cut, queue_row, agents_of) if f.group != "none" else None,
        "agents": [
            {
                "id": a.id,
                "name": a.name,
                "queues": list(a.queues),
                "teams": list(a.teams),
                "state": a.state,
                "reason": a.reason,
                "since": a.since,
                "handled_today": a.handled_today,
                "interaction_id": a.interaction_id,
            }
            for a in cut.agents
        ],
        "channels": _channels(snap, f, cut, contacts_by_channel),
        "waiting": [
            {
                "interaction_id": w.interaction_id,
                "queue": w.queue,
                "channel": w.channel,
                "since": w.queued_at.isoformat(),
            }
            for w in cut.waiting[:WAITING_SHOWN]
        ],
        "alerts": [a for a in snap.alerts if a["queue"] in set(cut.queue_ids)],
    }
    return picture


def _visible_queue(snap: Snapshot, f: BoardFilter, queue: str) -> bool:
    """A queue the subscriber may pick: any, or one an agent of their teams serves."""
    if f.scope is None:
        return True
    return any(f.scope & set(a.teams) and queue in a.queues for a in snap.agents)


def _channels(
    snap: Snapshot, f: BoardFilter, cut: _Cut, contacts_by_channel: Mapping[str, list[Contact]]
) -> list[dict[str, Any]]:
    """Per channel. Under a queue or team filter the counts are of those queues' contacts that started today
    (open: not ended yet); otherwise every interaction's, IVR included."""
    waiting_by_channel: dict[str, int] = defaultdict(int)
    for w in cut.waiting:
        waiting_by_channel[w.channel] += 1
    if cut.queue_filtered:
        active: dict[str, int] = defaultdict(int)
        started: dict[str, int] = defaultdict(int)
        handled: dict[str, int] = defaultdict(int)
        for c in cut.today:
            started[c.channel] += 1
            active[c.channel] += c.ended_at is None
            handled[c.channel] += c.answered_at is not None
        present = {"voice", *started}
    else:
        active, started, handled = snap.active_by_channel, snap.today.started_by_channel, snap.today.handled_by_channel
        present = {"voice", *active, *contacts_by_channel, *started}
    rows = []
    for channel in sorted(c for c in {*present, *f.channels} if c in cut.channels):  # the ones asked for, always
        rows.append(
            {
                "channel": channel,
                "active": active.get(channel, 0),
                "waiting": waiting_by_channel.get(channel, 0),
                "started_today": started.get(channel, 0),
                "handled_today": handled.get(channel, 0),
                **_rolling(compute(contacts_by_channel.get(channel, []), snap.rules)),
            }
        )
    return rows


def _groups(snap: Snapshot, f: BoardFilter, cut: _Cut, queue_row: Any, agents_of: Any) -> list[dict[str, Any]]:
    """Queue rows grouped, each group with subtotals over its own contacts, waiting and distinct agents."""
    groups: list[dict[str, Any]] = []
    if f.group == "team":
        teams = sorted(f.teams_in_effect or snap.teams)
        members: dict[str, list[str]] = {}
        for team in teams:
            served = {q for a in cut.agents if team in a.teams for q in a.queues}
            members[team] = [q for q in cut.queue_ids if q in served]
        if f.teams_in_effect is None:
            grouped = {q for qs in members.values() for q in qs}
            members[NO_TEAM] = [q for q in cut.queue_ids if q not in grouped]
        for team, queues in members.items():
            if not queues:
                continue
            shown = set(queues)
            agents = [a for a in cut.agents if (team in a.teams if team else not a.teams) and shown & set(a.queues)]
            rows = []
            for q in queues:
                row_agents = [a for a in agents if q in a.queues]
                rows.append(
                    queue_row(
                        q,
                        [c for c in cut.contacts if c.queue == q],
                        [w for w in cut.waiting if w.queue == q],
                        row_agents,
                    )
                )
            contacts = [c for c in cut.contacts if c.queue in shown]
            waiting = [w for w in cut.waiting if w.queue in shown]
            groups.append(_group(team, team or "no team", contacts, waiting, agents, rows, snap))
    else:  # channel
        shown_queues = set(cut.queue_ids)
        for channel in sorted(cut.channels, key=CHANNELS.index):
            contacts = [c for c in cut.contacts if c.channel == channel and c.queue in shown_queues]
            waiting = [w for w in cut.waiting if w.channel == channel]
            agents = agents_of(cut.queue_ids, channel)
            rows = []
            for q in cut.queue_ids:
                q_contacts = [c for c in contacts if c.queue == q]
                q_waiting = [w for w in waiting if w.queue == q]
                if q_contacts or q_waiting:
                    rows.append(queue_row(q, q_contacts, q_waiting, agents_of([q], channel)))
            groups.append(_group(channel, channel, contacts, waiting, agents, rows, snap))
    return groups


def _group(
    key: str,
    label: str,
    contacts: list[Contact],
    waiting: list[Waiting],
    agents: list[AgentNow],
    rows: list[dict[str, Any]],
    snap: Snapshot,
) -> dict[str, Any]:
    totals = {**_waiting_figures(waiting), **_rolling(compute(contacts, snap.rules)), "agents": _states(agents)}
    return {"group": key, "label": label, "totals": totals, "queues": rows}
