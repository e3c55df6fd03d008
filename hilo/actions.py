"""The audit of actions on live work (table supervisor_actions, migrations 014 and 023): supervisors
listening, whispering, barging, moving waiting interactions, transferring calls, setting agents' states;
agents holding and transferring their calls; and every refusal of the scope rule (routing/scope.py). Written
for every attempt, refused by the scope, the call or Asterisk too (`ok` false, with the reason), so the record
shows what was tried as well as what was done. `actor` is in the one form of hilo/audit.py
(`user:maria@console`, `token:admin@api`); `actor_role` is the role they acted with.

In the kernel because every layer that refuses or does such an action writes here: the console's routes,
and routing's own API."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from hilo.audit import actor
from hilo.web.sessions import Principal

if TYPE_CHECKING:
    from hilo.db import Db


async def audit(
    db: Db,
    who: Principal,
    action: str,
    target_kind: str,
    target_id: str,
    *,
    ok: bool = True,
    detail: dict[str, Any] | None = None,
) -> int:
    row_id: int = await db.fetchval(
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
    db: Db, *, limit: int, target_id: str | None = None, before: datetime | None = None
) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT id, at, actor, actor_role, action, target_kind, target_id, ok, detail FROM supervisor_actions"
        " WHERE ($1::text IS NULL OR target_id = $1) AND ($2::timestamptz IS NULL OR at < $2)"
        " ORDER BY at DESC, id DESC LIMIT $3",
        target_id,
        before,
        limit,
    )
    return [{**dict(r), "at": r["at"].isoformat()} for r in rows]
