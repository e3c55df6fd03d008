"""Customers proving who they are (crm_bridge/verification.py) against the real PostgreSQL: parallel guesses
are counted before they are judged, so no more than the allowed number is ever compared and the right
answer during the lock fails; the pepper of the secrets' hashes and its rotation."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from crm_bridge import customers, verification
from hilo.passwords import Cost, Pepper, Peppers, hash_secret, verify_secret, verify_secret_async
from tests.stack.conftest import Stack

PIN = "2468"
FAST = Cost(n=2**10, r=8, p=1)  # the stored hash's own cost: tests need not pay the real one


async def customer_with_pin(stack: Stack, stored: str | None = None) -> uuid.UUID:
    customer_id = (await customers.create_anonymous(stack.pool)).customer_id
    await stack.pool.execute(
        "INSERT INTO customer_secrets (customer_id, field, secret_hash) VALUES ($1, 'pin', $2)",
        customer_id,
        stored or hash_secret(PIN, verification.peppers(), FAST),
    )
    return customer_id


async def pin_row(stack: Stack, customer_id: uuid.UUID) -> asyncpg.Record:
    row = await stack.pool.fetchrow(
        "SELECT failures, locked_until, locked_until > now() AS locked, secret_hash FROM customer_secrets"
        " WHERE customer_id = $1 AND field = 'pin'",
        customer_id,
    )
    assert row is not None
    return row


class Judge:
    """Counts the answers compared with the stored hash (and those refused unjudged), and can hold the
    compared ones until released, as a slow hash would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, hold: bool = False) -> None:
        self.judged: list[str] = []
        self.unjudged = 0
        self.release = asyncio.Event()
        self.full = asyncio.Event()
        if not hold:
            self.release.set()
        real = verify_secret_async

        async def judging(given: str, stored: str, peppers: Peppers) -> bool:
            self.judged.append(given)
            if len(self.judged) == verification.MAX_FAILURES:
                self.full.set()
            await self.release.wait()
            return await real(given, stored, peppers)

        async def refused(given: str, stored: str | None) -> bool:
            assert stored is None  # only the stand-in work of a refused answer comes here
            self.unjudged += 1
            return False

        monkeypatch.setattr(verification, "verify_secret_async", judging)
        monkeypatch.setattr(verification, "verify_password_async", refused)


async def test_parallel_guesses_are_counted_before_they_are_judged(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer_id = await customer_with_pin(stack)
    judge = Judge(monkeypatch, hold=True)
    wrong = [f"{n:04}" for n in range(1000, 1020)]
    guesses = [asyncio.create_task(verification.verify(stack.pool, customer_id, "pin", g)) for g in wrong]
    # The first five are being compared (held, as a slow hash) and the lock is already there:
    await asyncio.wait_for(judge.full.wait(), 10)
    locked = await pin_row(stack, customer_id)
    assert locked["failures"] == verification.MAX_FAILURES and locked["locked"]
    # so the right PIN, arriving now, is refused without being compared.
    assert await verification.verify(stack.pool, customer_id, "pin", PIN) is False
    judge.release.set()
    assert await asyncio.gather(*guesses) == [False] * len(wrong)
    assert len(judge.judged) == verification.MAX_FAILURES and PIN not in judge.judged
    assert judge.unjudged == len(wrong) - verification.MAX_FAILURES + 1
    row = await pin_row(stack, customer_id)
    assert row["failures"] == verification.MAX_FAILURES and row["locked"]


async def test_parallel_guesses_each_in_its_own_transaction_queue_on_the_customer(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conversation layer verifies inside its own transaction: the customer's row stays locked until it
    ends, so parallel chats are judged one after the other, and the count is kept with each."""
    customer_id = await customer_with_pin(stack)
    judge = Judge(monkeypatch)
    pool = await asyncpg.create_pool(stack.settings.database_url.get_secret_value(), min_size=1, max_size=8)
    try:

        async def in_a_transaction(given: str) -> bool:
            async with pool.acquire() as conn, conn.transaction():
                return await verification.verify(conn, customer_id, "pin", given)

        results = await asyncio.gather(*(in_a_transaction(f"{n:04}") for n in range(8)))
        assert results == [False] * 8
        assert len(judge.judged) == verification.MAX_FAILURES
        assert await in_a_transaction(PIN) is False
    finally:
        await pool.close()
    row = await pin_row(stack, customer_id)
    assert row["failures"] == verification.MAX_FAILURES and row["locked"]


async def test_after_the_lock_the_right_answer_verifies_and_starts_the_count_again(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer_id = await customer_with_pin(stack)
    judge = Judge(monkeypatch)
    for n in range(verification.MAX_FAILURES):
        assert await verification.verify(stack.pool, customer_id, "pin", f"{n:04}") is False
    assert await verification.verify(stack.pool, customer_id, "pin", PIN) is False  # locked
    await stack.pool.execute(
        "UPDATE customer_secrets SET locked_until = now() - interval '1 second' WHERE customer_id = $1", customer_id
    )
    assert await verification.verify(stack.pool, customer_id, "pin", PIN) is True
    row = await pin_row(stack, customer_id)
    assert row["failures"] == 0 and row["locked_until"] is None
    assert len(judge.judged) == verification.MAX_FAILURES + 1
    # A customer without the secret, or another field: never verified, nothing counted.
    assert await verification.verify(stack.pool, customer_id, "birth_date", "01011990") is False


async def test_secrets_are_peppered_and_older_hashes_are_redone_at_the_next_right_answer(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = Pepper(b"o" * 32), Pepper(b"n" * 32)
    monkeypatch.setattr(verification, "_peppers", Peppers(old))
    customer_id = await customer_with_pin(stack, stored=hash_secret(PIN, Peppers(), FAST))  # before any pepper
    await verification.set_secret(stack.pool, customer_id, "birth_date", "15031985")
    born = await stack.pool.fetchval(
        "SELECT secret_hash FROM customer_secrets WHERE customer_id = $1 AND field = 'birth_date'", customer_id
    )
    assert born.startswith(f"pepper${old.id}$scrypt$131072$8$1$")  # new hashes: peppered, at the default cost

    assert await verification.verify(stack.pool, customer_id, "pin", PIN) is True  # an unpeppered hash verifies
    upgraded = (await pin_row(stack, customer_id))["secret_hash"]
    assert upgraded.startswith(f"pepper${old.id}$scrypt$131072$")  # and is redone with the pepper
    assert verify_secret(PIN, upgraded, Peppers(old)) and not verify_secret(PIN, upgraded, Peppers())

    # Rotation: the new pepper, the old one kept as previous.
    monkeypatch.setattr(verification, "_peppers", Peppers(new, (old,)))
    assert await verification.verify(stack.pool, customer_id, "pin", PIN) is True
    assert (await pin_row(stack, customer_id))["secret_hash"].startswith(f"pepper${new.id}$")
    # The old pepper dropped: the date of birth, still hashed with it, no longer verifies (counted as wrong).
    monkeypatch.setattr(verification, "_peppers", Peppers(new))
    assert await verification.verify(stack.pool, customer_id, "birth_date", "15031985") is False
    assert await verification.verify(stack.pool, customer_id, "pin", PIN) is True
