"""Identities of every kind, the customer behind one, and merging two customers (and undoing it).

An identity is a (kind, value) pair whose value is in canonical form, so the same person written two
ways is one identity:

- phone, whatsapp: E.164 (`+34911222333`); a WhatsApp wa_id is the digits of an international number;
- whatsapp_bsuid: WhatsApp's business-scoped user id (arrives with no phone number), kept as given;
- email: lowercased;
- webchat: the chat widget's visitor token, kept as given;
- external: an id in an outside system, stored as `<system>:<id>` (e.g. `salesforce:0035g00000AbCdE`).

Merging never rewrites the timeline (it is append-only): the merged customer keeps its events and points
at the survivor through `customers.merged_into`; a customer's timeline includes every customer merged into
it. Identities, interactions and cases move to the survivor, and the audit row in `customer_merges` says
exactly which, so `unmerge` restores exactly the split that was there before."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import phonenumbers

from crm_bridge import customers
from crm_bridge.customers import Identification
from crm_bridge.phones import InvalidPhoneNumber, to_e164
from hilo.db import connection

if TYPE_CHECKING:
    from hilo.db import Conn

KINDS = ("phone", "whatsapp", "whatsapp_bsuid", "email", "webchat", "external")

_MAX_OPAQUE = 256
_MAX_EMAIL = 254
# Deliberately simple and linear (no nested ambiguous repetition): a dot-atom local part, then a domain
# of at least two labels. Quoted local parts and IP-literal domains are not accepted.
_EMAIL = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
)
# Same rule as the identities_external_namespaced constraint in migration 002.
_SYSTEM = re.compile(r"[a-z][a-z0-9_.-]{0,39}")


class InvalidIdentity(ValueError):
    """A raw identity that cannot be put in canonical form; the message names the kind and the problem."""

    def __init__(self, kind: str, problem: str) -> None:
        super().__init__(f"invalid {kind} identity: {problem}")
        self.kind = kind
        self.problem = problem


class CustomerNotFound(LookupError):
    pass


class MergeNotFound(LookupError):
    pass


class IdentityTaken(Exception):
    """The identity already belongs to another customer (merge the two customers instead)."""

    def __init__(self, kind: str, value: str, owner_id: uuid.UUID, customer_id: uuid.UUID) -> None:
        super().__init__(
            f"{kind} identity {value!r} belongs to customer {owner_id}, not {customer_id}:"
            " merge the two customers to bring them together"
        )
        self.kind = kind
        self.value = value
        self.owner_id = owner_id
        self.customer_id = customer_id


class MergedCustomer(Exception):
    """The customer was merged into another one: act on the survivor instead."""

    def __init__(self, customer_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
        super().__init__(f"customer {customer_id} is merged into {survivor_id}: use that customer")
        self.customer_id = customer_id
        self.survivor_id = survivor_id


class MergeRefused(Exception):
    pass


class UnmergeRefused(Exception):
    pass


# Normalisation -------------------------------------------------------------------------------------


def normalize(kind: str, raw: str, default_region: str | None = None, *, system: str | None = None) -> str:
    """The canonical value of an identity, or InvalidIdentity saying what is wrong.

    `default_region` (e.g. "ES") reads phone numbers written in national form. External ids take their
    system either as `system=` or inside `raw` as `system:id`."""
    if not isinstance(raw, str):
        raise InvalidIdentity(kind, f"expected text, got {type(raw).__name__}")
    if system is not None and kind != "external":
        raise InvalidIdentity(kind, "only external identities have a system")
    if kind == "phone":
        return _phone(kind, raw, default_region)
    if kind == "whatsapp":
        return _wa_id(raw)
    if kind in ("whatsapp_bsuid", "webchat"):
        return _opaque(kind, raw)
    if kind == "email":
        return _email(raw)
    if kind == "external":
        return _external(raw, system)
    raise InvalidIdentity(kind, f"unknown kind (known: {', '.join(KINDS)})")


def external_parts(value: str) -> tuple[str, str]:
    """(system, id) of a canonical external identity value."""
    system, sep, ext_id = value.partition(":")
    if not sep:
        raise InvalidIdentity("external", f"{value!r} is not of the form system:id")
    return system, ext_id


def _phone(kind: str, raw: str, default_region: str | None) -> str:
    try:
        # "ZZ" is phonenumbers' unknown region: without a default region only +country numbers parse.
        e164 = to_e164(raw, default_region or "ZZ")
    except InvalidPhoneNumber as exc:
        raise InvalidIdentity(kind, str(exc)) from exc
    return brazil_mobile_canonical(e164)


def brazil_mobile_canonical(e164: str) -> str:
    """Brazil's mobile ninth digit: the same mobile is written with 9 digits (+55 11 98765-4321) or in the
    old 8-digit form (+55 11 8765-4321, still used by old contact lists and by WhatsApp wa_ids of accounts
    registered before the change). The 9-digit form is canonical.

    Rule: a Brazilian number of 2 area digits + 8 subscriber digits, whose subscriber part starts with 5-9
    (the ranges mobiles used; 2-4 are landlines), that phonenumbers does NOT accept as valid as written,
    and that becomes a valid MOBILE number once a 9 is put before the subscriber part, is that mobile.
    A number phonenumbers accepts as written (landlines, and the few 8-digit ranges still assigned, e.g.
    some +55 21 7xxx-xxxx) is left alone: it is a different number."""
    if not e164.startswith("+55") or len(e164) != 13:
        return e164
    area, subscriber = e164[3:5], e164[5:]
    if subscriber[0] not in "56789":
        return e164
    if phonenumbers.is_valid_number(phonenumbers.parse(e164)):
        return e164
    candidate = phonenumbers.parse(f"+55{area}9{subscriber}")
    if phonenumbers.is_valid_number(candidate) and phonenumbers.number_type(candidate) in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        return phonenumbers.format_number(candidate, phonenumbers.PhoneNumberFormat.E164)
    return e164


def _wa_id(raw: str) -> str:
    text = raw.strip()
    digits = text.removeprefix("+")
    if not digits:
        raise InvalidIdentity("whatsapp", "empty wa_id")
    if not digits.isascii() or not digits.isdigit():
        raise InvalidIdentity("whatsapp", f"{text!r} is not a wa_id (the digits of an international number)")
    return _phone("whatsapp", "+" + digits, None)


def _opaque(kind: str, raw: str) -> str:
    text = raw.strip()
    if not text:
        raise InvalidIdentity(kind, "empty value")
    if any(ch.isspace() for ch in text):
        raise InvalidIdentity(kind, f"{text!r} contains whitespace")
    if not text.isprintable():
        raise InvalidIdentity(kind, "contains control characters")
    if len(text) > _MAX_OPAQUE:
        raise InvalidIdentity(kind, f"longer than {_MAX_OPAQUE} characters")
    return text


def _email(raw: str) -> str:
    text = raw.strip().lower()
    if not text:
        raise InvalidIdentity("email", "empty address")
    if len(text) > _MAX_EMAIL:
        raise InvalidIdentity("email", f"longer than {_MAX_EMAIL} characters")
    if not _EMAIL.fullmatch(text):
        raise InvalidIdentity("email", f"{text!r} is not an e-mail address")
    return text


def _external(raw: str, system: str | None) -> str:
    text = raw.strip()
    if system is None:
        system, sep, text = text.partition(":")
        if not sep:
            raise InvalidIdentity("external", "an external id needs its system: pass system= or write system:id")
    name = system.strip().lower()
    if not _SYSTEM.fullmatch(name):
        raise InvalidIdentity(
            "external",
            f"system {system!r} must be a letter then up to 39 of a-z 0-9 _ . - (e.g. 'salesforce')",
        )
    ext_id = text.strip()
    if not ext_id:
        raise InvalidIdentity("external", f"empty id in system {name!r}")
    if not ext_id.isprintable():
        raise InvalidIdentity("external", "id contains control characters")
    if len(ext_id) > _MAX_OPAQUE:
        raise InvalidIdentity("external", f"id longer than {_MAX_OPAQUE} characters")
    return f"{name}:{ext_id}"


# Resolution ----------------------------------------------------------------------------------------

# The live customer at the end of a customer's merged_into chain (depth-capped: a chain never loops, the
# merge refuses to merge into a merged customer, but a query must not spin if data were ever wrong).
_SURVIVOR = """
WITH RECURSIVE chain (id, merged_into, depth) AS (
    SELECT id, merged_into, 0 FROM customers WHERE id = $1
    UNION ALL
    SELECT c.id, c.merged_into, chain.depth + 1 FROM customers c JOIN chain ON c.id = chain.merged_into
    WHERE chain.depth < 64
)
SELECT c.id, c.display_name FROM chain JOIN customers c USING (id) WHERE chain.merged_into IS NULL
"""

# The timeline events of a customer and of every customer merged into it, directly or through a chain.
_FAMILY_EVENTS = """
WITH RECURSIVE family (id) AS (
    SELECT $1::uuid
    UNION
    SELECT c.id FROM customers c JOIN family f ON c.merged_into = f.id
)
SELECT id FROM timeline_events WHERE customer_id IN (SELECT id FROM family) ORDER BY id
"""


async def survivor_of(conn: Conn, customer_id: uuid.UUID) -> Identification:
    """The customer itself if live, else the customer it was merged into (following chains)."""
    row = await conn.fetchrow(_SURVIVOR, customer_id)
    if row is None:
        raise CustomerNotFound(f"no customer {customer_id}")
    return Identification(row["id"], row["display_name"], created=False)


async def resolve(
    db: asyncpg.Pool | Conn, kind: str, raw: str, default_region: str | None = None, *, system: str | None = None
) -> Identification | None:
    """The live customer behind an identity (following merges), or None if nobody has it. `db` may be a
    connection in the caller's transaction."""
    value = normalize(kind, raw, default_region, system=system)
    async with connection(db) as conn:
        found = await customers.find_by_identity(conn, kind, value)
        if found is None:
            return None
        return await survivor_of(conn, found.customer_id)


async def identify_or_create(
    pool: asyncpg.Pool,
    kind: str,
    raw: str,
    default_region: str | None = None,
    *,
    system: str | None = None,
    display_name: str | None = None,
) -> Identification:
    """The live customer behind an identity, creating one on first contact (safe under concurrent first
    contacts: see customers.identify)."""
    value = normalize(kind, raw, default_region, system=system)
    found = await customers.identify(pool, kind, value, display_name)
    if found.created:
        return found
    async with pool.acquire() as conn:
        return await survivor_of(conn, found.customer_id)


@dataclass(frozen=True)
class LinkedIdentity:
    id: int
    customer_id: uuid.UUID
    kind: str
    value: str
    created: bool  # False when the customer already had it


async def link_identity(
    pool: asyncpg.Pool,
    customer_id: uuid.UUID,
    kind: str,
    raw: str,
    default_region: str | None = None,
    *,
    system: str | None = None,
) -> LinkedIdentity:
    """Give a customer one more identity. Idempotent for the customer that already has it; refuses
    (IdentityTaken) when another customer has it, and (MergedCustomer) when the customer was merged away."""
    value = normalize(kind, raw, default_region, system=system)
    async with pool.acquire() as conn, conn.transaction():
        # FOR SHARE: a merge of this customer (FOR UPDATE) waits for this link, or this link for it.
        row = await conn.fetchrow("SELECT merged_into FROM customers WHERE id = $1 FOR SHARE", customer_id)
        if row is None:
            raise CustomerNotFound(f"no customer {customer_id}")
        if row["merged_into"] is not None:
            raise MergedCustomer(customer_id, (await survivor_of(conn, customer_id)).customer_id)
        identity_id = await conn.fetchval(
            "INSERT INTO identities (customer_id, kind, value) VALUES ($1, $2, $3)"
            " ON CONFLICT (kind, value) DO NOTHING RETURNING id",
            customer_id,
            kind,
            value,
        )
        if identity_id is not None:
            return LinkedIdentity(identity_id, customer_id, kind, value, created=True)
        owner = await conn.fetchrow(
            "SELECT id, customer_id FROM identities WHERE kind = $1 AND value = $2", kind, value
        )
        assert owner is not None, "identity vanished after a conflicting insert"
        if owner["customer_id"] != customer_id:
            raise IdentityTaken(kind, value, owner["customer_id"], customer_id)
        return LinkedIdentity(owner["id"], customer_id, kind, value, created=False)


# Merge and unmerge ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Merge:
    id: uuid.UUID
    survivor_id: uuid.UUID
    merged_id: uuid.UUID
    identity_ids: list[int]
    interaction_ids: list[uuid.UUID]
    case_ids: list[uuid.UUID]
    timeline_event_ids: list[int]
    merged_by: str
    reason: str
    merged_at: datetime
    undone_at: datetime | None
    undone_by: str | None


def _merge_of(row: asyncpg.Record) -> Merge:
    return Merge(**{name: row[name] for name in Merge.__dataclass_fields__})


async def get_merge(conn: Conn, merge_id: uuid.UUID) -> Merge:
    row = await conn.fetchrow("SELECT * FROM customer_merges WHERE id = $1", merge_id)
    if row is None:
        raise MergeNotFound(f"no merge {merge_id}")
    return _merge_of(row)


async def _lock_customers(conn: Conn, *ids: uuid.UUID) -> dict[uuid.UUID, uuid.UUID | None]:
    """Lock the customers' rows (in id order, so two transactions locking the same pair cannot deadlock)
    and return each one's merged_into."""
    rows = await conn.fetch(
        "SELECT id, merged_into FROM customers WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE", list(ids)
    )
    found = {r["id"]: r["merged_into"] for r in rows}
    for customer_id in ids:
        if customer_id not in found:
            raise CustomerNotFound(f"no customer {customer_id}")
    return found


async def merge(pool: asyncpg.Pool, survivor: uuid.UUID, merged: uuid.UUID, by: str, reason: str) -> uuid.UUID:
    """Merge customer `merged` into `survivor` in one transaction; returns the merge's id (for unmerge)."""
    if not by.strip():
        raise ValueError("a merge needs who did it (by)")
    async with pool.acquire() as conn, conn.transaction():
        return await merge_in(conn, survivor, merged, by, reason)


async def merge_in(conn: Conn, survivor: uuid.UUID, merged: uuid.UUID, by: str, reason: str) -> uuid.UUID:
    """`merge` in the caller's transaction (e.g. with the timeline event that tells of it)."""
    if survivor == merged:
        raise MergeRefused(f"cannot merge customer {survivor} into itself")
    merged_into = await _lock_customers(conn, survivor, merged)
    if merged_into[merged] is not None:
        raise MergeRefused(f"customer {merged} is already merged into {merged_into[merged]}")
    if merged_into[survivor] is not None:
        raise MergeRefused(
            f"customer {survivor} is merged into {merged_into[survivor]}: merge into that customer instead"
        )
    identity_ids = await _move(conn, "identities", merged, survivor)
    interaction_ids = await _move(conn, "interactions", merged, survivor)
    case_ids = await _move(conn, "cases", merged, survivor)
    event_ids = [r["id"] for r in await conn.fetch(_FAMILY_EVENTS, merged)]
    await conn.execute("UPDATE customers SET merged_into = $1 WHERE id = $2", survivor, merged)
    merge_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO customer_merges (survivor_id, merged_id, identity_ids, interaction_ids, case_ids,"
        " timeline_event_ids, merged_by, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        survivor,
        merged,
        identity_ids,
        interaction_ids,
        case_ids,
        event_ids,
        by,
        reason,
    )
    return merge_id


async def unmerge(pool: asyncpg.Pool, merge_id: uuid.UUID, by: str) -> Merge:
    """Undo a merge in one transaction: the rows it moved go back to the merged customer, which is live
    again. Refused when the survivor has since been merged into someone else (undo that merge first)."""
    if not by.strip():
        raise ValueError("an unmerge needs who did it (by)")
    async with pool.acquire() as conn, conn.transaction():
        first = await get_merge(conn, merge_id)
        # Same lock order as merge: the customers, then the audit row.
        merged_into = await _lock_customers(conn, first.survivor_id, first.merged_id)
        row = await conn.fetchrow("SELECT * FROM customer_merges WHERE id = $1 FOR UPDATE", merge_id)
        assert row is not None
        done = _merge_of(row)
        if done.undone_at is not None:
            raise UnmergeRefused(
                f"merge {merge_id} was already undone at {done.undone_at.isoformat()} by {done.undone_by}"
            )
        if merged_into[done.survivor_id] is not None:
            later = await conn.fetchval(
                "SELECT id FROM customer_merges WHERE merged_id = $1 AND undone_at IS NULL", done.survivor_id
            )
            raise UnmergeRefused(
                f"customer {done.survivor_id} has since been merged into {merged_into[done.survivor_id]}"
                f" (merge {later}): undo that merge first"
            )
        if merged_into[done.merged_id] != done.survivor_id:
            raise UnmergeRefused(f"customer {done.merged_id} is not merged into {done.survivor_id} any more")
        await _move_back(conn, "identities", done.identity_ids, done.survivor_id, done.merged_id)
        await _move_back(conn, "interactions", done.interaction_ids, done.survivor_id, done.merged_id)
        await _move_back(conn, "cases", done.case_ids, done.survivor_id, done.merged_id)
        await conn.execute("UPDATE customers SET merged_into = NULL WHERE id = $1", done.merged_id)
        row = await conn.fetchrow(
            "UPDATE customer_merges SET undone_at = now(), undone_by = $2 WHERE id = $1 RETURNING *", merge_id, by
        )
        assert row is not None
        return _merge_of(row)


# Only these tables are re-pointed by a merge; the names are constants, never input.
_MOVABLE = ("identities", "interactions", "cases")


async def _move(conn: Conn, table: str, source: uuid.UUID, target: uuid.UUID) -> list[Any]:
    assert table in _MOVABLE
    rows = await conn.fetch(
        f"UPDATE {table} SET customer_id = $2 WHERE customer_id = $1 RETURNING id",  # noqa: S608
        source,
        target,
    )
    return sorted(r["id"] for r in rows)


async def _move_back(conn: Conn, table: str, ids: list[Any], survivor: uuid.UUID, merged: uuid.UUID) -> None:
    """Move exactly `ids` from the survivor back to the merged customer, or refuse (and roll back) if any
    of them is no longer the survivor's: the previous split could not be restored exactly."""
    assert table in _MOVABLE
    moved = await conn.fetch(
        f"UPDATE {table} SET customer_id = $3 WHERE id = ANY($1) AND customer_id = $2 RETURNING id",  # noqa: S608
        ids,
        survivor,
        merged,
    )
    if len(moved) != len(ids):
        missing = sorted(set(ids) - {r["id"] for r in moved}, key=str)
        raise UnmergeRefused(f"{table} {missing} are no longer with customer {survivor}: cannot restore the split")
