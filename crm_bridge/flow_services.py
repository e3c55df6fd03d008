"""What a flow's `lookup` and `verify:` steps ask of the customer store, the same for a call (ivr/inbound.py,
on the pool) and for a conversation (bridges/conversations.py, on the connection of the turn's transaction)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import asyncpg

from crm_bridge import identity, verification

if TYPE_CHECKING:
    from hilo.db import Conn


async def lookup_customer(
    db: asyncpg.Pool | Conn, kind: str, value: str, *, default_region: str | None
) -> dict[str, Any] | None:
    """The live customer with identity `kind` `value` as the flow sees it ({"id", "name"}), or None when
    nobody has it or the value cannot be one of that kind."""
    # `identity: account` (any kind that is not a built-in one) names an outside system's ids,
    # stored as the external identity `account:<value>`.
    if kind not in identity.KINDS:
        kind, value = "external", f"{kind}:{value}"
    try:
        found = await identity.resolve(db, kind, value, default_region)
    except identity.InvalidIdentity:
        return None
    if found is None:
        return None
    return {"id": str(found.customer_id), "name": found.display_name}


async def verify_customer(db: asyncpg.Pool | Conn, customer_id: str, field: str, given: str) -> bool:
    """Whether `given` matches the customer's secret `field` (crm_bridge/verification.py); False for a field
    that is not a secret one."""
    if field not in verification.FIELDS:
        return False
    return await verification.verify(db, uuid.UUID(customer_id), field, given)
