"""The outbox: outbound messages stored durably, then sent by a worker with retries, per-provider rate
limits and order per conversation; delivery statuses from the providers update them.

Sending. Every node runs the worker. It claims the oldest queued message of each conversation (a later
message waits while an earlier one is queued or retrying) with `FOR UPDATE SKIP LOCKED` and a lease, takes
a token from its provider's bucket, and calls that provider's `ProviderSender`. Accepted: the row records
the provider's message id. `SendFailed(retryable=True)` (timeouts, 5xx, 429): tried again after an
exponential backoff, or after the provider's Retry-After (which also holds that provider's whole bucket).
Not retryable, or `max_attempts` used: failed, with the provider's code and reason. A send cut short by a
timeout may have reached the provider: it is sent again (at-least-once; providers have no idempotency key).

A claimed message never waits past its lease: a Retry-After is capped (`retry_after_max_s`; `inf`, a
negative or unreadable one are never taken as given), and a message whose token would come later than the
lease allows (`token_wait_s`) is given back, due when the token is, without counting an attempt. Otherwise
its lease could run out while it waits, another worker would claim it too, and the customer would get it
twice.

Enqueueing is idempotent by `OutboundMessage.idempotency_key` (unique in the table): the conversation layer
keys each reply by its reply row and enqueues it in the same transaction as that row, so a reply reaches
the outbox once whatever crashes when.

Statuses (`record_status`) are kept in `message_statuses` as they come, and the outbound row keeps the
highest: queued < accepted < sent < delivered < read, failed final, never backwards. A status arriving before
the send result is recorded waits in the history and is applied when it is.

WhatsApp's customer-service window: a free-form message may be sent within 24 hours of the customer's last
inbound message on that WhatsApp address (`window_state`); outside it only a template. `enqueue` refuses
with `OutsideWindow` up front, and a provider refusal for that reason (Cloud API 131047, Twilio 63016) fails
the message without retries."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg

from bridges.inbox import normalise_address
from bridges.messages import (
    Choice,
    OutboundMessage,
    OutsideWindow,
    Provider,
    ProviderSender,
    SendFailed,
    SendResult,
    StatusUpdate,
)
from hilo.claim_loop import ClaimLoop, backoff
from hilo.logs import mask_pii

if TYPE_CHECKING:
    from hilo.db import Conn

log = logging.getLogger(__name__)
NOTIFY_CHANNEL = "hilo_outbox"  # migration 011's trigger notifies it on every new outbound message
WINDOW = dt.timedelta(hours=24)
OUTSIDE_WINDOW_CODES = frozenset({"131047", "63016"})  # Cloud API "re-engagement message", Twilio's same
STATES = ("queued", "accepted", "sent", "delivered", "read", "failed")


# The 24-hour window ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowState:
    open: bool
    closes_at: dt.datetime | None  # last inbound + 24 h (in the past when closed); None: never opened
    last_inbound_at: dt.datetime | None


async def window_state(
    pool: asyncpg.Pool | Conn, address: str, *, business: str | None = None, now: dt.datetime | None = None
) -> WindowState:
    """The WhatsApp customer-service window of a customer's WhatsApp address (any spelling: "whatsapp:+34…",
    a wa_id, "+34…"), optionally with one business number/phone_number_id (`business`, what the customer
    wrote to). Open for 24 hours after the customer's last inbound message."""
    last = await pool.fetchval(
        "SELECT max(received_at) FROM messages WHERE channel = 'whatsapp' AND address = $1"
        " AND ($2::text IS NULL OR recipient = $2)",
        normalise_address("whatsapp", address),
        business,
    )
    if last is None:
        return WindowState(False, None, None)
    closes_at = last + WINDOW
    return WindowState(closes_at > (now or dt.datetime.now(dt.UTC)), closes_at, last)


# Rate limits ------------------------------------------------------------------------------------------


class TokenBucket:
    """`rate_per_s` sends a second on average, up to `burst` at once; `hold` stops it for a while (a 429)."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = rate_per_s
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.updated = time.monotonic()
        self.held_until = 0.0

    def hold(self, seconds: float) -> None:
        if math.isfinite(seconds) and seconds > 0:  # the caller caps it; a non-finite hold is never taken
            self.held_until = max(self.held_until, time.monotonic() + seconds)

    def _try(self) -> float:
        """Take a token now (0.0), or say how many seconds until one can be taken."""
        now = time.monotonic()
        if now < self.held_until:
            return self.held_until - now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    async def take(self, within: float = math.inf) -> float | None:
        """Take a token, waiting at most `within` seconds: None once taken; otherwise no token is taken and
        the answer is how long until one could be (a hold longer than the caller can wait)."""
        deadline = time.monotonic() + within
        while True:
            wait = self._try()  # no await between looking and taking: nobody takes the same token
            if wait == 0.0:
                return None
            if time.monotonic() + wait > deadline:
                return wait
            await asyncio.sleep(wait)


# Storage ---------------------------------------------------------------------------------------------

_CLAIM = """
UPDATE outbound_messages m
SET lease = $2, leased_until = now() + make_interval(secs => $3), attempts = m.attempts + 1, updated_at = now()
WHERE m.id IN (
    SELECT h.id FROM outbound_messages h
    WHERE h.state = 'queued' AND h.next_attempt_at <= now() AND h.provider = ANY($4::text[])
      AND (h.leased_until IS NULL OR h.leased_until <= now())
      AND NOT EXISTS (
          SELECT 1 FROM outbound_messages older
          WHERE older.state = 'queued' AND older.conversation_id = h.conversation_id AND older.id < h.id)
    ORDER BY h.id
    LIMIT $1
    FOR UPDATE OF h SKIP LOCKED)
RETURNING m.*
"""

_SECONDS_TO_NEXT_DUE = """
SELECT extract(epoch FROM min(greatest(h.next_attempt_at, coalesce(h.leased_until, h.next_attempt_at))) - now())
FROM outbound_messages h
WHERE h.state = 'queued' AND h.provider = ANY($1::text[])
  AND NOT EXISTS (
      SELECT 1 FROM outbound_messages older
      WHERE older.state = 'queued' AND older.conversation_id = h.conversation_id AND older.id < h.id)
"""

# A status moves the row forward only (failed is final and beats everything else).
_APPLY_STATUS = """
UPDATE outbound_messages SET state = $3, error_code = coalesce($4, error_code),
    last_error = coalesce($5, last_error), updated_at = now()
WHERE provider = $1 AND provider_message_id = $2 AND state <> 'failed'
  AND ($3 = 'failed' OR message_state_rank(state) < message_state_rank($3))
"""

# The best status already reported for a message whose send result is being recorded now.
_APPLY_EARLIER_STATUSES = """
UPDATE outbound_messages o SET state = best.status, error_code = coalesce(best.error_code, o.error_code),
    last_error = coalesce(best.error_message, o.last_error), updated_at = now()
FROM (SELECT status, error_code, error_message FROM message_statuses
      WHERE provider = $1 AND provider_message_id = $2
      ORDER BY message_state_rank(status) DESC LIMIT 1) best
WHERE o.id = $3 AND o.state <> 'failed' AND message_state_rank(o.state) < message_state_rank(best.status)
"""


def outbound_message(row: asyncpg.Record) -> OutboundMessage:
    return OutboundMessage(
        channel=row["channel"],
        provider=row["provider"],
        sender=row["sender"],
        recipient=row["recipient"],
        text=row["text"],
        conversation_id=row["conversation_id"],
        choices=[Choice(c["id"], c["title"]) for c in row["choices"]],
        template=row["template"],
        idempotency_key=row["idempotency_key"],
    )


@dataclass(frozen=True)
class _Claimed:
    id: int
    message: OutboundMessage
    attempts: int
    lease: uuid.UUID


@dataclass(frozen=True)
class RateLimit:
    per_s: float
    burst: int


class Outbox(ClaimLoop[_Claimed]):
    """`enqueue` stores; the worker (start/stop) sends with the registered `ProviderSender`s."""

    name = "outbox"

    def __init__(
        self,
        pool: asyncpg.Pool,
        senders: list[ProviderSender] | None = None,
        *,
        dsn: str | None = None,
        rates: dict[str, RateLimit] | None = None,  # per provider; none given: 10/s, burst 10
        concurrency: int = 8,
        poll_s: float = 5.0,
        send_timeout_s: float = 15.0,
        max_attempts: int = 10,
        backoff_s: float = 1.0,
        backoff_max_s: float = 300.0,
        retry_after_max_s: float = 300.0,
    ) -> None:
        super().__init__(dsn, NOTIFY_CHANNEL, concurrency=concurrency, poll_s=poll_s)
        self.pool = pool
        self.senders: dict[str, ProviderSender] = {}
        self.rates = rates or {}
        self.buckets: dict[str, TokenBucket] = {}
        self.send_timeout_s = send_timeout_s
        self.lease_s = send_timeout_s * 2 + 60  # a wait for a token (token_wait_s), the send, a margin
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_max_s = retry_after_max_s
        for sender in senders or []:
            self.register(sender)

    @property
    def token_wait_s(self) -> float:
        """How long a claimed message may wait for its provider's token: what its lease leaves once the send
        (and as long again, for the writes after it) are set aside. Longer, and it is given back."""
        return max(0.0, self.lease_s - 2 * self.send_timeout_s)

    def retry_after(self, seconds: float | None) -> float | None:
        """A provider's Retry-After as the outbox takes it: at most `retry_after_max_s`, never negative;
        None (not given, or NaN) means the usual backoff."""
        if seconds is None or math.isnan(seconds):
            return None
        return min(max(0.0, seconds), self.retry_after_max_s)

    def register(self, sender: ProviderSender) -> None:
        """Send `sender.provider`'s messages with it (e.g. the web chat sender of the conversation layer)."""
        self.senders[sender.provider] = sender
        rate = self.rates.get(sender.provider, RateLimit(10.0, 10))
        self.buckets.setdefault(sender.provider, TokenBucket(rate.per_s, rate.burst))
        self.wake()

    async def window(self, address: str, business: str | None = None) -> WindowState:
        """The WhatsApp customer-service window of `address` (see `window_state`), for the console."""
        return await window_state(self.pool, address, business=business)

    # Enqueue ---------------------------------------------------------------------------------------

    async def enqueue(self, message: OutboundMessage, *, conn: Conn | None = None) -> int:
        """Store `message` (committed before returning; given `conn`, in the caller's transaction, and sent
        once that commits: the NOTIFY goes at commit). With an `idempotency_key` already in the outbox: the
        first message's id, nothing changed (not even the window is checked again: it was accepted)."""
        if not message.text and message.template is None:
            raise ValueError("an outbound message needs text or a template")
        db: asyncpg.Pool | Conn = conn if conn is not None else self.pool
        key = message.idempotency_key
        if key is not None:
            first = await db.fetchval("SELECT id FROM outbound_messages WHERE idempotency_key = $1", key)
            if first is not None:
                return int(first)
        if message.channel == "whatsapp" and message.template is None:
            # The window is the customer's with the business number they wrote to (a Messaging Service
            # stands for several numbers: then any of ours).
            business = None if message.sender.startswith("MG") else message.sender
            window = await window_state(db, message.recipient, business=business)
            if not window.open:
                raise OutsideWindow(mask_pii(message.recipient), window.closes_at)
        outbox_id = await db.fetchval(
            "INSERT INTO outbound_messages (channel, provider, sender, recipient, address, conversation_id, text,"
            " choices, template, idempotency_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id",
            message.channel,
            message.provider,
            message.sender,
            message.recipient,
            normalise_address(message.channel, message.recipient),
            message.conversation_id,
            message.text,
            [asdict(c) for c in message.choices],
            message.template,
            key,
        )
        if outbox_id is None:  # the same key committed by someone else meanwhile: theirs stands
            outbox_id = await db.fetchval("SELECT id FROM outbound_messages WHERE idempotency_key = $1", key)
            assert outbox_id is not None
        else:
            self.wake()
        return int(outbox_id)

    # Statuses --------------------------------------------------------------------------------------

    async def record_status(
        self,
        provider: Provider,
        provider_message_id: str,
        status: str,
        *,
        provider_status: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        occurred_at: dt.datetime | None = None,
    ) -> bool:
        """Keep a delivery status (a repeat of the same provider status changes nothing) and move the
        outbound message forward if it is further along. True if the message's state changed."""
        if status not in STATES or status == "queued":
            raise ValueError(f"unknown delivery status {status!r}")
        if error_code in OUTSIDE_WINDOW_CODES:
            error_message = f"outside the WhatsApp 24-hour window ({error_message or 'no reason given'})"
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO message_statuses (provider, provider_message_id, status, provider_status, error_code,"
                " error_message, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                " ON CONFLICT (provider, provider_message_id, provider_status) DO NOTHING",
                provider,
                provider_message_id,
                status,
                provider_status or status,
                error_code,
                error_message,
                occurred_at,
            )
            outcome = await conn.execute(
                _APPLY_STATUS, provider, provider_message_id, status, error_code, error_message
            )
        return not outcome.endswith(" 0")

    async def record(self, update: StatusUpdate) -> bool:
        return await self.record_status(
            update.provider,
            update.provider_message_id,
            update.status,
            provider_status=update.provider_status,
            error_code=update.error_code,
            error_message=update.error_message,
            occurred_at=update.occurred_at,
        )

    async def get(self, outbox_id: int) -> dict[str, Any] | None:
        """The outbound message with its status history (for the console and the tests)."""
        row = await self.pool.fetchrow("SELECT * FROM outbound_messages WHERE id = $1", outbox_id)
        if row is None:
            return None
        history = await self.pool.fetch(
            "SELECT status, provider_status, error_code, error_message, occurred_at, received_at"
            " FROM message_statuses WHERE provider = $1 AND provider_message_id = $2 ORDER BY id",
            row["provider"],
            row["provider_message_id"],
        )
        return {**dict(row), "statuses": [dict(h) for h in history]}

    # Sending ---------------------------------------------------------------------------------------

    async def _claim(self, limit: int) -> list[_Claimed]:
        if not self.senders:
            return []
        lease = uuid.uuid4()
        rows = await self.pool.fetch(_CLAIM, limit, lease, self.lease_s, list(self.senders))
        return [
            _Claimed(r["id"], outbound_message(r), r["attempts"], lease) for r in sorted(rows, key=lambda r: r["id"])
        ]

    async def _seconds_to_next_due(self) -> float | None:
        if not self.senders:
            return None
        due = await self.pool.fetchval(_SECONDS_TO_NEXT_DUE, list(self.senders))
        return None if due is None else float(due)

    async def _work(self, item: _Claimed) -> None:
        provider = item.message.provider
        bucket = self.buckets[provider]
        wait = await bucket.take(within=self.token_wait_s)
        if wait is not None:  # held (a 429) longer than the lease allows: given back, not kept waiting
            await self._postpone(item, wait)
            return
        try:
            result = await asyncio.wait_for(self.senders[provider].send(item.message, item.id), self.send_timeout_s)
        except SendFailed as exc:
            await self._failed(item, exc)
            return
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            await self._failed(item, SendFailed(f"{type(exc).__name__}: {exc}", retryable=True))
            return
        except Exception as exc:  # a sender's own bug: kept and retried rather than left leased
            log.exception("outbox: the %s sender failed on message %s", provider, item.id)
            await self._failed(item, SendFailed(f"{type(exc).__name__}: {exc}", retryable=True))
            return
        await self._accepted(item, result)

    async def _accepted(self, item: _Claimed, result: SendResult) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            outcome = await conn.execute(
                "UPDATE outbound_messages SET state = 'accepted', provider_message_id = $3, accepted_at = now(),"
                " updated_at = now(), lease = NULL, leased_until = NULL, last_error = NULL"
                " WHERE id = $1 AND lease = $2",
                item.id,
                item.lease,
                result.provider_message_id,
            )
            if outcome.endswith(" 0"):
                log.info("outbox: message %s sent but its lease was lost; the other sender's outcome stands", item.id)
                return
            await conn.execute(_APPLY_EARLIER_STATUSES, item.message.provider, result.provider_message_id, item.id)

    async def _postpone(self, item: _Claimed, wait_s: float) -> None:
        """Give a claimed message back, due in `wait_s`, without counting an attempt: it was not tried."""
        await self.pool.execute(
            "UPDATE outbound_messages SET next_attempt_at = now() + make_interval(secs => $3),"
            " attempts = greatest(0, attempts - 1), lease = NULL, leased_until = NULL, updated_at = now()"
            " WHERE id = $1 AND lease = $2",
            item.id,
            item.lease,
            min(wait_s, self.retry_after_max_s),
        )
        log.info("outbox: message %s waits %.1fs for the %s rate limit", item.id, wait_s, item.message.provider)

    async def _failed(self, item: _Claimed, exc: SendFailed) -> None:
        reason = str(exc)[:500]
        outside = exc.code in OUTSIDE_WINDOW_CODES
        if outside:
            reason = f"outside the WhatsApp 24-hour window: only a template can be sent ({reason})"
        retry_after = self.retry_after(exc.retry_after)
        if retry_after is not None:
            self.buckets[item.message.provider].hold(retry_after)
        if exc.retryable and not outside and item.attempts < self.max_attempts:
            delay = (
                retry_after if retry_after is not None else backoff(self.backoff_s, self.backoff_max_s, item.attempts)
            )
            await self.pool.execute(
                "UPDATE outbound_messages SET next_attempt_at = now() + make_interval(secs => $5), last_error = $3,"
                " error_code = $4, lease = NULL, leased_until = NULL, updated_at = now() WHERE id = $1 AND lease = $2",
                item.id,
                item.lease,
                reason,
                exc.code,
                delay,
            )
            log.info("outbox: message %s attempt %d failed (%s); again in %.1fs", item.id, item.attempts, reason, delay)
            return
        await self.pool.execute(
            "UPDATE outbound_messages SET state = 'failed', last_error = $3, error_code = $4, lease = NULL,"
            " leased_until = NULL, updated_at = now() WHERE id = $1 AND lease = $2",
            item.id,
            item.lease,
            reason,
            exc.code,
        )
        log.warning("outbox: message %s failed after %d attempts: %s", item.id, item.attempts, reason)
