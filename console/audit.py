"""The audit of actions on live work (table supervisor_actions, migration 014): supervisors listening,
whispering, barging, moving waiting interactions, setting agents' states; agents holding their calls. Written
for every attempt, refused by the call or Asterisk too (`ok` false, with the reason), so the record shows
what was tried as well as what was done. `actor` is in the one form of hilo/audit.py (`user:maria@console`,
`token:admin@api`); `actor_role` is the role they acted with."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from hilo.audit import actor
from hilo.web.sessions import Principal


async def audit(
    pool: asyncpg.Pool,
    who: Principal,
    action: str,
    target_kind: str,
    target_id: str,
    *,
    ok: bool = True,
    detail: dict[str, Any] | None = None,
) -> int:
    row_id: int = await pool.fetchval(
        "INSERT INTO supervisor_actions (actor, actor_role, action, target_kind, target_id, ok, detail)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        actor(who),
        who.role,
        action,
        target_kind,
        target_id,
        ok,
        detail or {},
    )
    return row_id


async def recent(
    pool: asyncpg.Pool, *, limit: int, target_id: str | None = None, before: datetime | None = None
) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT id, at, actor, actor_role, action, target_kind, target_id, ok, detail FROM supervisor_actions"
        " WHERE ($1::text IS NULL OR target_id = $1) AND ($2::timestamptz IS NULL OR at < $2)"
        " ORDER BY at DESC, id DESC LIMIT $3",
        target_id,
        before,
        limit,
    )
    return [{**dict(r), "at": r["at"].isoformat()} for r in rows]
