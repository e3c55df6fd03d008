"""Cases: a customer's matter that spans interactions (open → pending → closed), with the interactions
linked to it. A case belongs to a live customer; an interaction linked to it must be that customer's.
Merges move cases with the rest (see identity.merge)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import asyncpg

from crm_bridge.identity import CustomerNotFound, MergedCustomer, survivor_of

if TYPE_CHECKING:
    from hilo.db import Conn

STATUSES = ("open", "pending", "closed")


class CaseNotFound(LookupError):
    pass


class InteractionNotFound(LookupError):
    pass


class ForeignInteraction(Exception):
    """The interaction is another customer's: a case only gathers its own customer's interactions."""

    def __init__(self, interaction_id: uuid.UUID, owner_id: uuid.UUID, customer_id: uuid.UUID) -> None:
        super().__init__(f"interaction {interaction_id} belongs to customer {owner_id}, not {customer_id}")
        self.owner_id = owner_id


_CASE = """
SELECT c.*, coalesce(array_agg(ci.interaction_id ORDER BY ci.linked_at, ci.interaction_id)
                     FILTER (WHERE ci.interaction_id IS NOT NULL), '{}') AS interactions
FROM cases c LEFT JOIN case_interactions ci ON ci.case_id = c.id
"""


async def get_case(conn: Conn, case_id: uuid.UUID) -> dict[str, Any]:
    row = await conn.fetchrow(_CASE + " WHERE c.id = $1 GROUP BY c.id", case_id)
    if row is None:
        raise CaseNotFound(f"no case {case_id}")
    return dict(row)


async def list_cases(conn: Conn, customer_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await conn.fetch(_CASE + " WHERE c.customer_id = $1 GROUP BY c.id ORDER BY c.created_at, c.id", customer_id)
    return [dict(r) for r in rows]


async def _check_interaction(conn: Conn, interaction_id: uuid.UUID, customer_id: uuid.UUID) -> None:
    owner = await conn.fetchval("SELECT customer_id FROM interactions WHERE id = $1", interaction_id)
    if owner is None:
        raise InteractionNotFound(f"no interaction {interaction_id}")
    if owner != customer_id:
        raise ForeignInteraction(interaction_id, owner, customer_id)


async def create_case(
    pool: asyncpg.Pool, customer_id: uuid.UUID, subject: str, interaction_id: uuid.UUID | None
) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        # FOR SHARE: a merge of this customer waits for the case to exist (and then moves it), or the
        # case waits for the merge (and is refused, naming the survivor).
        row = await conn.fetchrow("SELECT merged_into FROM customers WHERE id = $1 FOR SHARE", customer_id)
        if row is None:
            raise CustomerNotFound(f"no customer {customer_id}")
        if row["merged_into"] is not None:
            raise MergedCustomer(customer_id, (await survivor_of(conn, customer_id)).customer_id)
        if interaction_id is not None:
            await _check_interaction(conn, interaction_id, customer_id)
        case_id = await conn.fetchval(
            "INSERT INTO cases (customer_id, interaction_id, subject) VALUES ($1, $2, $3) RETURNING id",
            customer_id,
            interaction_id,
            subject,
        )
        if interaction_id is not None:
            await conn.execute(
                "INSERT INTO case_interactions (case_id, interaction_id) VALUES ($1, $2)", case_id, interaction_id
            )
        return await get_case(conn, case_id)


async def update_case(
    pool: asyncpg.Pool, case_id: uuid.UUID, *, status: str | None = None, subject: str | None = None
) -> dict[str, Any]:
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    async with pool.acquire() as conn, conn.transaction():
        updated = await conn.fetchval(
            "UPDATE cases SET status = coalesce($2, status), subject = coalesce($3, subject), updated_at = now()"
            " WHERE id = $1 RETURNING id",
            case_id,
            status,
            subject,
        )
        if updated is None:
            raise CaseNotFound(f"no case {case_id}")
        return await get_case(conn, case_id)


async def link_interaction(
    pool: asyncpg.Pool, case_id: uuid.UUID, interaction_id: uuid.UUID
) -> tuple[dict[str, Any], bool]:
    """Link an interaction of the case's customer to the case; (case, False) if it was linked already."""
    async with pool.acquire() as conn, conn.transaction():
        customer_id = await conn.fetchval("SELECT customer_id FROM cases WHERE id = $1 FOR UPDATE", case_id)
        if customer_id is None:
            raise CaseNotFound(f"no case {case_id}")
        await _check_interaction(conn, interaction_id, customer_id)
        linked = await conn.fetchval(
            "INSERT INTO case_interactions (case_id, interaction_id) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING RETURNING true",
            case_id,
            interaction_id,
        )
        if linked:
            await conn.execute("UPDATE cases SET updated_at = now() WHERE id = $1", case_id)
        return await get_case(conn, case_id), bool(linked)
