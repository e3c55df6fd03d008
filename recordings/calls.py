"""Recording calls through ARI: the caller-agent conversation (the bridge's mixed audio) from the moment they
are bridged, and where the queue asks for it each side on its own too (its legs), PCI pause and resume, and
voicemail; each file then taken out of Asterisk's spool into the encrypted store.

A leg is recorded from a snoop channel on that side's channel with spy=in: only the audio coming from it
(what the caller, or the agent, says), never what it hears, so the two legs hold one speaker each. A snoop
rather than a recording of the channel itself, because a channel in a bridge cannot record (ARI refuses it),
and a snoop leaves the bridge and the channels untouched. A leg is a recording of its own (row, file, key,
access, retention) with `leg` caller|agent and `mixed_id` naming the conversation's mixed recording; a pause or
resume of any of them applies to all of the conversation's recordings at once.

The life of a call recording (`recordings.state`): `recording` while Asterisk writes it; when the bridge
ends, `storing` (claimed by one node) while the file is fetched over ARI, the paused spans are given back
as silence, and it is encrypted and read back; `stored` once verified, and only then is Asterisk's
plaintext deleted. Anything that goes wrong leaves `failed` with the reason, and the spool file stays for
the next sweep to retry. Recording never costs the caller the call: every failure is logged and put on the
timeline, the conversation goes on.

While it is stored, the plaintext passes through Hilo's disk: the WAV fetched from Asterisk, and the copy
with the paused spans given back as silence, in `work_dir` (0700, files 0600), deleted as soon as the
encrypted copy is verified or the store fails. A process killed mid-way leaves them behind, so the sweep (at
start, then with every housekeeping round) deletes what no store is using (`clean_incoming`). They are
deleted rather than encrypted: they are never the only copy (Asterisk's file is deleted only after the
encrypted one is verified and the row says `stored`), and the sweep stores the recording again from
Asterisk's spool, whereas a leftover may be cut short mid-download or mid-silence.

Pause and resume work from any node: the span is kept in the row (under a row lock), the ARI command names
the live recording. Digits pressed while a recording is paused are neither logged nor put on the timeline
by Hilo (and Asterisk's log is configured without its `dtmf` level)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from asterisk.ari import AriClient, AriError
from asterisk.events import Event, LiveRecording, RecordingEvent
from asterisk.stasis import StasisRouter
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
SNOOP_WAIT_S = 5.0  # for a leg's snoop channel to enter the app
_WORK_FILE = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.(?:asterisk\.)?[a-z0-9]+$")


class NotLive(Exception):
    """The recording is not being recorded any more (or not yet): it cannot be paused or resumed."""


@dataclass
class _Ending:
    recording: LiveRecording
    at: datetime


@dataclass(frozen=True)
class CallLegs:
    """The two sides of a bridged call (channel ids), for a queue that records each on its own."""

    stasis: StasisRouter  # the snoop channels are watched there, so their StasisStart is not taken for a call
    caller: str
    agent: str


@dataclass
class _Leg:
    recording: Recording
    snoop_id: str
    stasis: StasisRouter


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
        self._legs: dict[uuid.UUID, list[_Leg]] = {}  # by the mixed recording, while this node records them
        self._storing: set[uuid.UUID] = set()  # recordings this process is storing (their work files are in use)
        ari.handlers.append(self._on_event)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, RecordingEvent) and event.type in ("RecordingFinished", "RecordingFailed"):
            ending = self._endings.get(event.recording.name)
            if ending is not None and not ending.done():
                ending.set_result(_Ending(event.recording, datetime.now(UTC)))

    # -- the conversation ---------------------------------------------------------------------------------
    async def start_call(
        self, interaction: Interaction, bridge_id: str, agent_id: str, legs: CallLegs | None = None
    ) -> Recording | None:
        """Record the bridge, unless the queue or the caller says not to, and each of `legs` when the queue
        records legs. Returns the mixed recording (`stop` and `finish_call` take its legs along). Never
        raises: a recording that cannot start is on the timeline as `recording.failed`, and the call goes on."""
        queue = interaction.context.get("queue")
        variables = (interaction.context.get("ivr") or {}).get("variables") or {}
        try:
            reason = self.policy.skip_reason(queue, variables, interaction.context.get(CONSENT_KEY))
            if reason is not None:
                await self.timeline.record(interaction, "recording.skipped", {"reason": reason})
                return None

            async def record(name: str) -> None:
                await self.ari.record_bridge(bridge_id, name, fmt=FORMAT)

            mixed = await self._start(interaction, agent_id, record, f"bridge {bridge_id}")
        except Exception:
            log.exception("recording of interaction %s could not start", interaction.id)
            return None
        if mixed is not None and legs is not None and self.policy.legs(queue):
            started = await asyncio.gather(
                self._start_leg(interaction, agent_id, mixed, "caller", legs.caller, legs.stasis),
                self._start_leg(interaction, agent_id, mixed, "agent", legs.agent, legs.stasis),
            )
            self._legs[mixed.id] = [leg for leg in started if leg is not None]
        return mixed

    async def _start_leg(
        self,
        interaction: Interaction,
        agent_id: str,
        mixed: Recording,
        leg: str,
        channel_id: str,
        stasis: StasisRouter,
    ) -> _Leg | None:
        """What one side says, from a snoop (spy=in) on its channel. Never raises."""
        snoop_id = f"{self.ari.app}-legsnoop-{uuid.uuid4().hex[:12]}"
        state = stasis.watch(snoop_id)  # before it exists: its StasisStart must not look like a new call
        try:
            await self.ari.snoop(channel_id, snoop_id, spy="in", app_args="recording")
            await asyncio.wait_for(state.in_stasis.wait(), SNOOP_WAIT_S)

            async def record(name: str) -> None:
                await self.ari.record(
                    snoop_id, name, fmt=FORMAT, max_duration_s=0, max_silence_s=0, beep=False, terminate_on="none"
                )

            rec = await self._start(interaction, agent_id, record, f"{leg} leg", leg=leg, mixed_id=mixed.id)
        except (AriError, TimeoutError) as exc:
            log.error("%s leg of interaction %s: no snoop on %s: %s", leg, interaction.id, channel_id, exc)
            rec = None
            with contextlib.suppress(Exception):
                await self.timeline.record(interaction, "recording.failed", {"reason": "snoop", "leg": leg})
        except Exception:
            log.exception("%s leg of interaction %s could not start", leg, interaction.id)
            rec = None
        if rec is None:
            with contextlib.suppress(AriError):
                await self.ari.hangup(snoop_id)
            stasis.forget(snoop_id)
            return None
        return _Leg(rec, snoop_id, stasis)

    async def stop(self, rec: Recording) -> None:
        """Stop a call recording and its legs (before the bridge is torn down: a bridge still holding a
        recorder cannot be destroyed once the callers have left it), then end the legs' snoop channels."""
        legs = self._legs.get(rec.id, [])
        for name in [rec.asterisk_name, *(leg.recording.asterisk_name for leg in legs)]:
            try:
                await self.ari.stop_recording(name)
            except AriError as exc:
                log.warning("could not stop recording %s: %s", name, exc)
        for leg in legs:
            with contextlib.suppress(AriError):
                await self.ari.hangup(leg.snoop_id)

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
        self,
        interaction: Interaction,
        agent_id: str | None,
        record: Callable[[str], Awaitable[None]],
        what: str,
        *,
        leg: str = "mixed",
        mixed_id: uuid.UUID | None = None,
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
            failed = {"reason": f"ARI {exc.status}"} | ({"leg": leg} if mixed_id else {})
            await self.timeline.record(interaction, "recording.failed", failed)
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
                leg=leg,
                mixed_id=mixed_id,
            )
        except Exception:
            # A recording nobody can account for (no row, so no retention, no access control) is not kept.
            self._endings.pop(name, None)
            with contextlib.suppress(AriError):
                await self.ari.discard_recording(name)
            raise
        started: dict[str, str] = {"recording_id": str(rec.id), "kind": "call"}
        if mixed_id is not None:
            started |= {"leg": leg, "mixed_id": str(mixed_id)}
        await self.timeline.record(interaction, "recording.started", started)
        return rec

    async def finish_call(self, rec: Recording) -> None:
        """After the bridge is gone: wait for Asterisk to close the files (the recording's and its legs'),
        then store them. The legs' snoop channels are ended and forgotten whatever happens."""
        legs = self._legs.pop(rec.id, [])
        try:
            await asyncio.gather(self._finish(rec), *(self._finish(leg.recording) for leg in legs))
        finally:
            for leg in legs:
                with contextlib.suppress(AriError):
                    await self.ari.hangup(leg.snoop_id)
                leg.stasis.forget(leg.snoop_id)

    async def _finish(self, rec: Recording) -> None:
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
                event = await catalog.timeline_event(
                    conn, rec.id, "recording.deleted", {"recording_id": str(rec.id), "reason": reason}
                )
            await self.timeline.publish(event)
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
        """Pause or resume the recording and every other live recording of its conversation (its mixed one,
        its legs) in one transaction: one pause never leaves a leg recording what the others leave out."""
        events: list[tuple[Recording, float]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            rec = await catalog.get(conn, recording_id, for_update=True)
            if rec is None:
                raise LookupError(f"no recording {recording_id}")
            group = await catalog.group(conn, rec, for_update=True)
            if rec.state != "recording":
                raise NotLive(f"the recording is {rec.state}, not live")
            if rec.paused == pause:
                return rec, False
            verb = "pause" if pause else "resume"
            # The one asked for first: if Asterisk no longer has it, nothing of the conversation has changed.
            for each in [rec, *(r for r in group if r.id != rec.id)]:
                if each.state != "recording" or each.paused == pause:
                    continue
                try:
                    if pause:
                        await self.ari.pause_recording(each.asterisk_name)
                    else:
                        await self.ari.unpause_recording(each.asterisk_name)
                except AriError as exc:
                    if each.id != rec.id:
                        log.warning("recording %s (%s leg) not %sd: %s", each.id, each.leg, verb, exc)
                        continue
                    if exc.status in (404, 409):
                        raise NotLive("Asterisk is not recording it (the call has ended)") from exc
                    raise
                at_s = _rounded((datetime.now(UTC) - each.started_at).total_seconds())
                spans = [dict(s) for s in each.paused_spans]
                if pause:
                    spans.append({"start_s": at_s, "end_s": None})
                else:
                    spans[-1]["end_s"] = max(at_s, spans[-1]["start_s"])
                updated = await catalog.update(conn, each.id, paused_spans=spans)
                await catalog.audit(conn, each.id, verb, actor, {"at_s": at_s})
                events.append((updated, at_s))
        event = "recording.paused" if pause else "recording.resumed"
        for each, at_s in events:
            data: dict[str, object] = {"recording_id": str(each.id), "at_s": at_s}
            if each.mixed_id is not None:
                data["leg"] = each.leg
            await self.timeline.record(_interaction(each), event, data)
        return events[0][0], True

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
        self._storing.add(rec.id)
        try:
            for path in (fetched, filled):  # 0600 before the first byte of audio is written
                _private_file(path)
            await self.ari.download_stored_recording(rec.asterisk_name, fetched)
            assert rec.ended_at is not None
            spans = rec.spans((rec.ended_at - rec.started_at).total_seconds())
            if spans:
                length = await asyncio.to_thread(insert_silence, fetched, filled, spans)
            else:
                os.replace(fetched, filled)
                length = await asyncio.to_thread(duration_s, filled)
            rec, event = await self.keep(rec, filled, length)
        except Exception as exc:
            log.exception("recording %s could not be stored", rec.id)
            await self._fail(rec, _reason(exc), rec.ended_at)
            return None
        finally:
            for path in (fetched, filled):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            self._storing.discard(rec.id)
        await self.timeline.publish(event)
        try:  # the encrypted copy reads back as the original: the plaintext may go
            await self.ari.delete_stored_recording(rec.asterisk_name)
        except AriError as exc:
            log.error("recording %s is stored, but Asterisk kept its plaintext (next sweep retries): %s", rec.id, exc)
        return rec

    async def keep(self, rec: Recording, audio: Path, length_s: float) -> tuple[Recording, dict[str, Any]]:
        """`audio` (a plain file of this node's) encrypted into the store, then the recording `stored` with its
        `recording.stored` event in one transaction: the state and its event, or neither. Returns both; the
        caller publishes the event. (The stack tests make their stored recordings with it too.)"""
        key = f"{rec.started_at:%Y/%m/%d}/{rec.id}.hrec"
        stored = await self.store.put_file(key, audio, context=str(rec.id))
        data: dict[str, object] = {"recording_id": str(rec.id), "kind": rec.kind}
        async with self.pool.acquire() as conn, conn.transaction():
            rec = await catalog.update(
                conn,
                rec.id,
                state="stored",
                storage_key=stored.key,
                key_id=stored.key_id,
                sha256=stored.sha256,
                size_bytes=stored.size,
                duration_s=round(length_s, 3),
            )
            data |= {"duration_s": rec.duration_s, "paused_spans": len(rec.paused_spans)}
            if rec.mixed_id is not None:
                data["leg"] = rec.leg
            event = await catalog.timeline_event(conn, rec.id, "recording.stored", data)
        return rec, event

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
        by stored or deleted ones; then delete plaintext a killed process left in `work_dir`. Returns how
        many recordings it stored."""
        try:
            return await self._sweep_spool()
        finally:
            try:
                await self.clean_incoming()
            except Exception:
                log.exception("recording sweep: cannot clean %s", self.work_dir)

    async def _sweep_spool(self) -> int:
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

    async def clean_incoming(self) -> int:
        """Delete the plaintext work files (`<id>.asterisk.wav`, `<id>.wav`) that no store is using: not this
        process's, nor of a recording another process sharing the folder is storing (`storing`, changed
        within STALE_STORING; once that is stale the sweep takes the recording over, and its store replaces
        and deletes them). Every other file there is a leftover of a process killed mid-store, of a recording
        stored, failed, deleted or unknown: never the only copy (see the module's docstring). Returns how
        many files it deleted."""
        files = await asyncio.to_thread(_work_files, self.work_dir)
        if not files:
            return 0
        ids = sorted({rid for rid, _ in files})
        busy = {
            r["id"]
            for r in await self.pool.fetch(
                "SELECT id FROM recordings WHERE id = ANY($1::uuid[]) AND state = 'storing'"
                " AND updated_at > now() - make_interval(secs => $2)",
                ids,
                STALE_STORING.total_seconds(),
            )
        }
        deleted = 0
        for rid, path in files:
            if rid in self._storing or rid in busy:
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                deleted += 1
                log.warning("recording %s: deleted plaintext left behind in %s by an unfinished store", rid, path.name)
        return deleted


def _private_file(path: Path) -> None:
    """Create (or empty) `path` readable and writable by this user only, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _work_files(folder: Path) -> list[tuple[uuid.UUID, Path]]:
    """The recordings' work files in `folder` (which is made 0700 if it was not), by recording id."""
    if not folder.is_dir():
        return []
    os.chmod(folder, 0o700)
    found = []
    for path in folder.iterdir():
        match = _WORK_FILE.match(path.name)
        if match and path.is_file():
            found.append((uuid.UUID(match.group(1)), path))
    return found


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


RECORDER = web.AppKey("recorder", CallRecorder)  # absent: no HILO_RECORDING_KEYS, nothing is recorded
