"""Recording metadata in PostgreSQL (`recordings`) and the audit of every use (`recording_audit`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from crm_bridge.timeline import event_json
from recordings.audio import Span

if TYPE_CHECKING:
    from hilo.db import Db
    from routing.scope import Scope


@dataclass(frozen=True)
class Recording:
    id: uuid.UUID
    kind: str
    interaction_id: uuid.UUID
    customer_id: uuid.UUID
    agent_id: str | None
    queue: str | None
    state: str
    asterisk_name: str
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    paused_spans: list[dict[str, Any]]
    storage_key: str | None
    key_id: str | None
    sha256: str | None
    size_bytes: int | None
    retention_days: int
    delete_after: datetime
    legal_hold: bool
    hold_reason: str | None
    failure: str | None
    deleted_at: datetime | None
    leg: str = "mixed"  # mixed (the conversation, or a voicemail / flow recording), caller, agent
    mixed_id: uuid.UUID | None = None  # a leg's mixed recording

    @classmethod
    def of(cls, row: asyncpg.Record) -> Recording:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    @property
    def paused(self) -> bool:
        return bool(self.paused_spans) and self.paused_spans[-1].get("end_s") is None

    def spans(self, end_s: float) -> list[Span]:
        """The paused spans, one still open ending at `end_s`."""
        return [
            Span(float(s["start_s"]), float(s["end_s"] if s.get("end_s") is not None else end_s))
            for s in self.paused_spans
        ]


_COLUMNS = ", ".join(Recording.__dataclass_fields__)


async def create(
    conn: Db,
    *,
    kind: str,
    interaction_id: uuid.UUID,
    customer_id: uuid.UUID,
    agent_id: str | None,
    queue: str | None,
    asterisk_name: str,
    started_at: datetime,
    retention_days: int,
    recording_id: uuid.UUID | None = None,
    leg: str = "mixed",
    mixed_id: uuid.UUID | None = None,
) -> Recording:
    row = await conn.fetchrow(
        f"INSERT INTO recordings (id, kind, interaction_id, customer_id, agent_id, queue, asterisk_name, started_at,"  # noqa: S608 (column names are ours)
        f" retention_days, delete_after, leg, mixed_id)"
        f" VALUES (coalesce($1, gen_random_uuid()), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        f" RETURNING {_COLUMNS}",
        recording_id,
        kind,
        interaction_id,
        customer_id,
        agent_id,
        queue,
        asterisk_name,
        started_at,
        retention_days,
        started_at + timedelta(days=retention_days),
        leg,
        mixed_id,
    )
    assert row is not None
    return Recording.of(row)


async def get(conn: Db, recording_id: uuid.UUID, *, for_update: bool = False) -> Recording | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM recordings WHERE id = $1{lock}", recording_id)  # noqa: S608
    return Recording.of(row) if row else None


async def group(conn: Db, rec: Recording, *, for_update: bool = False) -> list[Recording]:
    """Every recording of `rec`'s conversation: the mixed one first, then its legs (just `rec` when it has
    none)."""
    mixed = rec.mixed_id or rec.id
    lock = " FOR UPDATE" if for_update else ""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM recordings WHERE id = $1 OR mixed_id = $1"  # noqa: S608
        f" ORDER BY mixed_id IS NOT NULL, leg, id{lock}",
        mixed,
    )
    return [Recording.of(r) for r in rows]


async def legs_of(conn: Db, mixed_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Recording]]:
    """The caller and agent legs of these mixed recordings, by mixed recording."""
    found: dict[uuid.UUID, list[Recording]] = {m: [] for m in mixed_ids}
    if not mixed_ids:
        return found
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM recordings WHERE mixed_id = ANY($1::uuid[]) ORDER BY leg, id",  # noqa: S608
        mixed_ids,
    )
    for row in rows:
        found[row["mixed_id"]].append(Recording.of(row))
    return found


async def listing(
    conn: Db,
    scope: Scope,
    *,
    interaction_id: uuid.UUID | None = None,
    customer_id: uuid.UUID | None = None,
    limit: int = 50,
) -> list[Recording]:
    """The recordings in `scope` (routing/scope.py), newest first; legs are not listed on their own (see
    `legs_of`)."""
    allowed, args = scope.condition(4)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM recordings r WHERE ($1::uuid IS NULL OR interaction_id = $1)"  # noqa: S608
        f" AND ($2::uuid IS NULL OR customer_id = $2) AND r.leg = 'mixed' AND {allowed}"
        " ORDER BY started_at DESC, id LIMIT $3",
        interaction_id,
        customer_id,
        limit,
        *args,
    )
    return [Recording.of(r) for r in rows]


async def update(conn: Db, recording_id: uuid.UUID, **fields: Any) -> Recording:
    allowed = {
        "state",
        "ended_at",
        "duration_s",
        "paused_spans",
        "storage_key",
        "key_id",
        "sha256",
        "size_bytes",
        "legal_hold",
        "hold_reason",
        "failure",
        "deleted_at",
    }
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"unknown recording fields: {sorted(unknown)}")
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, start=2))
    row = await conn.fetchrow(
        f"UPDATE recordings SET {sets}, updated_at = now() WHERE id = $1 RETURNING {_COLUMNS}",  # noqa: S608
        recording_id,
        *fields.values(),
    )
    if row is None:
        raise LookupError(f"no recording {recording_id}")
    return Recording.of(row)


async def audit(
    conn: Db, recording_id: uuid.UUID, action: str, actor: str, detail: dict[str, Any] | None = None
) -> None:
    await conn.execute(
        "INSERT INTO recording_audit (recording_id, action, actor, detail) VALUES ($1, $2, $3, $4)",
        recording_id,
        action,
        actor,
        detail or {},
    )


async def audit_trail(conn: Db, recording_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT action, actor, detail, at FROM recording_audit WHERE recording_id = $1 ORDER BY at, id",
        recording_id,
    )
    return [{"action": r["action"], "actor": r["actor"], "detail": r["detail"], "at": r["at"]} for r in rows]


_TIMELINE_INSERT = (
    "INSERT INTO timeline_events (customer_id, interaction_id, type, channel, data)"
    " SELECT r.customer_id, r.interaction_id, $2, i.channel, $3 FROM recordings r"
    " JOIN interactions i ON i.id = r.interaction_id WHERE r.id = $1 RETURNING *"
)


async def timeline_event(conn: Db, recording_id: uuid.UUID, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    """A recording's fact on its customer's timeline, written in the caller's transaction with the change it
    reports (a crash cannot keep the one and lose the other); the caller publishes it once that commits."""
    row = await conn.fetchrow(_TIMELINE_INSERT, recording_id, type_, data)
    if row is None:
        raise LookupError(f"no recording {recording_id}")
    return event_json(row)
