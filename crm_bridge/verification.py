"""Verifying a caller against a secret of the customer's (PIN, date of birth) for the flow's `lookup`
`verify:` step. Only scrypt hashes are stored; a wrong answer counts against the customer across calls and
channels, and too many lock verification for a while, whatever the flow's own per-call attempt limit."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

import asyncpg

from hilo.passwords import hash_password_async, verify_password_async

if TYPE_CHECKING:
    from hilo.db import Conn

FIELDS = ("pin", "birth_date")
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
_SHAPES = {"pin": re.compile(r"^[0-9]{4,8}$"), "birth_date": re.compile(r"^[0-9]{8}$")}  # birth date: DDMMYYYY


class InvalidSecret(ValueError):
    pass


def check_secret(field: str, value: str) -> str:
    if field not in FIELDS:
        raise InvalidSecret(f"field: must be one of {', '.join(FIELDS)} (got {field!r})")
    if not _SHAPES[field].match(value):
        shape = "4 to 8 digits" if field == "pin" else "8 digits, DDMMYYYY"
        raise InvalidSecret(f"{field}: must be {shape}")
    return value


async def set_secret(pool: asyncpg.Pool, customer_id: uuid.UUID, field: str, value: str) -> None:
    secret_hash = await hash_password_async(check_secret(field, value))
    await pool.execute(
        "INSERT INTO customer_secrets (customer_id, field, secret_hash) VALUES ($1, $2, $3)"
        " ON CONFLICT (customer_id, field) DO UPDATE SET secret_hash = excluded.secret_hash, failures = 0,"
        " locked_until = NULL, updated_at = now()",
        customer_id,
        field,
        secret_hash,
    )


async def verify(pool: asyncpg.Pool | Conn, customer_id: uuid.UUID, field: str, given: str) -> bool:
    """True when `given` matches. False when it does not, when the customer has no such secret, or while
    verification is locked after MAX_FAILURES wrong answers (the lock is not revealed to the caller).
    `pool` may be a connection in a transaction (the conversation layer's): the count is kept with it."""
    row = await pool.fetchrow(
        "SELECT secret_hash, locked_until > now() AS locked FROM customer_secrets"
        " WHERE customer_id = $1 AND field = $2",
        customer_id,
        field,
    )
    matched = await verify_password_async(given, row["secret_hash"] if row else None)
    if row is None:
        return False
    if row["locked"]:
        return False
    if matched:
        await pool.execute(
            "UPDATE customer_secrets SET failures = 0 WHERE customer_id = $1 AND field = $2", customer_id, field
        )
        return True
    await pool.execute(
        "UPDATE customer_secrets SET failures = failures + 1,"
        " locked_until = CASE WHEN failures + 1 >= $3 THEN now() + $4::interval ELSE locked_until END"
        " WHERE customer_id = $1 AND field = $2",
        customer_id,
        field,
        MAX_FAILURES,
        LOCKOUT,
    )
    return False
