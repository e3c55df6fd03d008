"""An agent's wrap-up of an interaction: a disposition from the configured list and an optional note.

The wrap-up row and its timeline events (`agent.disposition`, and `agent.note` when there is a note) are
written in one transaction, then published: what the agent was told is saved is saved. One wrap-up per
interaction (primary key): submitting the same one again has no further effect; a different one is
refused, so the timeline never shows two dispositions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from console.config import ConsoleConfig
from crm_bridge.timeline import Publish, append


class WrapupError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Wrapup:
    disposition: str
    note: str


@dataclass(frozen=True)
class WrapupResult:
    created: bool  # False: the same wrap-up was already saved
    events: list[dict[str, Any]]


class WrapupConflict(Exception):
    def __init__(self, existing: Wrapup) -> None:
        super().__init__("this interaction already has a different wrap-up")
        self.existing = existing


def parse_wrapup(body: Any, config: ConsoleConfig) -> Wrapup:
    if not isinstance(body, dict):
        raise WrapupError("body", 'must be a JSON object like {"disposition": "resolved", "note": "..."}')
    unknown = sorted(set(body) - {"disposition", "note"})
    if unknown:
        raise WrapupError(unknown[0], "unknown field (expected disposition and note)")
    disposition = body.get("disposition")
    if disposition not in config.dispositions:
        raise WrapupError("disposition", f"must be one of {', '.join(config.dispositions)}")
    note = body.get("note", "")
    if note is None:
        note = ""
    if not isinstance(note, str):
        raise WrapupError("note", "must be text")
    note = note.strip()
    if len(note) > config.note_max_length:
        raise WrapupError("note", f"is {len(note)} characters long; at most {config.note_max_length}")
    return Wrapup(disposition, note)


async def save_wrapup(
    pool: asyncpg.Pool,
    publish: Publish,
    interaction_id: uuid.UUID,
    wrapup: Wrapup,
    *,
    agent_id: str | None,
    by: str,
) -> WrapupResult:
    """`by`: who wraps it up, an actor of hilo/audit.py (kept in `interaction_wrapups.username` and as the
    events' `by`). Raises LookupError for an unknown interaction, WrapupConflict for a different second wrap-up."""
    async with pool.acquire() as conn, conn.transaction():
        interaction = await conn.fetchrow(
            "SELECT customer_id, channel FROM interactions WHERE id = $1 FOR SHARE", interaction_id
        )
        if interaction is None:
            raise LookupError(f"no interaction {interaction_id}")
        inserted = await conn.fetchval(
            "INSERT INTO interaction_wrapups (interaction_id, agent_id, username, disposition, note)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (interaction_id) DO NOTHING RETURNING true",
            interaction_id,
            agent_id,
            by,
            wrapup.disposition,
            wrapup.note,
        )
        if not inserted:
            row = await conn.fetchrow(
                "SELECT disposition, note FROM interaction_wrapups WHERE interaction_id = $1", interaction_id
            )
            assert row is not None
            existing = Wrapup(row["disposition"], row["note"])
            if existing != wrapup:
                raise WrapupConflict(existing)
            return WrapupResult(created=False, events=[])
        facts = [("agent.disposition", {"disposition": wrapup.disposition})]
        if wrapup.note:
            facts.append(("agent.note", {"note": wrapup.note}))
        events = [
            await append(
                conn,
                interaction_id,
                interaction["customer_id"],
                interaction["channel"],
                type_,
                {"agent": agent_id, "by": by, **data},
            )
            for type_, data in facts
        ]
    for event in events:  # durable first (committed above), then fanned out
        await publish(event)
    return WrapupResult(created=True, events=events)
