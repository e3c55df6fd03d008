"""Transcripts of stored recordings: a durable queue in PostgreSQL (`recording_transcripts`) and the
background worker that empties it.

A recording that becomes `stored` gets its job from a trigger in that same transaction (migration 013), so
none is ever missed; calls never wait for a transcript. The worker leases one job at a time (`SKIP LOCKED`,
several nodes share the work), renews the lease while it decodes, and on success writes the text and the
`recording.transcribed` timeline event in one transaction (the event's text is withheld from webhooks and
from non-admins' timeline reads, and redacted when the recording is deleted: migration 016). A node that
dies mid-way leaves a lease that runs out: the job is taken up again. A failure is retried after a growing
delay, `max_attempts` times in all, then left `failed` with the reason (`recording.transcription_failed` on
the timeline); a language no engine here recognizes fails at once (retrying cannot help).

The language is that of the flow that answered the call (what the caller was spoken to in), else the
customer's preferred language, else the server's default (`HILO_TRANSCRIPT_LANGUAGE`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

from crm_bridge.timeline import Publish, append
from hilo.claim_loop import ClaimLoop
from recordings import catalog
from recordings.catalog import Recording
from recordings.decode_child import DecodeJob, decode_in_child
from recordings.storage import EncryptedStore
from recordings.transcribe import Transcript
from speech.engines import EngineUnavailable
from speech.standard import standard_engines

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "hilo_recording_transcripts"  # migration 013's trigger
TIMELINE_TEXT_MAX = 20_000  # characters of a transcript carried on the timeline event (the table has it all)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_s: float = 30.0  # after the first failure; doubled after each further one
    lease_s: float = 600.0  # a job leased this long without renewal belongs to a node that died

    def retry_in(self, attempts: int) -> timedelta | None:
        """How long to wait before the next try after `attempts` tries failed; None = give up."""
        if attempts >= self.max_attempts:
            return None
        return timedelta(seconds=self.backoff_s * 2 ** max(attempts - 1, 0))


def language_of(flow_language: str | None, customer_language: str | None, default: str) -> str:
    """The transcript's language: the call's flow's, else the customer's, else `default` ("es-ES" -> "es")."""
    for candidate in (flow_language, customer_language):
        if candidate and candidate.strip():
            return candidate.strip().replace("_", "-").split("-")[0].lower()
    return default


@dataclass(frozen=True)
class Job:
    recording_id: uuid.UUID
    attempts: int  # this one included


_CLAIM = """
UPDATE recording_transcripts SET attempts = attempts + 1, leased_until = now() + make_interval(secs => $1),
       updated_at = now()
 WHERE recording_id = (
       SELECT recording_id FROM recording_transcripts
        WHERE state = 'pending' AND next_attempt_at <= now() AND (leased_until IS NULL OR leased_until < now())
        ORDER BY next_attempt_at, recording_id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING recording_id, attempts"""

_NEXT_DUE = """
SELECT extract(epoch FROM min(greatest(next_attempt_at, coalesce(leased_until, next_attempt_at))) - now())
  FROM recording_transcripts WHERE state = 'pending'"""

_LANGUAGES = """
SELECT c.preferred_language, i.context->>'flow_language' AS flow_language
  FROM recordings r JOIN customers c ON c.id = r.customer_id JOIN interactions i ON i.id = r.interaction_id
 WHERE r.id = $1"""


async def claim(pool: asyncpg.Pool, lease_s: float) -> Job | None:
    row = await pool.fetchrow(_CLAIM, lease_s)
    return Job(row["recording_id"], row["attempts"]) if row else None


async def get(pool: asyncpg.Pool | Any, recording_id: uuid.UUID) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        "SELECT state, attempts, language, engine, text, audio_s, decode_s, error, done_at, updated_at"
        " FROM recording_transcripts WHERE recording_id = $1",
        recording_id,
    )
    return dict(row) if row else None


class TranscriptWorker(ClaimLoop[Job]):
    """Works the queue on this node, one recording at a time (decoding is CPU work, done in a process of its
    own: recordings/decode_child.py says why)."""

    name = "recording-transcripts"

    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        store: EncryptedStore,
        vosk_models: Mapping[str, Path],
        preferred: Mapping[str, str],
        publish: Publish,
        *,
        default_language: str = "en",
        policy: RetryPolicy | None = None,
        poll_s: float = 5.0,
    ) -> None:
        super().__init__(dsn, NOTIFY_CHANNEL, concurrency=1, poll_s=poll_s)
        self.pool = pool
        self.store = store
        self.vosk_models, self.preferred = dict(vosk_models), dict(preferred)
        self.engines = standard_engines(vosk_models, preferred)  # which engine serves a language, decided here
        self.publish = publish  # the notifier: events are published after their transaction commits
        self.default_language = default_language
        self.policy = policy or RetryPolicy()

    async def close(self) -> None:
        await self.stop()  # a job cut short keeps its lease: it is taken up again when that runs out

    async def _claim(self, limit: int) -> list[Job]:
        job = await claim(self.pool, self.policy.lease_s)
        return [] if job is None else [job]

    async def _seconds_to_next_due(self) -> float | None:
        due = await self.pool.fetchval(_NEXT_DUE)
        return None if due is None else float(due)

    async def _work(self, job: Job) -> None:
        renew = asyncio.create_task(self._renew(job.recording_id))
        try:
            await self._transcribe_job(job)
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew

    async def _renew(self, recording_id: uuid.UUID) -> None:
        while True:
            await asyncio.sleep(self.policy.lease_s / 3)
            await self.pool.execute(
                "UPDATE recording_transcripts SET leased_until = now() + make_interval(secs => $2)"
                " WHERE recording_id = $1 AND state = 'pending'",
                recording_id,
                self.policy.lease_s,
            )

    async def _transcribe_job(self, job: Job) -> None:
        rec = await catalog.get(self.pool, job.recording_id)
        if rec is None or rec.state != "stored" or rec.storage_key is None:
            state = rec.state if rec is not None else "missing"
            await self._give_up(job, f"the recording is {state}, not stored", final=True, rec=rec)
            return
        row = await self.pool.fetchrow(_LANGUAGES, rec.id)
        assert row is not None  # the recording's customer and interaction are foreign keys
        language = language_of(row["flow_language"], row["preferred_language"], self.default_language)
        try:
            engine = self.engines.pick(language)
        except EngineUnavailable as exc:
            await self._give_up(job, str(exc), final=True, rec=rec, language=language)
            return
        try:
            transcript = await decode_in_child(self._job(rec, engine.name, language))
        except Exception as exc:
            log.warning("transcript of recording %s failed (attempt %d): %s", rec.id, job.attempts, exc)
            await self._give_up(job, f"{type(exc).__name__}: {exc}", final=False, rec=rec, language=language)
            return
        await self._done(job, rec, language, engine.name, transcript)

    def _job(self, rec: Recording, engine_name: str, language: str) -> DecodeJob:
        assert rec.storage_key is not None and rec.duration_s is not None
        return DecodeJob(
            store=self.store,
            storage_key=rec.storage_key,
            recording_id=str(rec.id),
            paused=rec.spans(rec.duration_s),
            vosk_models=self.vosk_models,
            preferred=self.preferred,
            engine=engine_name,
            language=language,
        )

    async def _done(self, job: Job, rec: Recording, language: str, engine: str, transcript: Transcript) -> None:
        data = {
            "recording_id": str(rec.id),
            "language": language,
            "engine": engine,
            "text": transcript.text[:TIMELINE_TEXT_MAX],
            "truncated": len(transcript.text) > TIMELINE_TEXT_MAX,
            "audio_s": transcript.audio_s,
            # what webhook receivers get instead of the text (crm_bridge/timeline.py WITHHELD): access-checked
            "transcript_url": f"/api/recordings/{rec.id}/transcript",
        }
        async with self.pool.acquire() as conn, conn.transaction():
            # The text and its timeline event together: a crash leaves neither, and the job runs again.
            updated = await conn.fetchval(
                "UPDATE recording_transcripts SET state = 'done', language = $2, engine = $3, text = $4,"
                " audio_s = $5, decode_s = $6, error = NULL, leased_until = NULL, done_at = now(), updated_at = now()"
                " WHERE recording_id = $1 AND state = 'pending' AND attempts = $7 RETURNING true",
                rec.id,
                language,
                engine,
                transcript.text,
                transcript.audio_s,
                transcript.decode_s,
                job.attempts,
            )
            if not updated:  # our lease ran out and another worker took the job over: its result counts
                return
            # On the recording's customer (a merge moves the interaction, not its recordings).
            event = await append(conn, rec.interaction_id, rec.customer_id, None, "recording.transcribed", data)
        log.info(
            "recording %s transcribed (%s, %s): %d words from %.1f s of audio in %.1f s",
            rec.id,
            language,
            engine,
            len(transcript.text.split()),
            transcript.audio_s,
            transcript.decode_s,
        )
        await self.publish(event)

    async def _give_up(
        self, job: Job, reason: str, *, final: bool, rec: Recording | None, language: str | None = None
    ) -> None:
        retry = None if final else self.policy.retry_in(job.attempts)
        reason = reason[:500]
        event = None
        async with self.pool.acquire() as conn, conn.transaction():
            if retry is not None:
                await conn.execute(
                    "UPDATE recording_transcripts SET next_attempt_at = now() + make_interval(secs => $2),"
                    " leased_until = NULL, error = $3, language = coalesce($4, language), updated_at = now()"
                    " WHERE recording_id = $1 AND state = 'pending' AND attempts = $5",
                    job.recording_id,
                    retry.total_seconds(),
                    reason,
                    language,
                    job.attempts,
                )
                return
            updated = await conn.fetchval(
                "UPDATE recording_transcripts SET state = 'failed', leased_until = NULL, error = $2,"
                " language = coalesce($3, language), updated_at = now()"
                " WHERE recording_id = $1 AND state = 'pending' AND attempts = $4 RETURNING true",
                job.recording_id,
                reason,
                language,
                job.attempts,
            )
            if updated and rec is not None and rec.state != "deleted":
                data = {"recording_id": str(job.recording_id), "reason": reason[:200], "attempts": job.attempts}
                event = await append(
                    conn, rec.interaction_id, rec.customer_id, None, "recording.transcription_failed", data
                )
        log.error("transcript of recording %s failed for good: %s", job.recording_id, reason)
        if event is not None:
            await self.publish(event)
