"""Password hashing for console users: scrypt from the standard library.

Why scrypt and not argon2: both are memory-hard (a GPU or ASIC guessing passwords pays for memory, not
just compute); scrypt ships with Python through OpenSSL, so it adds no native dependency to build or audit,
and its parameters are stored with every hash, so they can be raised later without breaking old hashes
(`needs_rehash` says when). N=2**15, r=8, p=1 costs 32 MiB and about 60 ms per hash here: slow for a
guesser, fine for one sign-in. Hashing runs in a worker thread so a sign-in never stalls the event loop."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SCHEME = "scrypt"
MIN_LENGTH = 10
MAX_LENGTH = 1024  # a bound on work per sign-in, far above any real password


@dataclass(frozen=True)
class Cost:
    n: int = 2**15
    r: int = 8
    p: int = 1

    @property
    def maxmem(self) -> int:
        return 2 * 128 * self.n * self.r * self.p  # scrypt needs 128*N*r bytes (+ slack)


DEFAULT_COST = Cost()


class WeakPassword(ValueError):
    pass


def check_strength(password: str) -> None:
    """Refuse passwords that are too short or too long, saying which limit was crossed."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"password must have at least {MIN_LENGTH} characters (it has {len(password)})")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"password must have at most {MAX_LENGTH} characters")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, cost: Cost) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=cost.n, r=cost.r, p=cost.p, maxmem=cost.maxmem, dklen=32)


def hash_password(password: str, cost: Cost = DEFAULT_COST) -> str:
    """`scrypt$<n>$<r>$<p>$<salt>$<hash>` (base64 without padding)."""
    salt = secrets.token_bytes(16)
    return f"{SCHEME}${cost.n}${cost.r}${cost.p}${_b64(salt)}${_b64(_derive(password, salt, cost))}"


def _parse(stored: str) -> tuple[Cost, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError("not an scrypt password hash")
    n, r, p = (int(x) for x in parts[1:4])
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or n > 2**20:
        raise ValueError("scrypt parameters out of range")
    return Cost(n, r, p), _unb64(parts[4]), _unb64(parts[5])


def verify_password(password: str, stored: str) -> bool:
    """Constant-time comparison; a malformed stored hash or an over-long password never matches."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        cost, salt, expected = _parse(stored)
    except ValueError:
        return False
    return hmac.compare_digest(_derive(password, salt, cost), expected)


def needs_rehash(stored: str, cost: Cost = DEFAULT_COST) -> bool:
    try:
        return _parse(stored)[0] != cost
    except ValueError:
        return True


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


async def verify_password_async(password: str, stored: str | None) -> bool:
    if stored is None:
        # An unknown user costs the same time as a wrong password: the answer time does not tell which
        # user names exist.
        await asyncio.to_thread(verify_password, password, _dummy_hash())
        return False
    return await asyncio.to_thread(verify_password, password, stored)


async def hash_password_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)
