"""Queue alerts: a queue over a threshold of dialplans/kpis.yaml (more waiting than N, a wait longer than
S seconds, a rolling service level below X%) is in alert until it is back within it.

Raising and clearing are durable and happen once however many Hilo nodes watch: an open alert is a
`queue_alerts` row (at most one open per queue and kind, a unique index), and the node whose insert or
update succeeds also writes the `alert.raised` / `alert.cleared` ops event in the same transaction. Ops
events are sent to the webhook subscriptions that want them like timeline events (crm_bridge/webhooks.py),
but belong to no customer's timeline."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from reports.config import AlertThresholds

log = logging.getLogger(__name__)

KINDS = ("waiting", "longest_wait", "service_level")


@dataclass(frozen=True)
class QueueNow:
    """What the alerts look at for one queue."""

    queue: str
    waiting: int
    longest_wait_s: float
    service_level: float | None  # 0..1 over the rolling window; None without offered contacts


@dataclass(frozen=True)
class Breach:
    queue: str
    kind: str
    value: float
    threshold: float


def breaches(now: QueueNow, limits: AlertThresholds) -> list[Breach]:
    found = []
    if limits.waiting_above is not None and now.waiting > limits.waiting_above:
        found.append(Breach(now.queue, "waiting", now.waiting, limits.waiting_above))
    if limits.longest_wait_above_s is not None and now.longest_wait_s > limits.longest_wait_above_s:
        found.append(Breach(now.queue, "longest_wait", round(now.longest_wait_s, 1), limits.longest_wait_above_s))
    if (
        limits.service_level_below_pct is not None
        and now.service_level is not None
        and now.service_level * 100 < limits.service_level_below_pct
    ):
        found.append(
            Breach(now.queue, "service_level", round(now.service_level * 100, 1), limits.service_level_below_pct)
        )
    return found


@dataclass(frozen=True)
class OpenAlert:
    id: int
    queue: str
    kind: str
    threshold: float
    value: float
    raised_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "queue": self.queue,
            "kind": self.kind,
            "threshold": self.threshold,
            "value": self.value,
            "raised_at": self.raised_at.isoformat(),
        }


def _open(row: asyncpg.Record) -> OpenAlert:
    return OpenAlert(row["id"], row["queue"], row["kind"], row["threshold"], row["raised_value"], row["raised_at"])


async def open_alerts(pool: asyncpg.Pool) -> list[OpenAlert]:
    rows = await pool.fetch("SELECT * FROM queue_alerts WHERE cleared_at IS NULL ORDER BY raised_at, id")
    return [_open(r) for r in rows]


async def reconcile(pool: asyncpg.Pool, current: Iterable[Breach], values: Mapping[tuple[str, str], float]) -> bool:
    """Raise the breaches not open yet and clear the open alerts no longer breached (`values` gives the
    figure each cleared alert is back to). True if this node raised or cleared anything."""
    wanted = {(b.queue, b.kind): b for b in current}
    changed = False
    for alert in await open_alerts(pool):
        if (alert.queue, alert.kind) in wanted:
            wanted.pop((alert.queue, alert.kind))
            continue
        changed |= await _clear(pool, alert, values.get((alert.queue, alert.kind)))
    for breach in wanted.values():
        changed |= await _raise(pool, breach)
    return changed


async def _raise(pool: asyncpg.Pool, breach: Breach) -> bool:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO queue_alerts (queue, kind, threshold, raised_value) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (queue, kind) WHERE cleared_at IS NULL DO NOTHING RETURNING id, raised_at",
            breach.queue,
            breach.kind,
            breach.threshold,
            breach.value,
        )
        if row is None:  # another node raised it a moment ago
            return False
        await conn.execute(
            "INSERT INTO ops_events (type, data) VALUES ('alert.raised', $1)",
            {
                "alert_id": row["id"],
                "queue": breach.queue,
                "kind": breach.kind,
                "value": breach.value,
                "threshold": breach.threshold,
            },
        )
    log.warning(
        "alert raised: queue %s %s %s (threshold %s)", breach.queue, breach.kind, breach.value, breach.threshold
    )
    return True


async def _clear(pool: asyncpg.Pool, alert: OpenAlert, value: float | None) -> bool:
    async with pool.acquire() as conn, conn.transaction():
        cleared = await conn.fetchval(
            "UPDATE queue_alerts SET cleared_at = now(), cleared_value = $2"
            " WHERE id = $1 AND cleared_at IS NULL RETURNING true",
            alert.id,
            value,
        )
        if not cleared:
            return False
        await conn.execute(
            "INSERT INTO ops_events (type, data) VALUES ('alert.cleared', $1)",
            {
                "alert_id": alert.id,
                "queue": alert.queue,
                "kind": alert.kind,
                "value": value,
                "threshold": alert.threshold,
                "raised_at": alert.raised_at.isoformat(),
            },
        )
    log.info("alert cleared: queue %s %s", alert.queue, alert.kind)
    return True
