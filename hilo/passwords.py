"""Password hashing for console users, and for customers' secrets (PIN, date of birth): scrypt from the
standard library.

Why scrypt and not argon2: both are memory-hard (a GPU or ASIC guessing passwords pays for memory, not
just compute); scrypt ships with Python through OpenSSL, so it adds no native dependency to build or audit,
and its parameters are stored with every hash, so they can be raised later without breaking old hashes
(`needs_rehash` says when; a console user's hash is upgraded at their next sign-in, a customer's secret at
its next successful verification). New hashes use N=2**17, r=8, p=1 (OWASP's minimum): 128 MiB and a few
hundred ms per hash, slow for a guesser, fine for one sign-in. Older N=2**15 hashes still verify.

Hashing runs on its own small pool of HASH_THREADS threads, never the default executor (recordings and
retention use that), so at most HASH_THREADS hashes are computed at once whatever arrives: a flood of
sign-ins waits for them instead of taking the node's CPU and memory (and the sign-in limits in
hilo/web/signin.py refuse most of it before it gets here).

Customers' secrets are short (4 to 8 digits), so a salted hash alone does not stop whoever copies the
database from trying every PIN. With a pepper (HILO_SECRET_PEPPER, kept outside the database) the secret
is first keyed with HMAC-SHA256, and the hash is `pepper$<pepper id>$scrypt$...`: without the pepper it
cannot be tested at all. The id names the pepper without revealing it, so the pepper can rotate: older
peppers stay listed in HILO_SECRET_PEPPER_PREVIOUS, hashes made with them still verify and are re-hashed
with the current one at their next successful verification (`secret_needs_rehash`)."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

SCHEME = "scrypt"
PEPPERED = "pepper"  # pepper$<pepper id>$scrypt$N$r$p$salt$hash
MIN_LENGTH = 10
MAX_LENGTH = 1024  # a bound on work per sign-in, far above any real password
MIN_PEPPER_LENGTH = 16
# Hashes computed at once by this process (each takes 128 MiB at the default cost).
HASH_THREADS = max(2, min(4, (os.cpu_count() or 2) // 2))

_T = TypeVar("_T")


@dataclass(frozen=True)
class Cost:
    n: int = 2**17
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


def _against_dummy(password: str) -> bool:
    """The work of a real check, for a user or secret that is not there (never matches)."""
    verify_password(password, _dummy_hash())
    return False


# -- peppered secrets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pepper:
    key: bytes = field(repr=False)

    @functools.cached_property
    def id(self) -> str:
        """Names the pepper in the hashes made with it; reveals nothing about it."""
        return hmac.new(self.key, b"hilo pepper id", hashlib.sha256).hexdigest()[:8]

    def apply(self, secret: str) -> str:
        return _b64(hmac.new(self.key, secret.encode(), hashlib.sha256).digest())


@dataclass(frozen=True)
class Peppers:
    """The pepper new hashes are made with (None: none), and older ones still accepted."""

    current: Pepper | None = None
    previous: tuple[Pepper, ...] = ()

    @classmethod
    def parse(cls, current: str, previous: str = "") -> Peppers:
        """HILO_SECRET_PEPPER and HILO_SECRET_PEPPER_PREVIOUS (comma-separated); ValueError names the bad one."""

        def pepper(value: str, name: str) -> Pepper:
            if len(value) < MIN_PEPPER_LENGTH:
                raise ValueError(f"{name}: a pepper needs at least {MIN_PEPPER_LENGTH} characters")
            return Pepper(value.encode())

        older = tuple(pepper(v.strip(), "HILO_SECRET_PEPPER_PREVIOUS") for v in previous.split(",") if v.strip())
        return cls(pepper(current.strip(), "HILO_SECRET_PEPPER") if current.strip() else None, older)

    def find(self, pepper_id: str) -> Pepper | None:
        for pepper in (self.current, *self.previous):
            if pepper is not None and pepper.id == pepper_id:  # ids are not secret
                return pepper
        return None


def hash_secret(secret: str, peppers: Peppers, cost: Cost = DEFAULT_COST) -> str:
    """The hash of a customer's secret: peppered with the current pepper when there is one."""
    pepper = peppers.current
    if pepper is None:
        return hash_password(secret, cost)
    return f"{PEPPERED}${pepper.id}${hash_password(pepper.apply(secret), cost)}"


def _split_peppered(stored: str) -> tuple[str, str] | None:
    if not stored.startswith(PEPPERED + "$"):
        return None
    parts = stored.split("$", 2)
    return (parts[1], parts[2]) if len(parts) == 3 else ("", "")


def verify_secret(secret: str, stored: str, peppers: Peppers) -> bool:
    """Checks a peppered or an unpeppered hash; one made with a pepper no longer listed never matches."""
    if len(secret) > MAX_LENGTH:
        return False
    peppered = _split_peppered(stored)
    if peppered is None:
        return verify_password(secret, stored)
    pepper_id, inner = peppered
    pepper = peppers.find(pepper_id)
    if pepper is None:
        return _against_dummy(secret)  # the same time as a wrong answer
    return verify_password(pepper.apply(secret), inner)


def secret_needs_rehash(stored: str, peppers: Peppers, cost: Cost = DEFAULT_COST) -> bool:
    """Made with another pepper (or none while there is one now), or at another cost."""
    current = peppers.current.id if peppers.current else None
    peppered = _split_peppered(stored)
    if peppered is None:
        return current is not None or needs_rehash(stored, cost)
    pepper_id, inner = peppered
    return pepper_id != current or needs_rehash(inner, cost)


# -- off the event loop, on the hashing threads ------------------------------------------------------

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _hashing_threads() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="hilo-scrypt")
        return _executor


async def _hashing(fn: Callable[..., _T], *args: object) -> _T:
    return await asyncio.get_running_loop().run_in_executor(_hashing_threads(), functools.partial(fn, *args))


async def verify_password_async(password: str, stored: str | None) -> bool:
    if stored is None:
        # An unknown user costs the same time as a wrong password: the answer time does not tell which
        # user names exist.
        return await _hashing(_against_dummy, password)
    return await _hashing(verify_password, password, stored)


async def hash_password_async(password: str) -> str:
    return await _hashing(hash_password, password)


async def verify_secret_async(secret: str, stored: str, peppers: Peppers) -> bool:
    return await _hashing(verify_secret, secret, stored, peppers)


async def hash_secret_async(secret: str, peppers: Peppers) -> str:
    return await _hashing(hash_secret, secret, peppers)
