"""Routing in PostgreSQL (migration 008): the configuration of queues and agents, and the durable record of
what the live state decided — interactions queued, offers and assignments, agent state history — from which
the live state is rebuilt after Redis loses it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from dialplans.models import Agent, Queue
from routing.model import Outcome, ms_to_datetime

_SELECT_AGENTS = "SELECT id, name, sip_endpoint, queues, skills, teams, capacity FROM agents"


def _agent(row: asyncpg.Record) -> Agent:
    return Agent(
        id=row["id"],
        name=row["name"],
        sip_endpoint=row["sip_endpoint"],
        queues=list(row["queues"]),
        skills=row["skills"],
        teams=list(row["teams"]),
        capacity=row["capacity"],
    )


@dataclass(frozen=True)
class Presence:
    """An agent's last recorded state."""

    state: str
    presence: str
    reason: str | None
    wrapup_until: datetime | None
    at: datetime


@dataclass(frozen=True)
class OpenInteraction:
    interaction_id: str
    queue: str
    channel: str
    priority: int
    skills: dict[str, int]
    enqueued_at: datetime
    state: str
    agent_id: str | None
    via: str | None
    offered_at: datetime | None


_OPEN = (
    "SELECT i.interaction_id, i.queue, i.channel, i.priority, i.skills, i.enqueued_at, i.state,"
    " o.agent_id, o.queue AS via, o.offered_at, o.answered_at"
    " FROM routing_interactions i"
    " LEFT JOIN routing_offers o ON o.interaction_id = i.interaction_id AND o.ended_at IS NULL"
    " WHERE i.state <> 'ended'"
)


def _open(rows: list[asyncpg.Record]) -> list[OpenInteraction]:
    return [
        OpenInteraction(
            interaction_id=str(r["interaction_id"]),
            queue=r["queue"],
            channel=r["channel"],
            priority=r["priority"],
            skills=r["skills"],
            enqueued_at=r["enqueued_at"],
            # an open offer decides: offered until answered, then assigned
            state=("assigned" if r["answered_at"] else "offered") if r["agent_id"] else "waiting",
            agent_id=r["agent_id"],
            via=r["via"],
            offered_at=r["offered_at"],
        )
        for r in rows
    ]


class RoutingStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # Configuration --------------------------------------------------------------------------------

    async def queues(self) -> list[Queue]:
        rows = await self.pool.fetch("SELECT config FROM routing_queues ORDER BY id")
        return [Queue.model_validate(r["config"]) for r in rows]

    async def queue(self, queue_id: str) -> Queue | None:
        config = await self.pool.fetchval("SELECT config FROM routing_queues WHERE id = $1", queue_id)
        return None if config is None else Queue.model_validate(config)

    async def put_queues(self, queues: Iterable[Queue]) -> list[bool]:
        """Insert or replace; True for each queue that is new."""
        created = []
        async with self.pool.acquire() as conn, conn.transaction():
            for queue in queues:
                created.append(
                    await conn.fetchval(
                        "INSERT INTO routing_queues (id, name, config) VALUES ($1, $2, $3)"
                        " ON CONFLICT (id) DO UPDATE SET name = excluded.name, config = excluded.config,"
                        " updated_at = now() RETURNING xmax = 0",
                        queue.id,
                        queue.name,
                        queue.model_dump(mode="json"),
                    )
                )
        return created

    async def delete_queue(self, queue_id: str) -> bool:
        return await self.pool.fetchval("DELETE FROM routing_queues WHERE id = $1 RETURNING true", queue_id) is True

    async def agents(self) -> list[Agent]:
        return [_agent(r) for r in await self.pool.fetch(_SELECT_AGENTS + " ORDER BY id")]

    async def agent(self, agent_id: str) -> Agent | None:
        row = await self.pool.fetchrow(_SELECT_AGENTS + " WHERE id = $1", agent_id)
        return None if row is None else _agent(row)

    async def put_agents(self, agents: Iterable[Agent]) -> list[bool]:
        created = []
        async with self.pool.acquire() as conn, conn.transaction():
            for a in agents:
                created.append(
                    await conn.fetchval(
                        "INSERT INTO agents (id, name, sip_endpoint, queues, skills, teams, capacity)"
                        " VALUES ($1, $2, $3, $4, $5, $6, $7)"
                        " ON CONFLICT (id) DO UPDATE SET name = excluded.name, sip_endpoint = excluded.sip_endpoint,"
                        " queues = excluded.queues, skills = excluded.skills, teams = excluded.teams,"
                        " capacity = excluded.capacity, updated_at = now() RETURNING xmax = 0",
                        a.id,
                        a.name,
                        a.sip_endpoint,
                        a.queues,
                        a.skills,
                        a.teams,
                        dict(a.capacity),
                    )
                )
        return created

    async def delete_agent(self, agent_id: str) -> bool:
        """Agents that took interactions are referenced by them (interactions.agent_id): such an agent cannot
        be deleted, only taken out of its queues."""
        return await self.pool.fetchval("DELETE FROM agents WHERE id = $1 RETURNING true", agent_id) is True

    async def agent_in_use(self, agent_id: str) -> bool:
        return bool(
            await self.pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM interactions WHERE agent_id = $1)"
                " OR EXISTS (SELECT 1 FROM routing_offers WHERE agent_id = $1 AND ended_at IS NULL)",
                agent_id,
            )
        )

    # The record -----------------------------------------------------------------------------------

    async def queued(
        self,
        interaction_id: str,
        queue: str,
        channel: str,
        priority: int,
        skills: dict[str, int],
        enqueued_at: datetime,
    ) -> str | None:
        """Record an interaction routing was asked to place, before Redis hears of it. Returns None when it
        is new, else the state it already had (a duplicate request has no second effect)."""
        async with self.pool.acquire() as conn:
            inserted = await conn.fetchval(
                "INSERT INTO routing_interactions (interaction_id, queue, channel, priority, skills, enqueued_at,"
                " queues) VALUES ($1, $2, $3, $4, $5, $6, ARRAY[$2]) ON CONFLICT (interaction_id) DO NOTHING"
                " RETURNING true",
                uuid.UUID(interaction_id),
                queue,
                channel,
                priority,
                skills,
                enqueued_at,
            )
            if inserted:
                return None
            state: str = await conn.fetchval(
                "SELECT state FROM routing_interactions WHERE interaction_id = $1", uuid.UUID(interaction_id)
            )
            return state

    async def record(self, outcome: Outcome) -> None:
        """Write down what one script call decided, in its order, in one transaction."""
        if not outcome.events and not outcome.states:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            for event in outcome.events:
                await _apply(conn, event)
            if outcome.states:
                await conn.executemany(
                    "INSERT INTO agent_states (agent_id, state, presence, reason, interaction_id, wrapup_until, at)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    [
                        (
                            s.agent_id,
                            s.state,
                            s.presence,
                            s.reason,
                            uuid.UUID(s.interaction_id) if s.interaction_id else None,
                            ms_to_datetime(s.wrapup_until_ms) if s.wrapup_until_ms else None,
                            ms_to_datetime(s.at_ms),
                        )
                        for s in outcome.states
                    ],
                )

    async def end_open(self, interaction_id: str, reason: str, at: datetime, offer_outcome: str = "withdrawn") -> bool:
        """Close the record of an interaction the live state does not hold (Redis lost it, or it was taken
        out of Redis while this record could not be written): its open offer ends with `offer_outcome`, it
        ends with `reason`. False if the record had nothing open of it (ended already, or never routed)."""
        key = uuid.UUID(interaction_id)
        async with self.pool.acquire() as conn, conn.transaction():
            offers = await conn.execute(
                "UPDATE routing_offers SET ended_at = $2, outcome = $3 WHERE interaction_id = $1 AND ended_at IS NULL",
                key,
                at,
                offer_outcome,
            )
            ended = await conn.fetchval(
                "UPDATE routing_interactions SET state = 'ended', ended_at = $2, end_reason = $3"
                " WHERE interaction_id = $1 AND state <> 'ended' RETURNING true",
                key,
                at,
                reason,
            )
        return bool(ended) or offers != "UPDATE 0"

    # Reading back ---------------------------------------------------------------------------------

    async def last_states(self) -> dict[str, Presence]:
        rows = await self.pool.fetch(
            "SELECT DISTINCT ON (agent_id) agent_id, state, presence, reason, wrapup_until, at FROM agent_states"
            " ORDER BY agent_id, at DESC, id DESC"
        )
        return {
            r["agent_id"]: Presence(r["state"], r["presence"], r["reason"], r["wrapup_until"], r["at"]) for r in rows
        }

    async def open_interactions(self) -> list[OpenInteraction]:
        return _open(await self.pool.fetch(_OPEN + " ORDER BY i.enqueued_at, i.interaction_id"))

    async def open_interaction(self, interaction_id: str) -> OpenInteraction | None:
        found = _open(await self.pool.fetch(_OPEN + " AND i.interaction_id = $1", uuid.UUID(interaction_id)))
        return found[0] if found else None

    async def recent_answers(self, queue: str, since: datetime, limit: int) -> list[datetime]:
        """When interactions of `queue` were last answered (newest first), for the wait estimate."""
        rows = await self.pool.fetch(
            "SELECT o.answered_at FROM routing_offers o JOIN routing_interactions i USING (interaction_id)"
            " WHERE i.queue = $1 AND o.answered_at >= $2 ORDER BY o.answered_at DESC LIMIT $3",
            queue,
            since,
            limit,
        )
        return [r["answered_at"] for r in rows]

    async def reopen(
        self, interaction_id: str, reason: str, *, queue: str | None = None, enqueued_at: datetime | None = None
    ) -> OpenInteraction | None:
        """Take an interaction routing ended with `reason` back to waiting: with its first queued time and
        priority (a booked callback after a customer who did not answer), or in `queue` from `enqueued_at`
        (a transfer). None if it did not end so."""
        key = uuid.UUID(interaction_id)
        reopened = await self.pool.fetchval(
            "UPDATE routing_interactions SET state = 'waiting', ended_at = NULL, end_reason = NULL,"
            " agent_id = NULL, queue = coalesce($3, queue), queues = ARRAY[coalesce($3, queue)], places = NULL,"
            " enqueued_at = coalesce($4, enqueued_at)"
            " WHERE interaction_id = $1 AND state = 'ended' AND end_reason = $2 RETURNING true",
            key,
            reason,
            queue,
            enqueued_at,
        )
        return await self.open_interaction(interaction_id) if reopened else None

    async def history(self, agent_id: str, limit: int) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT state, presence, reason, interaction_id, wrapup_until, at FROM agent_states"
            " WHERE agent_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
            agent_id,
            limit,
        )
        return [dict(r) for r in rows]

    async def interaction(self, interaction_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        key = uuid.UUID(interaction_id)
        row = await self.pool.fetchrow("SELECT * FROM routing_interactions WHERE interaction_id = $1", key)
        if row is None:
            return None
        offers = await self.pool.fetch(
            "SELECT agent_id, queue, channel, offered_at, answered_at, ended_at, outcome FROM routing_offers"
            " WHERE interaction_id = $1 ORDER BY offered_at, id",
            key,
        )
        return dict(row), [dict(o) for o in offers]

    async def service_level(self, queue: str, since: datetime, within_s: int) -> tuple[int, int, int]:
        """Interactions of `queue` queued since `since`: (answered, answered within `within_s`, abandoned
        while waiting or ringing)."""
        row = await self.pool.fetchrow(
            "SELECT count(*) FILTER (WHERE o.answered_at IS NOT NULL) AS answered,"
            " count(*) FILTER (WHERE o.answered_at <= i.enqueued_at + make_interval(secs => $3)) AS in_target,"
            " count(*) FILTER (WHERE o.answered_at IS NULL AND i.state = 'ended') AS abandoned"
            " FROM routing_interactions i"
            " LEFT JOIN LATERAL (SELECT min(answered_at) AS answered_at FROM routing_offers"
            "   WHERE interaction_id = i.interaction_id) o ON true"
            " WHERE i.queue = $1 AND i.enqueued_at >= $2",
            queue,
            since,
            within_s,
        )
        assert row is not None
        return row["answered"], row["in_target"], row["abandoned"]


async def _apply(conn: Any, event: dict[str, Any]) -> None:
    kind = event.get("kind")
    key = uuid.UUID(str(event["interaction"]))
    at = ms_to_datetime(int(event["at"]))
    if kind == "offered":
        await conn.execute(
            "INSERT INTO routing_offers (interaction_id, agent_id, queue, channel, offered_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            key,
            event["agent"],
            event["via"],
            event["channel"],
            at,
        )
        await conn.execute(
            "UPDATE routing_interactions SET state = 'offered', agent_id = $2 WHERE interaction_id = $1",
            key,
            event["agent"],
        )
    elif kind == "answered":
        await conn.execute(
            "UPDATE routing_offers SET answered_at = $2 WHERE interaction_id = $1 AND ended_at IS NULL", key, at
        )
        await conn.execute("UPDATE routing_interactions SET state = 'assigned' WHERE interaction_id = $1", key)
    elif kind in ("not_answered", "requeued"):
        await _end_offer(conn, key, at, "not-answered" if kind == "not_answered" else "withdrawn")
        await conn.execute(
            "UPDATE routing_interactions SET state = 'waiting', agent_id = NULL WHERE interaction_id = $1", key
        )
    elif kind in ("released", "removed", "expired"):
        outcome = {"released": "released", "removed": "withdrawn", "expired": "expired"}[kind]
        if kind == "released" and event.get("state") != "assigned":
            outcome = "withdrawn"
        await _end_offer(conn, key, at, outcome)
        reason = event.get("reason") or {"released": "released", "expired": "offer-expired"}.get(kind, kind)
        await conn.execute(
            "UPDATE routing_interactions SET state = 'ended', ended_at = $2, end_reason = $3"
            " WHERE interaction_id = $1 AND state <> 'ended'",
            key,
            at,
            reason,
        )
    elif kind == "moved":  # a supervisor moved it to another queue: it waits there from its first time
        await conn.execute(
            "UPDATE routing_interactions SET queue = $2, queues = ARRAY[$2], places = $3, priority = $4"
            " WHERE interaction_id = $1",
            key,
            str(event["queue"]),
            str(event["places"]),
            int(event["priority"]),
        )
    elif kind == "escalated":
        places = str(event["places"])
        await conn.execute(
            "UPDATE routing_interactions SET queues = $2, places = $3 WHERE interaction_id = $1",
            key,
            [place.split("@", 1)[0] for place in places.split(" ")],
            places,
        )


async def _end_offer(conn: Any, key: uuid.UUID, at: datetime, outcome: str) -> None:
    await conn.execute(
        "UPDATE routing_offers SET ended_at = $2, outcome = $3 WHERE interaction_id = $1 AND ended_at IS NULL",
        key,
        at,
        outcome,
    )
