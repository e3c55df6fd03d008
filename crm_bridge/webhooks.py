"""Outbound webhooks: every timeline event a subscription wants is POSTed to its URL, signed.

Durability. Migration 004's trigger writes one `webhook_deliveries` row per matching active subscription
in the same transaction that appends the event to the timeline, then NOTIFYs `hilo_webhook_deliveries`.
So an event on the timeline always has its deliveries, and nothing is lost if Hilo stops at any moment:
a delivery is only ever marked delivered after a 2xx answer (at-least-once; the receiver drops duplicates
by `Hilo-Webhook-Id`, which is the same on every attempt and replay).

Sharing the work. Every Hilo node runs a `DeliveryWorker`. It claims deliveries with
`FOR UPDATE SKIP LOCKED` and writes a short lease on them (the POST timeout plus a margin) before sending,
so two nodes never send the same delivery at once, and a node that dies mid-send only delays it until the
lease runs out. It wakes on the NOTIFY, when a retry falls due, and every `poll_s` in case a
notification was missed while its listening connection was down.

Order. Per subscription, a delivery is sent only once every delivery of that subscription for an older
event (smaller event id) has been delivered or dead-lettered: a failing receiver holds back its own line,
never other subscriptions. So the events of one call, written one after another, arrive in order. What is
not guaranteed: two events committed concurrently by different calls get ids in insert order, which may
differ from commit order, so the later-committed one may already be sent; a replayed dead letter arrives
after the events that went on without it (it is then first in its line again).

Failure. Anything but a 2xx within the timeout (redirects are not followed) is a failed attempt. The next
attempt waits `backoff_s * 2**(attempts - 1)` seconds, capped at `backoff_max_s`, with jitter (between half
and all of it, so receivers coming back are not hit by every node at once). After `max_attempts` failed
attempts the delivery is dead-lettered: `GET /api/webhooks/dead-letters` lists it and
`POST /api/webhooks/dead-letters/{id}/replay` queues it again with a fresh set of attempts.

Signature (what a receiver checks). Each request carries:

    Hilo-Webhook-Id: <delivery id, a UUID>
    Hilo-Timestamp:  <Unix time in whole seconds when this attempt was signed>
    Hilo-Signature:  v1=<hex HMAC-SHA256 of f"{timestamp}.{body}" keyed with the subscription's secret>

where `body` is the raw request body (UTF-8 JSON of the event, the same object the timeline API gives a
non-admin: data listed in crm_bridge.timeline.WITHHELD, a transcript's text, is never sent) and
the key is the secret's UTF-8 bytes. Recompute the HMAC over the exact bytes received, compare in constant
time, and refuse timestamps more than a few minutes from your clock (replays). `verify` below does this.
The secret is stored in the database (it has to be, to sign), returned once when the subscription is
created, and never logged."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg

from crm_bridge.timeline import event_json, shareable
from hilo.claim_loop import ClaimLoop, backoff

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "hilo_webhook_deliveries"  # the name migration 004's trigger notifies
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300


# Signing ---------------------------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `Hilo-Signature` header value for a body sent at `timestamp` (Unix seconds)."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """What a receiver does: True if `body` was signed with `secret` within `tolerance_s` of `now`."""
    raw_timestamp = headers.get("Hilo-Timestamp", "")
    signature = headers.get("Hilo-Signature", "")
    if not raw_timestamp.isdigit():
        return False
    timestamp = int(raw_timestamp)
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(signature.encode(), sign(secret, timestamp, body).encode())


def ops_event_json(row: asyncpg.Record) -> dict[str, Any]:
    """An ops event (about no customer, e.g. `alert.raised`) as its webhook body: like a timeline event
    without customer, interaction or channel."""
    return {"id": row["id"], "type": row["type"], "at": row["at"].isoformat(), "data": row["data"]}


def encode_event(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=str).encode()


# Subscriptions and dead letters ----------------------------------------------------------------------

_SUBSCRIPTION_COLUMNS = "id, url, event_types, active, description, created_at, updated_at"
_DELIVERY_COLUMNS = (
    "d.id, d.subscription_id, d.event_id, d.ops_event_id, coalesce(e.type, o.type) AS event_type, d.state,"
    " d.attempts, d.replays, d.last_status, d.last_error, d.next_attempt_at, d.created_at, d.delivered_at, d.dead_at"
)
# A delivery carries a timeline event or an ops event (facts about no customer, e.g. alerts; migration 009).
_DELIVERY_FROM = (
    "webhook_deliveries d LEFT JOIN timeline_events e ON e.id = d.event_id"
    " LEFT JOIN ops_events o ON o.id = d.ops_event_id"
)


async def create_subscription(
    pool: asyncpg.Pool, url: str, event_types: list[str], active: bool, description: str
) -> dict[str, Any]:
    """The new subscription, with its secret (the only time the secret leaves the database)."""
    secret = new_secret()
    row = await pool.fetchrow(
        "INSERT INTO webhook_subscriptions (url, secret, event_types, active, description)"  # noqa: S608
        f" VALUES ($1, $2, $3, $4, $5) RETURNING {_SUBSCRIPTION_COLUMNS}",
        url,
        secret,
        list(dict.fromkeys(event_types)),
        active,
        description,
    )
    assert row is not None
    return {**dict(row), "secret": secret}


async def list_subscriptions(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(f"SELECT {_SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions ORDER BY created_at, id")  # noqa: S608
    return [dict(r) for r in rows]


async def get_subscription(pool: asyncpg.Pool, subscription_id: uuid.UUID) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions WHERE id = $1",  # noqa: S608
        subscription_id,
    )
    return dict(row) if row else None


_EDITABLE = ("url", "event_types", "active", "description")


async def update_subscription(
    pool: asyncpg.Pool, subscription_id: uuid.UUID, changes: dict[str, Any]
) -> dict[str, Any] | None:
    unknown = set(changes) - set(_EDITABLE)
    if unknown:
        raise ValueError(f"unknown subscription fields: {sorted(unknown)}")
    if "event_types" in changes:
        changes = {**changes, "event_types": list(dict.fromkeys(changes["event_types"]))}
    sets = "".join(f", {name} = ${i}" for i, name in enumerate(changes, start=2))
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"UPDATE webhook_subscriptions SET updated_at = now(){sets} WHERE id = $1"  # noqa: S608 (names checked)
            f" RETURNING {_SUBSCRIPTION_COLUMNS}",
            subscription_id,
            *changes.values(),
        )
        if row is not None and changes.get("active"):
            await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)  # its waiting deliveries may go now
    return dict(row) if row else None


async def delete_subscription(pool: asyncpg.Pool, subscription_id: uuid.UUID) -> bool:
    """Delete it with all its deliveries, dead letters included."""
    return bool(await pool.fetchval("DELETE FROM webhook_subscriptions WHERE id = $1 RETURNING true", subscription_id))


async def dead_letters(pool: asyncpg.Pool, subscription_id: uuid.UUID | None, limit: int) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM {_DELIVERY_FROM}"  # noqa: S608
        " WHERE d.state = 'dead' AND ($1::uuid IS NULL OR d.subscription_id = $1)"
        " ORDER BY d.dead_at DESC, d.id LIMIT $2",
        subscription_id,
        limit,
    )
    return [dict(r) for r in rows]


async def get_delivery(pool: asyncpg.Pool, delivery_id: uuid.UUID) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        f"SELECT {_DELIVERY_COLUMNS} FROM {_DELIVERY_FROM}"  # noqa: S608
        " WHERE d.id = $1",
        delivery_id,
    )
    return dict(row) if row else None


class NotDead(Exception):
    def __init__(self, delivery_id: uuid.UUID, state: str) -> None:
        super().__init__(f"delivery {delivery_id} is {state}, not dead-lettered: only dead letters are replayed")
        self.state = state


async def replay(pool: asyncpg.Pool, delivery_id: uuid.UUID) -> dict[str, Any]:
    """Queue a dead letter again with a fresh set of attempts. LookupError if unknown, NotDead if it is
    not dead-lettered (a replay of a replayed delivery has one effect)."""
    async with pool.acquire() as conn, conn.transaction():
        state = await conn.fetchval("SELECT state FROM webhook_deliveries WHERE id = $1 FOR UPDATE", delivery_id)
        if state is None:
            raise LookupError(f"no delivery {delivery_id}")
        if state != "dead":
            raise NotDead(delivery_id, state)
        await conn.execute(
            "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = now(), dead_at = NULL,"
            " lease = NULL, leased_until = NULL, replays = replays + 1 WHERE id = $1",
            delivery_id,
        )
        await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    found = await get_delivery(pool, delivery_id)
    assert found is not None
    return found


def describe_failure(exc: BaseException, url: str) -> str:
    """What went wrong, for the delivery row and the log, without the URL's path, query or credentials
    (a receiver's URL may carry a token)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    text = text.replace(url, origin + "/...")
    return _USERINFO.sub("://***@", text)[:500]


_USERINFO = re.compile(r"://[^/@\s]+@")


# Delivery --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    backoff_s: float = 2.0
    backoff_max_s: float = 900.0
    timeout_s: float = 10.0  # every POST, connection included

    def delay_after(self, attempts: int) -> float:
        """Seconds before the next attempt, after `attempts` failed ones (exponential, capped, jittered)."""
        return backoff(self.backoff_s, self.backoff_max_s, attempts)

    @property
    def lease_s(self) -> float:
        return self.timeout_s * 2 + 5


# Eligible: pending, due, not leased by a live sender, its subscription active, and first in its
# subscription's line (no pending delivery of an older event; timeline events and ops events are two
# lines, so a comparison across them is NULL and holds nothing back). SKIP LOCKED: rows another node is
# claiming right now are left to it.
_CLAIM = """
UPDATE webhook_deliveries d
SET lease = $2, leased_until = now() + make_interval(secs => $3), attempts = d.attempts + 1
WHERE d.id IN (
    SELECT h.id FROM webhook_deliveries h JOIN webhook_subscriptions s ON s.id = h.subscription_id
    WHERE h.state = 'pending' AND s.active AND h.next_attempt_at <= now()
      AND (h.leased_until IS NULL OR h.leased_until <= now())
      AND NOT EXISTS (
          SELECT 1 FROM webhook_deliveries older
          WHERE older.subscription_id = h.subscription_id AND older.state = 'pending' AND older.event_id < h.event_id)
      AND NOT EXISTS (
          SELECT 1 FROM webhook_deliveries older
          WHERE older.subscription_id = h.subscription_id AND older.state = 'pending'
            AND older.ops_event_id < h.ops_event_id)
    ORDER BY h.next_attempt_at, h.event_id, h.ops_event_id
    LIMIT $1
    FOR UPDATE OF h SKIP LOCKED)
RETURNING d.id, d.subscription_id, d.event_id, d.ops_event_id, d.attempts
"""

# Seconds until the worker next has something to do: the head of a line falling due for a retry, or a
# lease running out. Deliveries waiting behind a head do not count (they are due only after it).
_SECONDS_TO_NEXT_DUE = """
SELECT extract(epoch FROM min(greatest(h.next_attempt_at, coalesce(h.leased_until, h.next_attempt_at))) - now())
FROM webhook_deliveries h JOIN webhook_subscriptions s ON s.id = h.subscription_id
WHERE h.state = 'pending' AND s.active
  AND NOT EXISTS (
      SELECT 1 FROM webhook_deliveries older
      WHERE older.subscription_id = h.subscription_id AND older.state = 'pending' AND older.event_id < h.event_id)
  AND NOT EXISTS (
      SELECT 1 FROM webhook_deliveries older
      WHERE older.subscription_id = h.subscription_id AND older.state = 'pending'
        AND older.ops_event_id < h.ops_event_id)
"""


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    subscription_id: uuid.UUID
    attempts: int
    lease: uuid.UUID
    url: str
    secret: str
    event: dict[str, Any]


class DeliveryWorker(ClaimLoop[Claimed]):
    """Sends due deliveries, `concurrency` at a time (one per subscription at a time, see Order above)."""

    name = "webhooks"

    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        policy: RetryPolicy,
        *,
        concurrency: int = 8,
        poll_s: float = 5.0,
        keep_delivered: timedelta = timedelta(days=7),
    ) -> None:
        super().__init__(dsn, NOTIFY_CHANNEL, concurrency=concurrency, poll_s=poll_s)
        self.pool = pool
        self.policy = policy
        self.keep_delivered = keep_delivered
        self._session: aiohttp.ClientSession | None = None
        self._last_prune = 0.0

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": "Hilo-Webhooks/1"})
        await super().start()

    async def close(self) -> None:
        # A send cut short here keeps its lease: another node (or this one, restarted) resends it later.
        await self.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _seconds_to_next_due(self) -> float | None:
        due = await self.pool.fetchval(_SECONDS_TO_NEXT_DUE)
        return None if due is None else float(due)

    async def _idle(self) -> None:
        await self._prune()

    async def _claim(self, limit: int) -> list[Claimed]:
        lease = uuid.uuid4()
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM, limit, lease, self.policy.lease_s)
            if not rows:
                return []
            subscriptions = {
                r["id"]: r
                for r in await conn.fetch(
                    "SELECT id, url, secret FROM webhook_subscriptions WHERE id = ANY($1::uuid[])",
                    list({r["subscription_id"] for r in rows}),
                )
            }
            events = {
                ("timeline", r["id"]): shareable(event_json(r))  # never a transcript's words: see WITHHELD
                for r in await conn.fetch(
                    "SELECT * FROM timeline_events WHERE id = ANY($1::bigint[])", [r["event_id"] for r in rows]
                )
            }
            events.update(
                {
                    ("ops", r["id"]): ops_event_json(r)
                    for r in await conn.fetch(
                        "SELECT * FROM ops_events WHERE id = ANY($1::bigint[])", [r["ops_event_id"] for r in rows]
                    )
                }
            )
        return [
            Claimed(
                r["id"],
                r["subscription_id"],
                r["attempts"],
                lease,
                subscriptions[r["subscription_id"]]["url"],
                subscriptions[r["subscription_id"]]["secret"],
                events[("timeline", r["event_id"]) if r["event_id"] is not None else ("ops", r["ops_event_id"])],
            )
            for r in rows
        ]

    async def _work(self, delivery: Claimed) -> None:
        assert self._session is not None
        body = encode_event(delivery.event)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "Hilo-Webhook-Id": str(delivery.id),
            "Hilo-Timestamp": str(timestamp),
            "Hilo-Signature": sign(delivery.secret, timestamp, body),
            "Hilo-Event-Type": delivery.event["type"],
        }
        status: int | None = None
        error: str | None = None
        try:
            async with self._session.post(
                delivery.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.policy.timeout_s),
            ) as response:
                status = response.status
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = describe_failure(exc, delivery.url)
        await self._record(delivery, status, error)

    async def _record(self, delivery: Claimed, status: int | None, error: str | None) -> None:
        if error is None:
            outcome = await self.pool.execute(
                "UPDATE webhook_deliveries SET state = 'delivered', delivered_at = now(), last_status = $3,"
                " last_error = NULL, lease = NULL, leased_until = NULL WHERE id = $1 AND lease = $2",
                delivery.id,
                delivery.lease,
                status,
            )
        elif delivery.attempts >= self.policy.max_attempts:
            outcome = await self.pool.execute(
                "UPDATE webhook_deliveries SET state = 'dead', dead_at = now(), last_status = $3, last_error = $4,"
                " lease = NULL, leased_until = NULL WHERE id = $1 AND lease = $2",
                delivery.id,
                delivery.lease,
                status,
                error,
            )
            log.warning(
                "webhooks: delivery %s of event %s to subscription %s dead-lettered after %d attempts (%s)",
                delivery.id,
                delivery.event["id"],
                delivery.subscription_id,
                delivery.attempts,
                error,
            )
        else:
            delay = self.policy.delay_after(delivery.attempts)
            outcome = await self.pool.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = now() + make_interval(secs => $5),"
                " last_status = $3, last_error = $4, lease = NULL, leased_until = NULL WHERE id = $1 AND lease = $2",
                delivery.id,
                delivery.lease,
                status,
                error,
                delay,
            )
            log.info(
                "webhooks: delivery %s attempt %d failed (%s); next in %.1fs",
                delivery.id,
                delivery.attempts,
                error,
                delay,
            )
        if outcome.endswith(" 0"):
            # The lease ran out and another sender took over (or the row is gone): its outcome stands.
            log.info("webhooks: delivery %s outcome not recorded: lease lost", delivery.id)

    async def _prune(self) -> None:
        """Forget delivered rows older than `keep_delivered` (dead letters stay until replayed or their
        subscription is deleted)."""
        now = time.monotonic()
        if now - self._last_prune < 600:
            return
        self._last_prune = now
        await self.pool.execute(
            "DELETE FROM webhook_deliveries WHERE state = 'delivered' AND delivered_at < now() - $1::interval",
            self.keep_delivered,
        )
