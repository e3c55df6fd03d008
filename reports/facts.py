"""Reading the timeline for the KPIs: one `Contact` per interaction, and the live counts of the wallboard.
Nothing here computes a figure (reports/kpis.py does). Contacts come from `contact_facts` (migration 018):
one row per interaction, derived from timeline_events, the one source of truth, by the view
`contact_facts_from_timeline` and kept by a trigger in the same transaction as each event, so it is exactly as
fresh as the timeline; `rebuild` recomputes it whole. `load_contacts_from_timeline` is the same read
straight from the events (the tests and the benchmark compare the two)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from reports.kpis import Contact, SurveyAnswer

if TYPE_CHECKING:
    from hilo.db import Conn

# The events a contact is made of; the others (ivr.*, notes...) do not change a figure. Migration 018's
# trigger fires on the same list.
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
SELECT s.interaction_id::text, s.customer_id::text, s.channel, s.at AS started_at,
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

# Each merged customer's survivor (merges can chain): its contacts are the survivor's. Customers never
# merged are left out (they are their own).
_SURVIVORS = """
WITH RECURSIVE chain (id, current, depth) AS (
    SELECT id, id, 0 FROM customers WHERE id = ANY($1::uuid[]) AND merged_into IS NOT NULL
    UNION ALL
    SELECT chain.id, c.merged_into, chain.depth + 1
    FROM chain JOIN customers c ON c.id = chain.current
    WHERE c.merged_into IS NOT NULL AND chain.depth < 100
)
SELECT DISTINCT ON (id) id::text, current::text FROM chain ORDER BY id, depth DESC
"""


def _surveys(raw: Any) -> tuple[SurveyAnswer, ...]:
    answers = []
    for data in raw or []:
        question, score = data.get("question"), data.get("score")
        if isinstance(question, str) and isinstance(score, int) and not isinstance(score, bool):
            answers.append(SurveyAnswer(question, score))
    return tuple(answers)


# Ids as text: the Contact holds them so, and PostgreSQL makes the text faster than Python would.
_FACTS = """
SELECT interaction_id::text, customer_id::text, channel, started_at, queued_at, queue, answered_at, agent,
    ended_at, outcome, wrapped_at, callback_requested, callback_connected, callback_failed, agent_ended_at, held,
    unheld, surveys
FROM contact_facts WHERE started_at >= $1 AND started_at < $2
"""

# Only the contacts that can be someone's follow-up: of the given (surviving) customers, or of a customer
# merged into another (whose survivor may be one of them). Both sets are hashed, whatever their size.
_STARTS = """
SELECT interaction_id::text, customer_id::text, channel, started_at FROM contact_facts
WHERE started_at >= $1 AND started_at < $2
  AND (customer_id IN (SELECT unnest($3::uuid[]))
       OR customer_id IN (SELECT id FROM customers WHERE merged_into IS NOT NULL))
"""

_STARTS_FROM_TIMELINE = """
SELECT DISTINCT ON (interaction_id) interaction_id::text, customer_id::text, channel, at AS started_at
FROM timeline_events
WHERE type = 'interaction.started' AND at >= $1 AND at < $2 AND interaction_id IS NOT NULL
ORDER BY interaction_id, at, id
"""


async def _lift_statement_bound(conn: Conn, timeout: float | None) -> None:
    """A report's read is bounded by its own `timeout`, also on the server: the pool's statement timeout
    (hilo/stores.py) would cut a long period's read first. For this transaction only."""
    if timeout is not None:
        await conn.execute(f"SET LOCAL statement_timeout = {max(1, round(timeout * 1000))}")


async def _survivors(conn: Conn, rows: list[asyncpg.Record], timeout: float | None = None) -> dict[str, str]:
    customers = list({r["customer_id"] for r in rows})
    if not customers:
        return {}
    return {r["id"]: r["current"] for r in await conn.fetch(_SURVIVORS, customers, timeout=timeout)}


def _contact(r: asyncpg.Record, survivors: dict[str, str]) -> Contact:
    customer = r["customer_id"]
    return Contact(
        interaction_id=r["interaction_id"],
        customer_id=survivors.get(customer, customer),
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
        surveys=_surveys(r["surveys"]) if r["surveys"] else (),
        agent_ended_at=r["agent_ended_at"],
        held=tuple(r["held"]) if r["held"] else (),
        unheld=tuple(r["unheld"]) if r["unheld"] else (),
        callback_connected=r["callback_connected"],
        callback_failed=r["callback_failed"],
    )


async def load_contacts(
    pool: asyncpg.Pool,
    start: datetime,
    end: datetime,
    *,
    from_timeline: bool = False,
    timeout: float | None = None,
) -> list[Contact]:
    """Every interaction that started in [start, end), from its `contact_facts` row (or, `from_timeline`,
    grouped from the period's events at query time: many times slower, what the tests and the benchmark
    compare the summary with). `timeout`: each read's bound (None: the pool's command timeout)."""
    if from_timeline:
        return await load_contacts_from_timeline(pool, start, end, timeout=timeout)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        await _lift_statement_bound(conn, timeout)
        rows = await conn.fetch(_FACTS, start, end, timeout=timeout)
        survivors = await _survivors(conn, rows, timeout)
    return [_contact(r, survivors) for r in rows]


async def load_contacts_from_timeline(
    pool: asyncpg.Pool, start: datetime, end: datetime, *, timeout: float | None = None
) -> list[Contact]:
    """The same contacts as `load_contacts`, grouped from the period's events at query time."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        # A period's contacts are grouped and sorted in one go: enough memory that the sorts stay off disk.
        await conn.execute(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'")
        await _lift_statement_bound(conn, timeout)
        rows = await conn.fetch(_CONTACTS, start, end, CONTACT_EVENTS, timeout=timeout)
        survivors = await _survivors(conn, rows, timeout)
    return [_contact(r, survivors) for r in rows]


async def load_starts(
    pool: asyncpg.Pool,
    start: datetime,
    end: datetime,
    customers: Collection[str],
    *,
    from_timeline: bool = False,
    timeout: float | None = None,
) -> list[Contact]:
    """The interactions that started in [start, end) with only who, where and when: enough to tell whether
    an earlier contact of one of `customers` (after merges) was followed by another (first-contact
    resolution, channel switch), at a fraction of the cost of `load_contacts`. Contacts of other customers
    may be among them (from the timeline: all are)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        await _lift_statement_bound(conn, timeout)
        if from_timeline:
            rows = await conn.fetch(_STARTS_FROM_TIMELINE, start, end, timeout=timeout)
        else:
            rows = await conn.fetch(_STARTS, start, end, list(customers), timeout=timeout)
        survivors = await _survivors(conn, rows, timeout)
    return [
        Contact(
            interaction_id=r["interaction_id"],
            customer_id=survivors.get(r["customer_id"], r["customer_id"]),
            channel=r["channel"],
            started_at=r["started_at"],
        )
        for r in rows
    ]


async def rebuild(pool: asyncpg.Pool) -> int:
    """Recompute every `contact_facts` row from the timeline; returns how many. Writers of contact events
    and report readers wait for it (the table is locked until it commits), so none sees it half-built."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'")
        await conn.execute("TRUNCATE contact_facts")
        status = await conn.execute("INSERT INTO contact_facts SELECT * FROM contact_facts_from_timeline")
        await conn.execute("ANALYZE contact_facts")  # every row is new: plan the period reads on fresh statistics
    return int(status.split()[-1])


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
