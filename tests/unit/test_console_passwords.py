"""Password and secret hashing: scrypt with its parameters in the stored hash, constant-time checks, the
pepper of customers' secrets and its rotation, and the bounded pool of hashing threads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from hilo import passwords
from hilo.passwords import (
    HASH_THREADS,
    Cost,
    Pepper,
    Peppers,
    WeakPassword,
    check_strength,
    hash_password,
    hash_secret,
    needs_rehash,
    secret_needs_rehash,
    verify_password,
    verify_password_async,
    verify_secret,
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


# -- customers' secrets and the pepper ----------------------------------------------------------------

OLD = Pepper(b"the pepper of last year, 32 chars")
NEW = Pepper(b"the pepper of this year, 32 chars")


def test_a_peppered_secret_cannot_be_tested_without_the_pepper() -> None:
    peppers = Peppers(NEW)
    stored = hash_secret("2468", peppers, FAST)
    assert stored.startswith(f"pepper${NEW.id}$scrypt$1024$8$1$")
    assert verify_secret("2468", stored, peppers)
    assert not verify_secret("2469", stored, peppers)
    # A copy of the database alone: the inner scrypt hash does not match the PIN, and without the pepper
    # configured nothing matches.
    inner = stored.split("$", 2)[2]
    assert not verify_password("2468", inner)
    assert not verify_secret("2468", stored, Peppers())
    # The id names the pepper without revealing it.
    assert len(NEW.id) == 8 and NEW.id != OLD.id and NEW.id == Pepper(NEW.key).id
    assert "32 chars" not in repr(peppers)


def test_without_a_pepper_secrets_hash_as_before() -> None:
    stored = hash_secret("2468", Peppers(), FAST)
    assert stored.startswith("scrypt$1024$")
    assert verify_secret("2468", stored, Peppers())
    assert not secret_needs_rehash(stored, Peppers(), FAST)


def test_rotating_the_pepper() -> None:
    unpeppered = hash_password("2468", FAST)  # made before there was a pepper
    with_old = hash_secret("2468", Peppers(OLD), FAST)
    rotated = Peppers(NEW, (OLD,))  # HILO_SECRET_PEPPER=new, HILO_SECRET_PEPPER_PREVIOUS=old
    for stored in (unpeppered, with_old):
        assert verify_secret("2468", stored, rotated)
        assert not verify_secret("1357", stored, rotated)
        assert secret_needs_rehash(stored, rotated, FAST)  # made again at the next right answer
    redone = hash_secret("2468", rotated, FAST)
    assert redone.startswith(f"pepper${NEW.id}$") and not secret_needs_rehash(redone, rotated, FAST)
    assert secret_needs_rehash(redone, rotated)  # a cost other than the default is redone too
    # Once the old pepper is dropped, what was hashed with it no longer verifies.
    assert not verify_secret("2468", with_old, Peppers(NEW))


def test_peppers_from_settings() -> None:
    assert Peppers.parse("") == Peppers()
    peppers = Peppers.parse("n" * 32, " " + "o" * 32 + ", " + "p" * 16)
    assert peppers.current == Pepper(b"n" * 32)
    assert peppers.previous == (Pepper(b"o" * 32), Pepper(b"p" * 16))
    assert peppers.find(Pepper(b"o" * 32).id) == Pepper(b"o" * 32)
    assert peppers.find("00000000") is None
    with pytest.raises(ValueError, match="HILO_SECRET_PEPPER: a pepper needs at least 16"):
        Peppers.parse("short")
    with pytest.raises(ValueError, match="HILO_SECRET_PEPPER_PREVIOUS"):
        Peppers.parse("n" * 32, "short")


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
