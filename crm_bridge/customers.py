"""Customers and their identities: find the customer behind an identity, creating one on first contact.

Two first contacts from the same number at the same moment must still give one customer: the unique
(kind, value) constraint decides, and the loser of the race reads the winner's row."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from hilo.db import Conn


@dataclass(frozen=True)
class Identification:
    customer_id: uuid.UUID
    display_name: str | None
    created: bool


async def find_by_identity(conn: Conn, kind: str, value: str) -> Identification | None:
    row = await conn.fetchrow(
        "SELECT c.id, c.display_name FROM identities i JOIN customers c ON c.id = i.customer_id"
        " WHERE i.kind = $1 AND i.value = $2",
        kind,
        value,
    )
    return Identification(row["id"], row["display_name"], created=False) if row else None


async def identify(pool: asyncpg.Pool, kind: str, value: str, display_name: str | None = None) -> Identification:
    async with pool.acquire() as conn:
        found = await find_by_identity(conn, kind, value)
        if found:
            return found
        async with conn.transaction():
            customer_id = await conn.fetchval(
                "INSERT INTO customers (display_name) VALUES ($1) RETURNING id", display_name
            )
            claimed = await conn.fetchval(
                "INSERT INTO identities (customer_id, kind, value) VALUES ($1, $2, $3)"
                " ON CONFLICT (kind, value) DO NOTHING RETURNING customer_id",
                customer_id,
                kind,
                value,
            )
            if claimed is not None:
                return Identification(customer_id, display_name, created=True)
            # Another contact won the race: undo our customer and use theirs.
            await conn.execute("DELETE FROM customers WHERE id = $1", customer_id)
        found = await find_by_identity(conn, kind, value)
        assert found is not None, "identity vanished after a conflicting insert"
        return found


async def create_anonymous(pool: asyncpg.Pool) -> Identification:
    customer_id = await pool.fetchval("INSERT INTO customers DEFAULT VALUES RETURNING id")
    return Identification(customer_id, None, created=True)


async def get_customer(conn: Conn, customer_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT id, display_name, preferred_language, created_at FROM customers WHERE id = $1", customer_id
    )
    if row is None:
        return None
    identities = await conn.fetch("SELECT kind, value FROM identities WHERE customer_id = $1 ORDER BY id", customer_id)
    return {
        "id": str(row["id"]),
        "display_name": row["display_name"],
        "preferred_language": row["preferred_language"],
        "created_at": row["created_at"].isoformat(),
        "identities": [{"kind": i["kind"], "value": i["value"]} for i in identities],
    }


async def set_consent(
    pool: asyncpg.Pool, customer_id: uuid.UUID, channel: str, granted: bool, source: str
) -> dict[str, Any]:
    """Record whether the customer agrees to be contacted on `channel` (voice, sms, whatsapp, webchat,
    email), when and where that was said; returns the customer's whole consent map. Only a live customer
    (not merged into another) takes consent: resolve the survivor first."""
    if channel not in ("voice", "sms", "whatsapp", "webchat", "email"):
        raise ValueError(f"no consent channel {channel!r}")
    if not source.strip():
        raise ValueError("consent needs its source (e.g. 'ivr', 'agent:bob', 'web form')")
    consent: dict[str, Any] | None = await pool.fetchval(
        "UPDATE customers SET consent = consent || jsonb_build_object($2::text,"
        " jsonb_build_object('granted', $3::boolean, 'at', now(), 'source', $4::text))"
        " WHERE id = $1 AND merged_into IS NULL RETURNING consent",
        customer_id,
        channel,
        granted,
        source,
    )
    if consent is None:
        raise LookupError(f"no live customer {customer_id} (unknown, or merged into another customer)")
    return consent
