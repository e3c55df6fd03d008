"""Retention: a recording is deleted once its `delete_after` (start + the queue's retention days) has passed,
unless it is under legal hold. The encrypted file is removed from the store, the row keeps the metadata
with `deleted_at` (what was recorded and when stays known; the audio does not), and the deletion goes on
the audit trail (as `system:retention@system`, or `system:retention@cli` from `hilo recordings purge`) and on
the customer's timeline (`recording.deleted`, written in the deletion's transaction: one is never without
the other). Its words go too, in the same transaction: the transcript
(migration 013's trigger) and the text of its `recording.transcribed` timeline event, redacted to null with
`redacted`, `redacted_at` and `redaction_reason: retention` (migration 016, the one rewrite the append-only
timeline allows). A held recording keeps everything.

One recording at a time, each in its own transaction with the row locked (`SKIP LOCKED`): several nodes
purging at once share the work, and a hold placed while the purge runs is respected or waits for it."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from crm_bridge.timeline import Timeline
from hilo import audit
from recordings import catalog
from recordings.storage import BlobBackend

log = logging.getLogger(__name__)

ACTOR = audit.system("retention")  # the server's own schedule; `hilo recordings purge` passes its own
_DUE = (
    "SELECT id FROM recordings WHERE deleted_at IS NULL AND NOT legal_hold AND delete_after <= $1"
    " AND state IN ('stored', 'failed') ORDER BY delete_after, id"
)
_HELD = "SELECT count(*) FROM recordings WHERE deleted_at IS NULL AND legal_hold AND delete_after <= $1"


@dataclass
class PurgeReport:
    due: int = 0  # recordings past their retention (not held)
    deleted: int = 0
    held: int = 0  # past their retention but kept by a legal hold
    errors: list[str] = field(default_factory=list)
    ids: list[uuid.UUID] = field(default_factory=list)  # deleted (or, in a dry run, that would be)


Progress = Callable[[int, int], None]  # (done, total)


async def purge(
    pool: asyncpg.Pool,
    store: BlobBackend,
    timeline: Timeline,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    actor: str = ACTOR,
) -> PurgeReport:
    moment = now or datetime.now(UTC)
    report = PurgeReport()
    due = [r["id"] for r in await pool.fetch(_DUE, moment)]
    report.due = len(due)
    report.held = int(await pool.fetchval(_HELD, moment))
    if dry_run:
        report.ids = due
        return report
    for done, recording_id in enumerate(due, start=1):
        try:
            deleted = await _delete_one(pool, store, recording_id, moment, actor)
        except Exception as exc:
            log.exception("retention: recording %s could not be deleted", recording_id)
            report.errors.append(f"{recording_id}: {type(exc).__name__}: {exc}")
            deleted = None
        if deleted is not None:
            report.deleted += 1
            report.ids.append(recording_id)
            await timeline.publish(deleted)
        if progress is not None:
            progress(done, len(due))
    return report


async def _delete_one(
    pool: asyncpg.Pool, store: BlobBackend, recording_id: uuid.UUID, moment: datetime, actor: str
) -> dict[str, Any] | None:
    """Delete one recording; returns its `recording.deleted` event, written in the same transaction as the
    deletion (for the caller to publish once committed), or None if it was not for this round to delete."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT id FROM recordings WHERE id = $1 AND deleted_at IS NULL AND NOT legal_hold AND delete_after <= $2"
            " FOR UPDATE SKIP LOCKED",
            recording_id,
            moment,
        )
        if row is None:  # held meanwhile, or another node has it
            return None
        rec = await catalog.get(conn, recording_id)
        assert rec is not None
        had_file = await asyncio.to_thread(store.delete, rec.storage_key) if rec.storage_key else False
        # Before the row is marked deleted, whose trigger would redact too, but with a generic reason.
        redacted = await conn.fetchval("SELECT redact_recording_transcript($1, 'retention')", recording_id)
        rec = await catalog.update(conn, recording_id, state="deleted", deleted_at=datetime.now(UTC))
        await catalog.audit(
            conn,
            recording_id,
            "deleted",
            actor,
            {
                "reason": "retention",
                "delete_after": rec.delete_after.isoformat(),
                "file": had_file,
                "timeline_texts_redacted": redacted,
            },
        )
        return await catalog.timeline_event(
            conn, recording_id, "recording.deleted", {"recording_id": str(recording_id), "reason": "retention"}
        )


async def run_periodically(
    pool: asyncpg.Pool,
    store: BlobBackend,
    timeline: Timeline,
    interval_s: float,
    sweep: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """The server's recording housekeeping: now and then every `interval_s`, `sweep` (recordings left in
    Asterisk's spool) and the purge. A failed round is logged and the next one tries again."""
    while True:
        try:
            if sweep is not None:
                await sweep()
            report = await purge(pool, store, timeline)
            if report.deleted or report.errors:
                log.info(
                    "retention: %d recording(s) deleted, %d error(s), %d held",
                    report.deleted,
                    len(report.errors),
                    report.held,
                )
        except Exception:
            log.exception("retention round failed")
        await asyncio.sleep(interval_s)
