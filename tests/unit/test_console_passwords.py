"""Password hashing: scrypt with its parameters in the stored hash, constant-time checks, and the bounded
pool of hashing threads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from hilo import passwords
from hilo.passwords import (
    HASH_THREADS,
    Cost,
    WeakPassword,
    check_strength,
    hash_password,
    needs_rehash,
    verify_password,
    verify_password_async,
)

FAST = Cost(n=2**10, r=8, p=1)  # tests need not pay the real cost


def test_a_hash_verifies_its_password_and_no_other() -> None:
    stored = hash_password("correct horse battery", FAST)
    assert stored.startswith("scrypt$1024$8$1$")
    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse batterY", stored)
    assert not verify_password("", stored)


def test_the_same_password_hashes_differently_each_time() -> None:
    assert hash_password("same password!", FAST) != hash_password("same password!", FAST)


def test_the_default_cost_is_owasps_minimum() -> None:
    stored = hash_password("a long enough password")
    cost = Cost()
    assert (cost.n, cost.r, cost.p) == (2**17, 8, 1)
    assert stored.startswith("scrypt$131072$8$1$")
    assert cost.n * cost.r * 128 >= 128 * 1024 * 1024  # 128 MiB per guess
    assert verify_password("a long enough password", stored)


def test_hashes_of_the_older_cost_still_verify_and_ask_to_be_redone() -> None:
    older = hash_password("a password from 2024", Cost(n=2**15, r=8, p=1))
    assert older.startswith("scrypt$32768$8$1$")
    assert verify_password("a password from 2024", older)
    assert needs_rehash(older)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain-text-password",
        "bcrypt$12$abc$def",
        "scrypt$1000$8$1$c2FsdA$aGFzaA",  # N not a power of two
        "scrypt$1024$8$1$c2FsdA",  # a part missing
        "scrypt$2097152$8$1$c2FsdA$aGFzaA",  # N too large: refused, not computed
        "scrypt$x$8$1$c2FsdA$aGFzaA",
    ],
)
def test_a_malformed_stored_hash_never_matches(stored: str) -> None:
    assert not verify_password("anything at all", stored)
    assert needs_rehash(stored)


def test_rehash_is_needed_when_the_cost_changes() -> None:
    stored = hash_password("some password here", FAST)
    assert needs_rehash(stored)  # against the default cost
    assert not needs_rehash(stored, FAST)


def test_strength_limits_are_named() -> None:
    with pytest.raises(WeakPassword, match="at least 10 characters"):
        check_strength("short")
    with pytest.raises(WeakPassword, match="at most 1024"):
        check_strength("x" * 1025)
    check_strength("ten chars!")


def test_an_over_long_password_is_refused_without_hashing() -> None:
    stored = hash_password("x" * 1024, FAST)
    assert verify_password("x" * 1024, stored)
    assert not verify_password("x" * 1025, stored)


async def test_an_unknown_user_is_checked_against_a_dummy_hash() -> None:
    assert await verify_password_async("whatever password", None) is False
    stored = hash_password("the real password", FAST)
    assert await verify_password_async("the real password", stored) is True


# -- hashing never takes more than its threads --------------------------------------------------------


async def test_hashing_runs_on_its_own_bounded_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    lock, full, release = threading.Lock(), threading.Event(), threading.Event()
    active, peak, names = 0, 0, set()

    def check(password: str, stored: str) -> bool:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
            names.add(threading.current_thread().name)
            if active == HASH_THREADS:
                full.set()
        release.wait(10)
        with lock:
            active -= 1
        return False

    monkeypatch.setattr(passwords, "verify_password", check)
    tasks = [asyncio.create_task(verify_password_async("guess", "scrypt$...")) for _ in range(4 * HASH_THREADS)]
    assert await asyncio.to_thread(full.wait, 10)
    release.set()
    assert await asyncio.gather(*tasks) == [False] * len(tasks)
    assert peak == HASH_THREADS  # the rest waited for a thread: never more hashes at once
    assert all(name.startswith("hilo-scrypt") for name in names)  # not the default executor
