"""Reading the timeline for the KPIs: one `Contact` per interaction from its events, and the live counts
of the wallboard. Nothing here computes a figure (reports/kpis.py does); everything is read from
timeline_events, the one source of truth, using the indexes of migration 009."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from reports.kpis import Contact, SurveyAnswer

# The events a contact is made of; the others (ivr.*, notes...) do not change a figure.
CONTACT_EVENTS = [
    "interaction.started",
    "routing.queued",
    "agent.answered",
    "interaction.ended",
    "agent.disposition",
    "callback.requested",
    "survey.answer",
    "agent.call_ended",
    "call.held",
    "call.unheld",
    "callback.connected",
    "callback.failed",
]

REPORT_WORK_MEM = "64MB"

_CONTACTS = """
WITH started AS (
    SELECT DISTINCT ON (interaction_id) interaction_id, customer_id, channel, at
    FROM timeline_events
    WHERE type = 'interaction.started' AND at >= $1 AND at < $2 AND interaction_id IS NOT NULL
    ORDER BY interaction_id, at, id
)
SELECT s.interaction_id, s.customer_id, s.channel, s.at AS started_at,
    min(e.at) FILTER (WHERE e.type = 'routing.queued') AS queued_at,
    (array_agg(e.data ->> 'queue' ORDER BY e.at, e.id) FILTER (WHERE e.type = 'routing.queued'))[1] AS queue,
    min(e.at) FILTER (WHERE e.type = 'agent.answered') AS answered_at,
    (array_agg(e.data ->> 'agent' ORDER BY e.at, e.id) FILTER (WHERE e.type = 'agent.answered'))[1] AS agent,
    min(e.at) FILTER (WHERE e.type = 'interaction.ended') AS ended_at,
    (array_agg(e.data ->> 'outcome' ORDER BY e.at, e.id) FILTER (WHERE e.type = 'interaction.ended'))[1]
        AS outcome,
    min(e.at) FILTER (WHERE e.type = 'agent.disposition') AS wrapped_at,
    coalesce(bool_or(e.type = 'callback.requested'), false) AS callback_requested,
    coalesce(bool_or(e.type = 'callback.connected'), false) AS callback_connected,
    coalesce(bool_or(e.type = 'callback.failed'), false) AS callback_failed,
    min(e.at) FILTER (WHERE e.type = 'agent.call_ended') AS agent_ended_at,
    coalesce(array_agg(e.at ORDER BY e.at) FILTER (WHERE e.type = 'call.held'), '{}') AS held,
    coalesce(array_agg(e.at ORDER BY e.at) FILTER (WHERE e.type = 'call.unheld'), '{}') AS unheld,
    jsonb_agg(e.data ORDER BY e.at, e.id) FILTER (WHERE e.type = 'survey.answer') AS surveys
FROM started s
LEFT JOIN timeline_events e ON e.interaction_id = s.interaction_id AND e.type = ANY($3::text[])
GROUP BY s.interaction_id, s.customer_id, s.channel, s.at
"""

# Each customer's survivor: a merged customer's contacts are the survivor's (merges can chain).
_SURVIVORS = """
WITH RECURSIVE chain (id, current, depth) AS (
    SELECT id, id, 0 FROM customers WHERE id = ANY($1::uuid[])
    UNION ALL
    SELECT chain.id, c.merged_into, chain.depth + 1
    FROM chain JOIN customers c ON c.id = chain.current
    WHERE c.merged_into IS NOT NULL AND chain.depth < 100
)
SELECT DISTINCT ON (id) id, current FROM chain ORDER BY id, depth DESC
"""


def _surveys(raw: Any) -> tuple[SurveyAnswer, ...]:
    answers = []
    for data in raw or []:
        question, score = data.get("question"), data.get("score")
        if isinstance(question, str) and isinstance(score, int) and not isinstance(score, bool):
            answers.append(SurveyAnswer(question, score))
    return tuple(answers)


async def load_contacts(pool: asyncpg.Pool, start: datetime, end: datetime) -> list[Contact]:
    """Every interaction that started in [start, end), as its timeline tells it."""
    async with pool.acquire() as conn, conn.transaction():
        # A period's contacts are grouped and sorted in one go: enough memory that the sorts stay off disk.
        await conn.execute(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'")
        rows = await conn.fetch(_CONTACTS, start, end, CONTACT_EVENTS)
        customers = list({r["customer_id"] for r in rows})
        survivors = {r["id"]: r["current"] for r in await conn.fetch(_SURVIVORS, customers)} if customers else {}
    return [
        Contact(
            interaction_id=str(r["interaction_id"]),
            customer_id=str(survivors.get(r["customer_id"], r["customer_id"])),
            channel=r["channel"],
            started_at=r["started_at"],
            queue=r["queue"],
            queued_at=r["queued_at"],
            agent=r["agent"],
            answered_at=r["answered_at"],
            ended_at=r["ended_at"],
            outcome=r["outcome"],
            wrapped_at=r["wrapped_at"],
            callback_requested=r["callback_requested"],
            surveys=_surveys(r["surveys"]),
            agent_ended_at=r["agent_ended_at"],
            held=tuple(r["held"]),
            unheld=tuple(r["unheld"]),
            callback_connected=r["callback_connected"],
            callback_failed=r["callback_failed"],
        )
        for r in rows
    ]


_STARTS = """
SELECT DISTINCT ON (interaction_id) interaction_id, customer_id, channel, at AS started_at
FROM timeline_events
WHERE type = 'interaction.started' AND at >= $1 AND at < $2 AND interaction_id IS NOT NULL
ORDER BY interaction_id, at, id
"""


async def load_starts(pool: asyncpg.Pool, start: datetime, end: datetime) -> list[Contact]:
    """The interactions that started in [start, end) with only who, where and when: enough to tell whether
    an earlier contact was followed by another (first-contact resolution, channel switch), at a fraction of
    the cost of `load_contacts`."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(_STARTS, start, end)
        customers = list({r["customer_id"] for r in rows})
        survivors = {r["id"]: r["current"] for r in await conn.fetch(_SURVIVORS, customers)} if customers else {}
    return [
        Contact(
            interaction_id=str(r["interaction_id"]),
            customer_id=str(survivors.get(r["customer_id"], r["customer_id"])),
            channel=r["channel"],
            started_at=r["started_at"],
        )
        for r in rows
    ]


# -- live: what the wallboard shows now ---------------------------------------------------------------


@dataclass(frozen=True)
class Waiting:
    interaction_id: str
    channel: str
    queue: str
    queued_at: datetime


# Queued, and neither answered nor ended yet, in the queue a supervisor last moved it to (routing.moved),
# else the one it was queued in. Open interactions are few (interactions_open index).
_WAITING = """
SELECT i.id, i.channel, coalesce(m.queue, q.data ->> 'queue') AS queue, q.at AS queued_at
FROM interactions i
JOIN LATERAL (
    SELECT data, at FROM timeline_events
    WHERE interaction_id = i.id AND type = 'routing.queued' ORDER BY at, id LIMIT 1
) q ON true
LEFT JOIN LATERAL (
    SELECT data ->> 'queue' AS queue FROM timeline_events
    WHERE interaction_id = i.id AND type = 'routing.moved' AND data ? 'queue' ORDER BY at DESC, id DESC LIMIT 1
) m ON true
WHERE i.ended_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM timeline_events d
      WHERE d.interaction_id = i.id AND d.type IN ('agent.answered', 'interaction.ended'))
ORDER BY q.at
"""


async def waiting_now(pool: asyncpg.Pool) -> list[Waiting]:
    rows = await pool.fetch(_WAITING)
    return [Waiting(str(r["id"]), r["channel"], r["queue"], r["queued_at"]) for r in rows if r["queue"]]


async def talking_now(pool: asyncpg.Pool) -> dict[str, str]:
    """Agent -> the interaction they are connected to now (the one a supervisor can listen to)."""
    rows = await pool.fetch(
        "SELECT agent_id, id FROM interactions WHERE ended_at IS NULL AND state = 'connected'"
        " AND agent_id IS NOT NULL ORDER BY answered_at"
    )
    return {r["agent_id"]: str(r["id"]) for r in rows}


async def open_by_channel(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT channel, count(*) AS n FROM interactions WHERE ended_at IS NULL GROUP BY channel")
    return {r["channel"]: r["n"] for r in rows}


@dataclass(frozen=True)
class Today:
    handled_by_agent: dict[str, int]  # agent.answered since the start of the day
    handled_by_channel: dict[str, int]
    started_by_channel: dict[str, int]  # interaction.started since the start of the day


async def since(pool: asyncpg.Pool, start: datetime) -> Today:
    rows = await pool.fetch(
        "SELECT type, channel, data ->> 'agent' AS agent, count(*) AS n FROM timeline_events"
        " WHERE type IN ('agent.answered', 'interaction.started') AND at >= $1 GROUP BY 1, 2, 3",
        start,
    )
    by_agent: dict[str, int] = {}
    handled: dict[str, int] = {}
    started: dict[str, int] = {}
    for r in rows:
        if r["type"] == "agent.answered":
            if r["agent"]:
                by_agent[r["agent"]] = by_agent.get(r["agent"], 0) + r["n"]
            handled[r["channel"]] = handled.get(r["channel"], 0) + r["n"]
        else:
            started[r["channel"]] = started.get(r["channel"], 0) + r["n"]
    return Today(by_agent, handled, started)
