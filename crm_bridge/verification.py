"""Verifying a caller against a secret of the customer's (PIN, date of birth) for the flow's `lookup`
`verify:` step. Only scrypt hashes are stored, keyed with the pepper HILO_SECRET_PEPPER when it is set
(hilo/passwords.py: a copy of the database alone then cannot test a single PIN). A wrong answer counts
against the customer across calls and channels, and too many lock verification for a while, whatever the
flow's own per-call attempt limit.

The attempt is counted before it is judged, in one statement that refuses it while verification is locked
and sets the lock on the last allowed one: parallel attempts (several calls or chats at once) queue on the
customer's row, so no more than MAX_FAILURES answers are ever compared before the lock, and an answer that
arrives while it is locked is refused unjudged, the right one too."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

import asyncpg

from hilo.passwords import (
    Peppers,
    hash_secret_async,
    secret_needs_rehash,
    verify_password_async,
    verify_secret_async,
)
from hilo.settings import load_settings

if TYPE_CHECKING:
    from hilo.db import Conn

FIELDS = ("pin", "birth_date")
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
_SHAPES = {"pin": re.compile(r"^[0-9]{4,8}$"), "birth_date": re.compile(r"^[0-9]{8}$")}  # birth date: DDMMYYYY
_peppers: Peppers | None = None


def use_peppers(peppers: Peppers) -> None:
    """The peppers of this process (the server sets them from its settings at start)."""
    global _peppers
    _peppers = peppers


def peppers() -> Peppers:
    """The configured peppers; from HILO_SECRET_PEPPER(_PREVIOUS) when nobody set them."""
    if _peppers is None:
        settings = load_settings()
        use_peppers(
            Peppers.parse(settings.secret_pepper.get_secret_value(), settings.secret_pepper_previous.get_secret_value())
        )
    assert _peppers is not None
    return _peppers


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
    secret_hash = await hash_secret_async(check_secret(field, value), peppers())
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
    verification is locked after MAX_FAILURES wrong answers (the lock is not revealed to the caller: the
    same hashing work is done). `pool` may be a connection in a transaction (the conversation layer's):
    the count is kept with it, and the customer's row stays locked until it ends."""
    # Take the attempt: count it and, on the last one allowed, set the lock (undone below if it is right).
    stored = await pool.fetchval(
        "UPDATE customer_secrets SET failures = failures + 1,"
        " locked_until = CASE WHEN failures + 1 >= $3 THEN now() + $4::interval ELSE locked_until END"
        " WHERE customer_id = $1 AND field = $2 AND (locked_until IS NULL OR locked_until <= now())"
        " RETURNING secret_hash",
        customer_id,
        field,
        MAX_FAILURES,
        LOCKOUT,
    )
    if stored is None:  # no such secret, or locked
        return await verify_password_async(given, None)
    current = peppers()
    if not await verify_secret_async(given, stored, current):
        return False
    # Right: the count starts again, and a hash made with an older pepper or cost is made again.
    new_hash = await hash_secret_async(given, current) if secret_needs_rehash(stored, current) else None
    await pool.execute(
        "UPDATE customer_secrets SET failures = 0, locked_until = NULL,"
        " secret_hash = CASE WHEN secret_hash = $3 THEN coalesce($4, secret_hash) ELSE secret_hash END"
        " WHERE customer_id = $1 AND field = $2",
        customer_id,
        field,
        stored,
        new_hash,
    )
    return True
