"""Interactions and the append-only timeline. A fact is stored in PostgreSQL first, then handed to the
notifier, so nothing published can be missing from the store: `Timeline.record` does both.

`open_interaction` and `append` are the only writes of a new interaction and of a timeline event. They take
the pool or a connection, so a feature that writes a fact together with rows of its own does it in its own
transaction, and publishes the event itself once that has committed."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import asyncpg
from aiohttp import web

if TYPE_CHECKING:
    from hilo.db import Conn

Publish = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Interaction:
    id: uuid.UUID
    customer_id: uuid.UUID
    channel: str
    context: dict[str, Any] = field(default_factory=dict)


def event_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "at": row["at"].isoformat(),
        "channel": row["channel"],
        "customer_id": str(row["customer_id"]),
        "interaction_id": str(row["interaction_id"]) if row["interaction_id"] else None,
        "data": row["data"],
    }


# Event data that is not shared beyond the store (webhooks, and timeline readers other than admins), by type:
# a transcript's words. A webhook receiver could never be made to forget them when the recording is deleted,
# and a supervisor reading a customer's timeline may be outside the recording's teams. They get the event
# with `withheld` naming what was left out, and fetch it where access is checked (the event's
# `transcript_url`, GET /api/recordings/{id}/transcript), gone once the recording is deleted.
WITHHELD: dict[str, tuple[str, ...]] = {"recording.transcribed": ("text",)}


def shareable(event: dict[str, Any]) -> dict[str, Any]:
    """The event without its WITHHELD data (a redacted event's null text is left as it is)."""
    keys = [k for k in WITHHELD.get(event["type"], ()) if event["data"].get(k) is not None]
    if not keys:
        return event
    data = {k: v for k, v in event["data"].items() if k not in keys}
    return {**event, "data": {**data, "withheld": keys}}


class InteractionDetails(TypedDict, total=False):
    """What a new interaction may also be given (each None by default)."""

    dialed: str | None
    channel_ref: str | None  # the Asterisk channel id of the customer's leg
    context: dict[str, Any] | None
    started_at: datetime | None  # for facts that happened earlier (a provider's own timestamp, a history import)


async def open_interaction(
    db: asyncpg.Pool | Conn, customer_id: uuid.UUID, channel: str, direction: str, **details: Unpack[InteractionDetails]
) -> uuid.UUID:
    """A new interaction (in the IVR state); its id."""
    interaction_id: uuid.UUID = await db.fetchval(
        "INSERT INTO interactions"
        " (customer_id, channel, direction, state, dialed, channel_ref, context, started_at)"
        " VALUES ($1, $2, $3, 'ivr', $4, $5, $6, coalesce($7, now())) RETURNING id",
        customer_id,
        channel,
        direction,
        details.get("dialed"),
        details.get("channel_ref"),
        details.get("context") or {},
        details.get("started_at"),
    )
    return interaction_id


# An event's customer and channel default to the interaction's (its customer as it is now, after any merge).
_APPEND = """
INSERT INTO timeline_events (customer_id, interaction_id, type, channel, data, at)
VALUES (coalesce($1, (SELECT customer_id FROM interactions WHERE id = $2)), $2, $3,
        coalesce($4, (SELECT channel FROM interactions WHERE id = $2)), $5, coalesce($6, clock_timestamp()))
RETURNING *"""


async def append(
    db: asyncpg.Pool | Conn,
    interaction_id: uuid.UUID,
    customer_id: uuid.UUID | None,
    channel: str | None,
    type_: str,
    data: dict[str, Any],
    *,
    at: datetime | None = None,
) -> dict[str, Any]:
    """Write one event on the timeline; the event as it is published (`event_json`). Publishing is the
    caller's, once the event is committed. `customer_id` or `channel` None: the interaction's. `at` is for
    facts that happened earlier; by default the fact happens now."""
    row = await db.fetchrow(_APPEND, customer_id, interaction_id, type_, channel, data, at)
    assert row is not None
    return event_json(row)


class Timeline:
    def __init__(self, pool: asyncpg.Pool, publish: Publish) -> None:
        self.pool = pool
        self.publish = publish

    async def start_interaction(
        self, customer_id: uuid.UUID, channel: str, direction: str, **details: Unpack[InteractionDetails]
    ) -> Interaction:
        interaction_id = await open_interaction(self.pool, customer_id, channel, direction, **details)
        return Interaction(interaction_id, customer_id, channel, dict(details.get("context") or {}))

    async def record(
        self, interaction: Interaction, type_: str, data: dict[str, Any] | None = None, *, at: datetime | None = None
    ) -> dict[str, Any]:
        """`at` is for facts that happened earlier (a provider's own timestamp, a history import); by
        default the fact happens now."""
        event = await append(
            self.pool, interaction.id, interaction.customer_id, interaction.channel, type_, data or {}, at=at
        )
        await self.publish(event)
        return event

    async def update(self, interaction: Interaction, **fields: Any) -> None:
        """Set columns of the interaction (state, queue, agent_id, answered_at, ...) and merge its context."""
        allowed = {"state", "queue", "agent_id", "answered_at"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown interaction fields: {sorted(unknown)}")
        sets = [f"{name} = ${i}" for i, name in enumerate(fields, start=3)]
        await self.pool.execute(
            f"UPDATE interactions SET context = context || $2, {', '.join(sets) or 'id = id'}"  # noqa: S608 (names checked above)
            " WHERE id = $1",
            interaction.id,
            interaction.context,
            *fields.values(),
        )

    async def end_interaction(
        self, interaction: Interaction, outcome: str, hangup_by: str, ended_at: datetime | None = None
    ) -> bool:
        """End it once: returns False if it had already ended (a duplicate hang-up has one effect)."""
        ended = await self.pool.fetchval(
            "UPDATE interactions SET state = 'ended', outcome = $2, hangup_by = $3,"
            " ended_at = coalesce($4, now()), context = context || $5"
            " WHERE id = $1 AND ended_at IS NULL RETURNING true",
            interaction.id,
            outcome,
            hangup_by,
            ended_at,
            interaction.context,
        )
        if not ended:
            return False
        await self.record(interaction, "interaction.ended", {"outcome": outcome, "hangup_by": hangup_by}, at=ended_at)
        return True

    async def customer_timeline(self, customer_id: uuid.UUID, limit: int = 500) -> list[dict[str, Any]]:
        """The customer's events and those of every customer merged into it (directly or through a chain
        of merges): a merge never rewrites events, it points the merged customer at the survivor."""
        rows = await self.pool.fetch(
            "WITH RECURSIVE family (id) AS ("
            " SELECT $1::uuid UNION SELECT c.id FROM customers c JOIN family f ON c.merged_into = f.id)"
            " SELECT * FROM timeline_events WHERE customer_id IN (SELECT id FROM family) ORDER BY at, id LIMIT $2",
            customer_id,
            limit,
        )
        return [event_json(r) for r in rows]

    async def page(
        self, customer_id: uuid.UUID, before: int | None = None, limit: int = 500
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One page of the customer's timeline (merged customers included), oldest first: the `limit`
        newest events older than event `before` (or the newest of all), and the `before` of the next older
        page (None on the oldest). LookupError if `before` is not an event of this timeline."""
        async with self.pool.acquire() as conn:
            cursor = None
            if before is not None:
                cursor = await conn.fetchrow(_PAGE_CURSOR, customer_id, before)
                if cursor is None:
                    raise LookupError(f"event {before} is not on this customer's timeline")
            rows = await conn.fetch(
                _PAGE,
                customer_id,
                cursor["at"] if cursor else None,
                cursor["id"] if cursor else None,
                limit + 1,
            )
        newest_first = [event_json(r) for r in rows[:limit]]
        next_before = newest_first[-1]["id"] if len(rows) > limit else None
        return newest_first[::-1], next_before


# Both over the family of $1: the customer and every customer merged into it, directly or in a chain.
_PAGE_CURSOR = """
WITH RECURSIVE family (id) AS (SELECT $1::uuid UNION SELECT c.id FROM customers c JOIN family f ON c.merged_into = f.id)
SELECT at, id FROM timeline_events WHERE id = $2 AND customer_id IN (SELECT id FROM family)
"""
_PAGE = """
WITH RECURSIVE family (id) AS (SELECT $1::uuid UNION SELECT c.id FROM customers c JOIN family f ON c.merged_into = f.id)
SELECT * FROM timeline_events WHERE customer_id IN (SELECT id FROM family)
  AND ($2::timestamptz IS NULL OR (at, id) < ($2, $3::bigint))
ORDER BY at DESC, id DESC LIMIT $4
"""


TIMELINE = web.AppKey("timeline", Timeline)
