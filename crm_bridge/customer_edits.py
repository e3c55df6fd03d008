"""Changes to customers made by people through the API: create a customer with its identities, change its
profile and consent, remove an identity. Each change is one transaction; a merged-away customer refuses
changes (MergedCustomer names the survivor to act on instead)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import asyncpg

from crm_bridge.identity import CustomerNotFound, IdentityTaken, MergedCustomer, survivor_of

if TYPE_CHECKING:
    from hilo.db import Conn

PROFILE_FIELDS = ("display_name", "preferred_language", "preferred_channel")


async def load_customer(conn: Conn, customer_id: uuid.UUID) -> dict[str, Any] | None:
    """The customer with its profile, consent, merge pointer and identities; None if unknown."""
    row = await conn.fetchrow(
        "SELECT id, display_name, preferred_language, preferred_channel, consent, merged_into, created_at"
        " FROM customers WHERE id = $1",
        customer_id,
    )
    if row is None:
        return None
    return {**dict(row), "identities": await list_identities(conn, customer_id)}


async def list_identities(conn: Conn, customer_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, kind, value, system, created_at FROM identities WHERE customer_id = $1 ORDER BY id", customer_id
    )
    return [dict(r) for r in rows]


async def create_customer(pool: asyncpg.Pool, profile: dict[str, Any], identities: list[tuple[str, str]]) -> uuid.UUID:
    """A new customer with `profile` (PROFILE_FIELDS) and canonical (kind, value) identities, all or
    nothing: IdentityTaken if another customer already has one of them."""
    unknown = set(profile) - set(PROFILE_FIELDS)
    if unknown:
        raise ValueError(f"unknown profile fields: {sorted(unknown)}")
    async with pool.acquire() as conn, conn.transaction():
        customer_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO customers (display_name, preferred_language, preferred_channel)"
            " VALUES ($1, $2, $3) RETURNING id",
            *(profile.get(name) for name in PROFILE_FIELDS),
        )
        for kind, value in dict.fromkeys(identities):
            claimed = await conn.fetchval(
                "INSERT INTO identities (customer_id, kind, value) VALUES ($1, $2, $3)"
                " ON CONFLICT (kind, value) DO NOTHING RETURNING id",
                customer_id,
                kind,
                value,
            )
            if claimed is None:
                owner = await conn.fetchval(
                    "SELECT customer_id FROM identities WHERE kind = $1 AND value = $2", kind, value
                )
                raise IdentityTaken(kind, value, owner, customer_id)
        return customer_id


async def _lock_live(conn: Conn, customer_id: uuid.UUID, mode: str) -> None:
    assert mode in ("UPDATE", "SHARE")
    merged_into = await conn.fetchrow(
        f"SELECT merged_into FROM customers WHERE id = $1 FOR {mode}",  # noqa: S608 (mode checked above)
        customer_id,
    )
    if merged_into is None:
        raise CustomerNotFound(f"no customer {customer_id}")
    if merged_into["merged_into"] is not None:
        raise MergedCustomer(customer_id, (await survivor_of(conn, customer_id)).customer_id)


async def update_customer(
    pool: asyncpg.Pool,
    customer_id: uuid.UUID,
    profile: dict[str, Any],
    consent: dict[str, tuple[bool, str]],
) -> None:
    """Set the given profile fields (None clears one) and consent per channel: {channel: (granted, source)}."""
    unknown = set(profile) - set(PROFILE_FIELDS)
    if unknown:
        raise ValueError(f"unknown profile fields: {sorted(unknown)}")
    async with pool.acquire() as conn, conn.transaction():
        await _lock_live(conn, customer_id, "UPDATE")
        if profile:
            sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(profile, start=2))
            await conn.execute(
                f"UPDATE customers SET {sets} WHERE id = $1",  # noqa: S608 (names checked above)
                customer_id,
                *profile.values(),
            )
        for channel, (granted, source) in consent.items():
            await conn.execute(
                "UPDATE customers SET consent = consent || jsonb_build_object($2::text,"
                " jsonb_build_object('granted', $3::boolean, 'at', now(), 'source', $4::text)) WHERE id = $1",
                customer_id,
                channel,
                granted,
                source,
            )


async def unlink_identity(pool: asyncpg.Pool, customer_id: uuid.UUID, identity_id: int) -> dict[str, Any]:
    """Take an identity away from a live customer; returns the removed row. LookupError if the customer
    has no such identity. (A merge that moved this identity can no longer be undone exactly: unmerge
    will refuse and say so.)"""
    async with pool.acquire() as conn, conn.transaction():
        await _lock_live(conn, customer_id, "SHARE")
        row = await conn.fetchrow(
            "DELETE FROM identities WHERE id = $1 AND customer_id = $2 RETURNING id, kind, value, system, created_at",
            identity_id,
            customer_id,
        )
        if row is None:
            raise LookupError(f"customer {customer_id} has no identity {identity_id}")
        return dict(row)
