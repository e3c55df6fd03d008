"""The inbox: inbound messages stored durably on receipt, then handed to the conversation layer once.

Receipt. `accept`/`accept_all` commit the message(s) before returning, so a webhook is acknowledged only for
what is in PostgreSQL. The provider's message id is unique per provider: a redelivery returns the first
row's id and changes nothing.

Processing is separate. Every node runs the processor: it claims the oldest unprocessed message of each
conversation (channel + sender + recipient) with `FOR UPDATE SKIP LOCKED`, with the messages queued behind
it (a run), writes a lease on them, calls the `InboundHandler` for each in turn and marks each processed
when the handler returns (renewing the lease of the rest). Conversations are processed in arrival order (a
message waits while an older one of its conversation is unprocessed, even on another node). A
node that stops after receipt leaves the message unprocessed, and one that stops mid-handler leaves a lease
that runs out: either way the next processor takes it up (at-least-once; handlers are idempotent by
`message.id`). A handler that raises is retried with backoff; after `max_attempts` the message is marked
failed (kept, with the error) so its conversation can go on."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from bridges.messages import Channel, InboundHandler, InboundMessage, Provider, Received
from hilo.claim_loop import ClaimLoop, backoff

log = logging.getLogger(__name__)
NOTIFY_CHANNEL = "hilo_inbox"  # migration 011's trigger notifies it on every new message


async def ignore_message(message: InboundMessage) -> None:
    """The handler until the conversation layer plugs its own in: the message is kept, nothing answers."""
    log.debug("inbox: message %s processed by no conversation layer", message.id)


def normalise_address(channel: Channel, sender: str) -> str:
    """The customer's address as one key whatever the provider's spelling: "whatsapp:+34600111222" (Twilio)
    and "34600111222" (a Cloud API wa_id) are both "+34600111222"; web chat tokens stay as they are."""
    if channel == "webchat":
        return sender
    bare = sender.removeprefix("whatsapp:")
    digits = re.sub(r"\D", "", bare)
    return "+" + digits if digits else bare





_INSERT = """
WITH ins AS (
    INSERT INTO messages (channel, provider, provider_message_id, channel_name, sender, recipient, address,
                          text, choice_id, media)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
    ON CONFLICT (provider, provider_message_id) DO NOTHING
    RETURNING id)
SELECT id, true AS new FROM ins
UNION ALL
SELECT id, false FROM messages WHERE provider = $2 AND provider_message_id = $3
"""

# The head of each conversation's line (DISTINCT ON over the partial index of unprocessed messages), if it is
# due and not leased by a live processor, with the messages behind it (a run, up to $4): one task handles a
# run in order. A head another node is claiming right now is locked: SKIP LOCKED leaves it, and the messages
# behind it are no heads, so a conversation is never processed by two at once.
_CLAIM = """
WITH heads AS (
    SELECT h.id, h.channel, h.sender, h.recipient FROM messages h
    WHERE h.id IN (
        SELECT id FROM (
            SELECT DISTINCT ON (channel, sender, recipient) id, next_attempt_at, leased_until FROM messages
            WHERE state = 'received' ORDER BY channel, sender, recipient, id) heads
        WHERE next_attempt_at <= now() AND (leased_until IS NULL OR leased_until <= now()))
      -- again on the row itself: PostgreSQL re-checks these on the newest version of a row it had to wait
      -- for, so a head another node leased meanwhile is left alone
      AND h.state = 'received' AND h.next_attempt_at <= now() AND (h.leased_until IS NULL OR h.leased_until <= now())
    ORDER BY h.id
    LIMIT $1
    FOR UPDATE OF h SKIP LOCKED),
runs AS (
    SELECT r.id FROM heads h CROSS JOIN LATERAL (
        SELECT m.id FROM messages m
        WHERE m.state = 'received' AND m.channel = h.channel AND m.sender = h.sender AND m.recipient = h.recipient
        ORDER BY m.id
        LIMIT $4) r)
UPDATE messages m SET lease = $2, leased_until = now() + make_interval(secs => $3), attempts = m.attempts + 1
WHERE m.id IN (SELECT id FROM runs)
RETURNING m.*, m.next_attempt_at <= now() AS due
"""

# Processed; and the rest of its run keeps its lease for another handler timeout. 0: the lease was lost.
_PROCESSED = """
WITH done AS (
    UPDATE messages SET state = 'processed', processed_at = now(), last_error = NULL, lease = NULL,
        leased_until = NULL
    WHERE id = $1 AND lease = $2
    RETURNING channel, sender, recipient),
renewed AS (
    UPDATE messages m SET leased_until = now() + make_interval(secs => $3) FROM done
    WHERE m.state = 'received' AND m.lease = $2 AND m.channel = done.channel AND m.sender = done.sender
      AND m.recipient = done.recipient
    RETURNING 1)
SELECT count(*) FROM done
"""

# Messages of a run not handled (after a failure, or not due): back in line, their attempt not counted.
_RELEASE = """
UPDATE messages SET lease = NULL, leased_until = NULL, attempts = attempts - 1
WHERE id = ANY($1::bigint[]) AND lease = $2 AND state = 'received'
"""

_SECONDS_TO_NEXT_DUE = """
SELECT extract(epoch FROM min(greatest(next_attempt_at, coalesce(leased_until, next_attempt_at))) - now())
FROM (
    SELECT DISTINCT ON (channel, sender, recipient) next_attempt_at, leased_until FROM messages
    WHERE state = 'received' ORDER BY channel, sender, recipient, id) heads
"""


def inbound_message(row: asyncpg.Record) -> InboundMessage:
    return InboundMessage(
        id=row["id"],
        channel=row["channel"],
        provider=row["provider"],
        provider_message_id=row["provider_message_id"],
        sender=row["sender"],
        recipient=row["recipient"],
        text=row["text"],
        choice_id=row["choice_id"],
        media=list(row["media"]),
        received_at=row["received_at"],
        channel_name=row["channel_name"],
    )


@dataclass(frozen=True)
class _Run:
    """Messages of one conversation claimed together, handled one after the other."""

    lease: uuid.UUID
    messages: list[tuple[InboundMessage, int]]  # with its attempts, this one included


class Inbox(ClaimLoop[_Run]):
    """Durable receipt (`accept`) and the processor that feeds the `handler` (replaceable at any time)."""

    name = "inbox"

    def __init__(
        self,
        pool: asyncpg.Pool,
        handler: InboundHandler = ignore_message,
        *,
        dsn: str | None = None,  # for LISTEN; without it the processor polls every poll_s
        # conversations handled at once; may exceed the pool's size: a handler holds at most one pooled
        # connection at a time (bridges/conversations.py), so the extra ones wait, they cannot deadlock
        concurrency: int = 16,
        run_length: int = 20,  # messages of one conversation claimed at once
        poll_s: float = 5.0,
        handler_timeout_s: float = 30.0,
        max_attempts: int = 10,
        backoff_s: float = 1.0,
        backoff_max_s: float = 300.0,
    ) -> None:
        super().__init__(dsn, NOTIFY_CHANNEL, concurrency=concurrency, poll_s=poll_s)
        self.pool = pool
        self.handler = handler
        self.run_length = run_length
        self.lease_s = handler_timeout_s + 5  # a stopped node's message waits this long for another one
        self.handler_timeout_s = handler_timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s

    def set_handler(self, handler: InboundHandler) -> None:
        self.handler = handler

    # Receipt -----------------------------------------------------------------------------------------

    async def accept(
        self,
        *,
        channel: Channel,
        provider: Provider,
        provider_message_id: str,
        sender: str,
        recipient: str,
        text: str | None,
        choice_id: str | None = None,
        media: list[dict[str, Any]] | None = None,
        channel_name: str | None = None,
    ) -> tuple[int, bool]:
        received = Received(
            channel, provider, provider_message_id, sender, recipient, text, choice_id, media or [], channel_name
        )
        [result] = await self.accept_all([received])
        return result

    async def accept_all(self, messages: list[Received]) -> list[tuple[int, bool]]:
        """Store several messages in one transaction (one webhook's batch): all committed, or none."""
        results: list[tuple[int, bool]] = []
        if any(not m.provider_message_id for m in messages):
            raise ValueError("provider_message_id is empty")
        if len(messages) == 1:  # one statement commits on its own: one round trip
            results.append(await self._insert(self.pool, messages[0]))
        elif messages:
            async with self.pool.acquire() as conn, conn.transaction():
                for m in messages:
                    results.append(await self._insert(conn, m))
        if any(new for _, new in results):
            self.wake()  # this node's processor needs no round trip through NOTIFY
        return results

    async def _insert(self, conn: Any, m: Received) -> tuple[int, bool]:
        args = (
            m.channel,
            m.provider,
            m.provider_message_id,
            m.channel_name,
            m.sender,
            m.recipient,
            normalise_address(m.channel, m.sender),
            m.text,
            m.choice_id,
            m.media,
        )
        for _ in range(3):
            # Empty only when a concurrent delivery of the same id committed during this statement; the
            # next statement has a new snapshot (READ COMMITTED) and finds it.
            row = await conn.fetchrow(_INSERT, *args)
            if row is not None:
                return int(row["id"]), bool(row["new"])
            await asyncio.sleep(0.01)
        raise RuntimeError(f"message {m.provider}/{m.provider_message_id} neither inserted nor found")

    # Processing --------------------------------------------------------------------------------------

    async def _claim(self, limit: int) -> list[_Run]:
        lease = uuid.uuid4()
        rows = await self.pool.fetch(_CLAIM, limit, lease, self.lease_s, self.run_length)
        lines: dict[tuple[str, str, str], list[asyncpg.Record]] = {}
        for row in sorted(rows, key=lambda r: r["id"]):
            lines.setdefault((row["channel"], row["sender"], row["recipient"]), []).append(row)
        runs, left_out = [], []
        for line in lines.values():
            # A message waiting for a retry behind the head (committed out of id order) ends the run there.
            cut = next((i for i, r in enumerate(line) if i > 0 and not r["due"]), len(line))
            runs.append(_Run(lease, [(inbound_message(r), r["attempts"]) for r in line[:cut]]))
            left_out += [r["id"] for r in line[cut:]]
        if left_out:
            await self.pool.execute(_RELEASE, left_out, lease)
        return runs

    async def _seconds_to_next_due(self) -> float | None:
        due = await self.pool.fetchval(_SECONDS_TO_NEXT_DUE)
        return None if due is None else float(due)

    async def _work(self, run: _Run) -> None:
        for position, (message, attempts) in enumerate(run.messages):
            try:
                await asyncio.wait_for(self.handler(message), self.handler_timeout_s)
            except asyncio.CancelledError:
                raise  # stopping: the leases run out and the messages are taken up again
            except Exception as exc:
                await self._handler_failed(message, attempts, run.lease, exc)
                rest = [m.id for m, _ in run.messages[position + 1 :]]
                if rest:  # the conversation waits for this one (retry), or goes on without it (failed)
                    await self.pool.execute(_RELEASE, rest, run.lease)
                return
            if not await self.pool.fetchval(_PROCESSED, message.id, run.lease, self.lease_s):
                log.warning("inbox: lease on message %s lost (handler slower than its timeout?)", message.id)
                return

    async def _handler_failed(self, message: InboundMessage, attempts: int, lease: uuid.UUID, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"[:500]
        if attempts >= self.max_attempts:
            await self.pool.execute(
                "UPDATE messages SET state = 'failed', last_error = $3, lease = NULL, leased_until = NULL,"
                " processed_at = now() WHERE id = $1 AND lease = $2",
                message.id,
                lease,
                error,
            )
            log.error("inbox: message %s failed after %d attempts: %s", message.id, attempts, error)
            return
        delay = backoff(self.backoff_s, self.backoff_max_s, attempts)
        await self.pool.execute(
            "UPDATE messages SET next_attempt_at = now() + make_interval(secs => $4), last_error = $3,"
            " lease = NULL, leased_until = NULL WHERE id = $1 AND lease = $2",
            message.id,
            lease,
            error,
            delay,
        )
        log.warning("inbox: message %s attempt %d failed (%s); again in %.1fs", message.id, attempts, error, delay)
