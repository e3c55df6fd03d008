"""Recording calls through ARI: the caller-agent conversation (the bridge's mixed audio) from the moment they
are bridged, PCI pause and resume, and voicemail; each file then taken out of Asterisk's spool into the
encrypted store.

The life of a call recording (`recordings.state`): `recording` while Asterisk writes it; when the bridge
ends, `storing` (claimed by one node) while the file is fetched over ARI, the paused spans are given back
as silence, and it is encrypted and read back; `stored` once verified, and only then is Asterisk's
plaintext deleted. Anything that goes wrong leaves `failed` with the reason, and the spool file stays for
the next sweep to retry. Recording never costs the caller the call: every failure is logged and put on the
timeline, the conversation goes on.

Pause and resume work from any node: the span is kept in the row (under a row lock), the ARI command names
the live recording. Digits pressed while a recording is paused are neither logged nor put on the timeline
by Hilo (and Asterisk's log is configured without its `dtmf` level)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from asterisk.ari import AriClient, AriError
from asterisk.events import Event, LiveRecording, RecordingEvent
from crm_bridge.timeline import Interaction, Timeline
from recordings import catalog
from recordings.audio import duration_s, insert_silence
from recordings.catalog import Recording
from recordings.policy import CONSENT_KEY, RecordingPolicy
from recordings.storage import EncryptedStore, private_dirs

log = logging.getLogger(__name__)

FORMAT = "wav"  # 8 kHz 16-bit PCM: what the browser plays and what silence can be put into
FINISH_TIMEOUT_S = 15.0  # from the end of the bridge to Asterisk closing the file
FINISH_POLL_S = 0.25
SWEEP_GRACE = timedelta(seconds=60)  # an unfinished recording this long after its call ended is taken over
STALE_STORING = timedelta(minutes=10)  # a node that claimed a recording this long ago and did not finish died


class NotLive(Exception):
    """The recording is not being recorded any more (or not yet): it cannot be paused or resumed."""


@dataclass
class _Ending:
    recording: LiveRecording
    at: datetime


def _interaction(rec: Recording) -> Interaction:
    return Interaction(rec.interaction_id, rec.customer_id, "voice")


def _rounded(seconds: float) -> float:
    return round(max(seconds, 0.0), 3)


class CallRecorder:
    def __init__(
        self,
        *,
        ari: AriClient,
        pool: asyncpg.Pool,
        timeline: Timeline,
        store: EncryptedStore,
        policy: RecordingPolicy,
        work_dir: Path,
    ) -> None:
        self.ari = ari
        self.pool = pool
        self.timeline = timeline
        self.store = store
        self.policy = policy
        self.work_dir = work_dir  # plaintext only passes through here, for the moment it takes to encrypt
        self._endings: dict[str, asyncio.Future[_Ending]] = {}
        ari.handlers.append(self._on_event)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, RecordingEvent) and event.type in ("RecordingFinished", "RecordingFailed"):
            ending = self._endings.get(event.recording.name)
            if ending is not None and not ending.done():
                ending.set_result(_Ending(event.recording, datetime.now(UTC)))

    # -- the conversation ---------------------------------------------------------------------------------
    async def start_call(self, interaction: Interaction, bridge_id: str, agent_id: str) -> Recording | None:
        """Record the bridge, unless the queue or the caller says not to. Never raises: a recording that
        cannot start is on the timeline as `recording.failed`, and the call goes on."""
        queue = interaction.context.get("queue")
        variables = (interaction.context.get("ivr") or {}).get("variables") or {}
        try:
            reason = self.policy.skip_reason(queue, variables, interaction.context.get(CONSENT_KEY))
            if reason is not None:
                await self.timeline.record(interaction, "recording.skipped", {"reason": reason})
                return None

            async def record(name: str) -> None:
                await self.ari.record_bridge(bridge_id, name, fmt=FORMAT)

            return await self._start(interaction, agent_id, record, f"bridge {bridge_id}")
        except Exception:
            log.exception("recording of interaction %s could not start", interaction.id)
            return None

    async def start_channel(self, interaction: Interaction, channel_id: str) -> Recording | None:
        """Record what a channel hears (a snoop on the caller, for a flow's `record` node), with no limit of
        length or silence, until stopped or hung up. The caller's refusal is checked by the flow's side
        (recordings/flow.py). Never raises."""
        try:

            async def record(name: str) -> None:
                await self.ari.record(
                    channel_id, name, fmt=FORMAT, max_duration_s=0, max_silence_s=0, beep=False, terminate_on="none"
                )

            return await self._start(interaction, None, record, f"channel {channel_id}")
        except Exception:
            log.exception("flow recording of interaction %s could not start", interaction.id)
            return None

    async def _start(
        self, interaction: Interaction, agent_id: str | None, record: Callable[[str], Awaitable[None]], what: str
    ) -> Recording | None:
        queue = interaction.context.get("queue")
        recording_id = uuid.uuid4()
        name = f"{self.ari.app}-rec-{recording_id}"
        self._endings[name] = asyncio.get_running_loop().create_future()
        try:
            await record(name)
        except AriError as exc:
            self._endings.pop(name, None)
            log.error("could not start recording %s: %s", what, exc)
            await self.timeline.record(interaction, "recording.failed", {"reason": f"ARI {exc.status}"})
            return None
        try:
            rec = await catalog.create(
                self.pool,
                kind="call",
                interaction_id=interaction.id,
                customer_id=interaction.customer_id,
                agent_id=agent_id,
                queue=queue,
                asterisk_name=name,
                started_at=datetime.now(UTC),
                retention_days=self.policy.retention_days(queue),
                recording_id=recording_id,
            )
        except Exception:
            # A recording nobody can account for (no row, so no retention, no access control) is not kept.
            self._endings.pop(name, None)
            with contextlib.suppress(AriError):
                await self.ari.discard_recording(name)
            raise
        await self.timeline.record(interaction, "recording.started", {"recording_id": str(rec.id), "kind": "call"})
        return rec

    async def finish_call(self, rec: Recording) -> None:
        """After the bridge is gone: wait for Asterisk to close the file, then store it."""
        try:
            ending = await self._ending(rec.asterisk_name)
            ended_at = ending.at if ending else datetime.now(UTC)
            if ending is not None and ending.recording.state not in ("done", ""):
                await self._fail(rec, f"Asterisk: {ending.recording.cause or ending.recording.state}", ended_at)
                return
            claimed = await self._claim(rec.id, ended_at)
            if claimed is not None:
                await self._store(claimed)
        except Exception:
            log.exception("recording %s could not be finished", rec.id)
        finally:
            self._endings.pop(rec.asterisk_name, None)

    async def _ending(self, name: str) -> _Ending | None:
        """How the recording ended: Asterisk's RecordingFinished/Failed, or None once Asterisk no longer lists it
        as live. The event is not enough on its own: Asterisk sends a bridge recording's events to those
        subscribed to the bridge, and an app's subscription ends when its last channel leaves, which may be
        before the recorder does."""
        future = self._endings.get(name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FINISH_TIMEOUT_S
        while loop.time() < deadline:
            if future is not None:
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(future), FINISH_POLL_S)
            live = await self.ari.live_recording(name)
            if live is None or live.get("state") in ("done", "failed", "canceled"):
                if future is not None and future.done():
                    return future.result()
                return _Ending(LiveRecording(name=name, state=live.get("state", "") if live else ""), datetime.now(UTC))
            if future is None:
                await asyncio.sleep(FINISH_POLL_S)
        log.warning("recording %s still live %ss after its bridge ended: storing what is there", name, FINISH_TIMEOUT_S)
        return None

    async def discard(self, rec: Recording, reason: str, actor: str) -> None:
        """Stop a live recording and throw it away (the caller refused consent after it began): Asterisk
        deletes its file, the row keeps the metadata as deleted, and the audit trail and the timeline say
        why. Never raises."""
        try:
            with contextlib.suppress(AriError):
                await self.ari.discard_recording(rec.asterisk_name)
            self._endings.pop(rec.asterisk_name, None)
            now = datetime.now(UTC)
            async with self.pool.acquire() as conn, conn.transaction():
                await catalog.update(conn, rec.id, state="deleted", ended_at=now, deleted_at=now, failure=reason)
                await catalog.audit(conn, rec.id, "deleted", actor, {"reason": reason})
            await self.timeline.record(
                _interaction(rec), "recording.deleted", {"recording_id": str(rec.id), "reason": reason}
            )
        except Exception:
            log.exception("recording %s could not be discarded", rec.id)

    # -- PCI pause ------------------------------------------------------------------------------------------
    async def pause(self, recording_id: uuid.UUID, actor: str) -> tuple[Recording, bool]:
        """Pause (e.g. while the caller reads out a card number). Returns the recording and whether this
        call changed anything (pausing a paused recording has no further effect). LookupError, NotLive."""
        return await self._toggle(recording_id, actor, pause=True)

    async def resume(self, recording_id: uuid.UUID, actor: str) -> tuple[Recording, bool]:
        return await self._toggle(recording_id, actor, pause=False)

    async def _toggle(self, recording_id: uuid.UUID, actor: str, *, pause: bool) -> tuple[Recording, bool]:
        async with self.pool.acquire() as conn, conn.transaction():
            rec = await catalog.get(conn, recording_id, for_update=True)
            if rec is None:
                raise LookupError(f"no recording {recording_id}")
            if rec.state != "recording":
                raise NotLive(f"the recording is {rec.state}, not live")
            if rec.paused == pause:
                return rec, False
            try:
                if pause:
                    await self.ari.pause_recording(rec.asterisk_name)
                else:
                    await self.ari.unpause_recording(rec.asterisk_name)
            except AriError as exc:
                if exc.status in (404, 409):
                    raise NotLive("Asterisk is not recording it (the call has ended)") from exc
                raise
            at_s = _rounded((datetime.now(UTC) - rec.started_at).total_seconds())
            spans = [dict(s) for s in rec.paused_spans]
            if pause:
                spans.append({"start_s": at_s, "end_s": None})
            else:
                spans[-1]["end_s"] = max(at_s, spans[-1]["start_s"])
            rec = await catalog.update(conn, rec.id, paused_spans=spans)
            await catalog.audit(conn, rec.id, "pause" if pause else "resume", actor, {"at_s": at_s})
        event = "recording.paused" if pause else "recording.resumed"
        await self.timeline.record(_interaction(rec), event, {"recording_id": str(rec.id), "at_s": at_s})
        return rec, True

    # -- voicemail ------------------------------------------------------------------------------------------
    async def store_voicemail(self, interaction: Interaction, name: str, duration: float | None) -> Recording | None:
        """Take a finished voicemail (`name` in Asterisk's spool) into the encrypted store. Never raises."""
        queue = interaction.context.get("queue")
        now = datetime.now(UTC)
        try:
            rec = await catalog.create(
                self.pool,
                kind="voicemail",
                interaction_id=interaction.id,
                customer_id=interaction.customer_id,
                agent_id=None,
                queue=queue,
                asterisk_name=name,
                started_at=now - timedelta(seconds=duration or 0),
                retention_days=self.policy.retention_days(queue),
            )
            claimed = await self._claim(rec.id, now)
            return await self._store(claimed) if claimed else None
        except Exception:
            log.exception("voicemail %s of interaction %s could not be stored", name, interaction.id)
            return None

    # -- storing --------------------------------------------------------------------------------------------
    async def _claim(self, recording_id: uuid.UUID, ended_at: datetime, state: str = "recording") -> Recording | None:
        """Move a recording from `state` to `storing` (once: None if another task or node moved it first),
        closing a pause that was still open when the call ended."""
        async with self.pool.acquire() as conn, conn.transaction():
            rec = await catalog.get(conn, recording_id, for_update=True)
            if rec is None or rec.state != state:
                return None
            end_s = _rounded((ended_at - rec.started_at).total_seconds())
            spans = [
                {"start_s": s["start_s"], "end_s": s["end_s"] if s.get("end_s") is not None else end_s}
                for s in rec.paused_spans
            ]
            return await catalog.update(
                conn, rec.id, state="storing", ended_at=rec.ended_at or ended_at, paused_spans=spans, failure=None
            )

    async def _store(self, rec: Recording) -> Recording | None:
        private_dirs(self.work_dir)
        fetched = self.work_dir / f"{rec.id}.asterisk.{FORMAT}"
        filled = self.work_dir / f"{rec.id}.{FORMAT}"
        try:
            await self.ari.download_stored_recording(rec.asterisk_name, fetched)
            os.chmod(fetched, 0o600)
            assert rec.ended_at is not None
            spans = rec.spans((rec.ended_at - rec.started_at).total_seconds())
            if spans:
                length = await asyncio.to_thread(insert_silence, fetched, filled, spans)
            else:
                os.replace(fetched, filled)
                length = await asyncio.to_thread(duration_s, filled)
            key = f"{rec.started_at:%Y/%m/%d}/{rec.id}.hrec"
            stored = await self.store.put_file(key, filled, context=str(rec.id))
            rec = await catalog.update(
                self.pool,
                rec.id,
                state="stored",
                storage_key=stored.key,
                key_id=stored.key_id,
                sha256=stored.sha256,
                size_bytes=stored.size,
                duration_s=round(length, 3),
            )
        except Exception as exc:
            log.exception("recording %s could not be stored", rec.id)
            await self._fail(rec, _reason(exc), rec.ended_at)
            return None
        finally:
            for path in (fetched, filled):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        try:  # the encrypted copy reads back as the original: the plaintext may go
            await self.ari.delete_stored_recording(rec.asterisk_name)
        except AriError as exc:
            log.error("recording %s is stored, but Asterisk kept its plaintext (next sweep retries): %s", rec.id, exc)
        await self.timeline.record(
            _interaction(rec),
            "recording.stored",
            {
                "recording_id": str(rec.id),
                "kind": rec.kind,
                "duration_s": rec.duration_s,
                "paused_spans": len(rec.paused_spans),
            },
        )
        return rec

    async def _fail(self, rec: Recording, reason: str, ended_at: datetime | None) -> None:
        try:
            await catalog.update(self.pool, rec.id, state="failed", failure=reason[:500], ended_at=ended_at)
            await self.timeline.record(
                _interaction(rec), "recording.failed", {"recording_id": str(rec.id), "reason": reason[:200]}
            )
        except Exception:
            log.exception("could not mark recording %s failed", rec.id)

    # -- sweep ----------------------------------------------------------------------------------------------
    async def sweep(self) -> int:
        """Tidy Asterisk's spool against the catalogue: store recordings whose call ended without them being
        stored (the node died, Asterisk's event was lost, a store failed), and delete plaintext left behind
        by stored or deleted ones. Returns how many recordings it stored."""
        try:
            names = [r["name"] for r in await self.ari.stored_recordings()]
        except AriError as exc:
            log.warning("recording sweep: cannot list Asterisk's recordings: %s", exc)
            return 0
        if not names:
            return 0
        rows = await self.pool.fetch(
            "SELECT r.id, r.state, r.asterisk_name, r.updated_at, i.ended_at AS call_ended FROM recordings r"
            " JOIN interactions i ON i.id = r.interaction_id WHERE r.asterisk_name = ANY($1::text[])",
            names,
        )
        now = datetime.now(UTC)
        stored = 0
        for row in rows:
            if row["state"] in ("stored", "deleted"):
                with contextlib.suppress(AriError):
                    await self.ari.delete_stored_recording(row["asterisk_name"])
                continue
            if row["asterisk_name"] in self._endings:
                continue  # this node is still recording or finishing it
            ended = row["call_ended"]
            abandoned = (
                (row["state"] == "recording" and ended is not None and now - ended > SWEEP_GRACE)
                or row["state"] == "failed"
                or (row["state"] == "storing" and now - row["updated_at"] > STALE_STORING)
            )
            if not abandoned:
                continue
            claimed = await self._claim(row["id"], ended or now, row["state"])
            if claimed is not None and await self._store(claimed) is not None:
                stored += 1
        return stored


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
