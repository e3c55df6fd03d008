"""Building the recording pieces from settings (for server.app and the CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg

from asterisk.ari import AriClient
from crm_bridge.timeline import Timeline
from dialplans.models import Queue
from hilo.settings import Settings
from recordings.calls import CallRecorder
from recordings.crypto import KeyRing
from recordings.policy import RecordingPolicy
from recordings.retention import run_periodically
from recordings.storage import EncryptedStore, FilesystemBackend
from recordings.transcripts import RetryPolicy, TranscriptWorker

log = logging.getLogger(__name__)


def key_ring(settings: Settings) -> KeyRing | None:
    """The key ring, or None when no keys are configured (recording off). KeyConfigError names the bad entry."""
    spec = settings.recording_keys.get_secret_value().strip()
    if not spec:
        return None
    return KeyRing.parse(spec, settings.recording_key_id.strip())


def encrypted_store(settings: Settings, ring: KeyRing) -> EncryptedStore:
    return EncryptedStore(FilesystemBackend(settings.recordings_dir / "store"), ring)


def call_recorder(
    settings: Settings, ring: KeyRing, *, ari: AriClient, pool: asyncpg.Pool, timeline: Timeline, queues: list[Queue]
) -> CallRecorder:
    return CallRecorder(
        ari=ari,
        pool=pool,
        timeline=timeline,
        store=encrypted_store(settings, ring),
        policy=RecordingPolicy(queues, settings.recording_retention_days),
        work_dir=settings.recordings_dir / "incoming",
    )


@contextlib.asynccontextmanager
async def housekeeping(
    recorder: CallRecorder, settings: Settings, pool: asyncpg.Pool | None = None
) -> AsyncIterator[None]:
    """The sweep of Asterisk's spool and the retention purge, now and every recording_purge_interval_s, on
    `pool` (the server's background pool; by default the recorder's)."""
    task = asyncio.create_task(
        run_periodically(
            pool or recorder.pool,
            recorder.store.backend,
            recorder.timeline,
            settings.recording_purge_interval_s,
            sweep=recorder.sweep,
        ),
        name="recordings-housekeeping",
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def transcription(
    recorder: CallRecorder, settings: Settings, pool: asyncpg.Pool | None = None
) -> AsyncIterator[TranscriptWorker | None]:
    """The background worker that transcribes stored recordings (None when HILO_TRANSCRIPTS is off: the
    jobs wait in the queue until a server with transcripts on takes them), on `pool` (the server's
    background pool; by default the recorder's)."""
    if not settings.transcripts:
        log.info("transcripts are off (HILO_TRANSCRIPTS=false): stored recordings wait untranscribed")
        yield None
        return
    worker = TranscriptWorker(
        pool or recorder.pool,
        settings.database_url.get_secret_value(),
        recorder.store,
        settings.vosk_models,
        settings.speech_engines,
        recorder.timeline.publish,
        default_language=settings.transcript_language,
        policy=RetryPolicy(settings.transcript_max_attempts, settings.transcript_retry_s),
    )
    await worker.start()
    try:
        yield worker
    finally:
        await worker.close()
