"""The recordings API: metadata, PCI pause/resume, signed playback URLs, the audio itself, legal hold and
the audit trail. Declared on this module's route table, served and described in the one API (hilo.web.api).

Agents may use their own calls' recordings, supervisors those of their teams, admins every one (403
otherwise; routing/scope.py has the rule, the one of every live-work route); every URL issued, every playback
and download, every refusal and every pause is on the audit trail. Only admins place legal holds and read
the audit trail."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
from aiohttp import web
from pydantic import BaseModel, Field, RootModel, model_validator

from hilo import audit
from hilo.web.auth import ADMIN, EVERYONE, principal
from hilo.web.keys import POOL, SETTINGS
from hilo.web.openapi import ApiError, Reply, Routes, conflict, not_found
from recordings import catalog, search, transcripts
from recordings.access import UrlSigner, in_scope, scope_of_actor, signed_actor
from recordings.calls import RECORDER, CallRecorder, NotLive
from recordings.catalog import Recording
from recordings.crypto import DecryptionError
from routing.scope import Scope, scope_of

ROUTES = Routes()


class RecordingPath(BaseModel):
    recording_id: uuid.UUID


class RecordingQuery(BaseModel):
    interaction_id: uuid.UUID | None = None
    customer_id: uuid.UUID | None = None
    q: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00]+$",  # PostgreSQL text cannot hold NUL
        description='words said in the call (full-text search of transcripts: all words, "a phrase", or, -word)',
    )
    limit: int = Field(50, ge=1, le=200)


class PausedSpan(BaseModel):
    start_s: float = Field(description="seconds from the start of the recording")
    end_s: float | None = Field(description="null while the recording is paused")


class RecordingLegOut(BaseModel):
    id: uuid.UUID
    kind: Literal["call", "voicemail"]
    leg: Literal["mixed", "caller", "agent"] = Field(
        description="mixed: the conversation (or a voicemail, a flow's recording); caller, agent: what that side said"
    )
    mixed_id: uuid.UUID | None = Field(description="a leg's mixed recording (the conversation it belongs to)")
    interaction_id: uuid.UUID
    customer_id: uuid.UUID
    agent_id: str | None
    queue: str | None
    state: Literal["recording", "storing", "stored", "failed", "deleted"]
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None = Field(description="of the stored file, paused spans (silence) included")
    paused: bool
    paused_spans: list[PausedSpan]
    sha256: str | None = Field(description="of the decrypted WAV")
    size_bytes: int | None
    key_id: str | None = Field(description="the encryption key the file was written with")
    retention_days: int
    delete_after: datetime
    legal_hold: bool
    hold_reason: str | None
    failure: str | None
    deleted_at: datetime | None

    @classmethod
    def fields_of(cls, rec: Recording) -> dict[str, Any]:
        return {name: getattr(rec, name) for name in RecordingLegOut.model_fields if name != "paused"} | {
            "paused": rec.paused
        }


class RecordingOut(RecordingLegOut):
    legs: list[RecordingLegOut] = Field(
        default_factory=list, description="the caller's and the agent's sides, where the queue records legs"
    )
    headline: str | None = Field(None, description="with `q`: the matching words in context, marked «so»")

    @classmethod
    def of(cls, rec: Recording, headline: str | None = None, legs: list[Recording] | None = None) -> RecordingOut:
        leg_list = [RecordingLegOut(**RecordingLegOut.fields_of(leg)) for leg in legs or []]
        return cls(headline=headline, legs=leg_list, **cls.fields_of(rec))


async def _with_legs(pool: asyncpg.Pool, found: list[tuple[Recording, str | None]]) -> list[RecordingOut]:
    legs = await catalog.legs_of(pool, [rec.id for rec, _ in found if rec.leg == "mixed"])
    return [RecordingOut.of(rec, headline, legs.get(rec.id)) for rec, headline in found]


class RecordingList(BaseModel):
    recordings: list[RecordingOut]


class UrlQuery(BaseModel):
    download: bool = Field(False, description="a download (attachment) instead of in-page playback")


class UrlOut(BaseModel):
    url: str = Field(description="relative to this server; GET it without credentials until expires_at")
    mode: Literal["playback", "download"]
    expires_at: datetime


class AudioQuery(BaseModel):
    mode: Literal["playback", "download"]
    expires: int
    actor: str = Field(max_length=200)
    sig: str = Field(max_length=128)


class WavAudio(RootModel[bytes]):
    """The recording's audio, a WAV file (the body of GET …/audio: described, never a JSON value)."""


class HoldIn(BaseModel):
    hold: bool
    reason: str | None = Field(None, min_length=1, max_length=500, description="required to place a hold")

    @model_validator(mode="after")
    def reason_for_a_hold(self) -> HoldIn:
        if self.hold and not self.reason:
            raise ValueError("a legal hold needs a reason")
        return self


class AuditEntry(BaseModel):
    action: str
    actor: str = Field(description=audit.FORM_DESCRIPTION)
    detail: dict[str, Any]
    at: datetime


class AuditOut(BaseModel):
    recording_id: uuid.UUID
    entries: list[AuditEntry]


def forbidden(reason: str) -> ApiError:
    return ApiError(403, "forbidden", reason)


def _pool(request: web.Request) -> asyncpg.Pool:
    return request.app[POOL]


def _recorder(request: web.Request) -> CallRecorder:
    recorder = request.app.get(RECORDER)
    if recorder is None:
        raise ApiError(503, "unavailable", "recordings are off on this server (no HILO_RECORDING_KEYS)")
    return recorder


async def _visible(request: web.Request, recording_id: uuid.UUID) -> Recording:
    """The recording, if the one asking may use it: 404 if there is none, 403 (audited) if it is not theirs."""
    pool = _pool(request)
    rec = await catalog.get(pool, recording_id)
    if rec is None:
        raise not_found(f"no recording {recording_id}", "recording_id")
    who = principal(request)
    scope = await scope_of(pool, who)
    if not await in_scope(pool, scope, rec.id):
        await catalog.audit(pool, rec.id, "denied", audit.actor(who), {"request": f"{request.method} {request.path}"})
        raise forbidden(scope.refusal("this recording"))
    return rec


_NOT_YOURS = {
    403: "an agent asking for another agent's recording, a supervisor for one outside their teams",
    404: "no such recording",
}


@ROUTES.route(
    "GET",
    "/api/recordings",
    summary="Recordings, newest first (agents: their own calls'; supervisors: their teams'); `q` searches transcripts",
    tag="recordings",
    roles=EVERYONE,
    ok={200: RecordingList},
)
async def list_recordings(request: web.Request, query: RecordingQuery) -> RecordingList:
    """With `q`, only recordings whose transcript has those words (stemmed in the transcript's language)."""
    pool = _pool(request)
    scope: Scope = await scope_of(pool, principal(request))
    if query.q is not None:
        sql, args = search.build(
            search.SearchQuery(query.q, query.interaction_id, query.customer_id, scope, query.limit)
        )
        rows = await pool.fetch(sql, *args)
        return RecordingList(recordings=await _with_legs(pool, [(Recording.of(r), r["headline"]) for r in rows]))
    found = await catalog.listing(
        pool, scope, interaction_id=query.interaction_id, customer_id=query.customer_id, limit=query.limit
    )
    return RecordingList(recordings=await _with_legs(pool, [(r, None) for r in found]))


@ROUTES.route(
    "GET",
    "/api/recordings/{recording_id}",
    summary="A recording's metadata: state, paused spans, checksum, key, retention, hold",
    tag="recordings",
    roles=EVERYONE,
    ok={200: RecordingOut},
    errors=_NOT_YOURS,
)
async def get_recording(request: web.Request, path: RecordingPath) -> RecordingOut:
    """A mixed recording comes with its legs; a leg names its mixed recording (`mixed_id`)."""
    [out] = await _with_legs(_pool(request), [(await _visible(request, path.recording_id), None)])
    return out


async def _toggle(request: web.Request, recording_id: uuid.UUID, *, pause: bool) -> RecordingOut:
    await _visible(request, recording_id)
    recorder = _recorder(request)
    actor = audit.actor(principal(request))
    try:
        rec, _ = await (recorder.pause if pause else recorder.resume)(recording_id, actor)
    except NotLive as exc:
        raise conflict(str(exc), "recording_id") from exc
    [out] = await _with_legs(_pool(request), [(rec, None)])
    return out


_TOGGLE_ERRORS = {**_NOT_YOURS, 409: "the recording is not live (the call ended)", 503: "recordings are off"}


@ROUTES.route(
    "POST",
    "/api/recordings/{recording_id}/pause",
    summary="Pause a live recording (PCI) with the rest of its conversation's (legs): silence in each file",
    tag="recordings",
    roles=EVERYONE,
    ok={200: RecordingOut},
    errors=_TOGGLE_ERRORS,
)
async def pause_recording(request: web.Request, path: RecordingPath) -> RecordingOut:
    """Pausing a paused recording changes nothing (200, the same span). Keys pressed while paused are not
    logged or put on the timeline."""
    return await _toggle(request, path.recording_id, pause=True)


@ROUTES.route(
    "POST",
    "/api/recordings/{recording_id}/resume",
    summary="Resume a paused recording",
    tag="recordings",
    roles=EVERYONE,
    ok={200: RecordingOut},
    errors=_TOGGLE_ERRORS,
)
async def resume_recording(request: web.Request, path: RecordingPath) -> RecordingOut:
    return await _toggle(request, path.recording_id, pause=False)


def _usable(rec: Recording) -> None:
    if rec.deleted_at is not None:
        raise ApiError(410, "gone", f"the recording was deleted on {rec.deleted_at.isoformat()} (retention)")
    if rec.state != "stored" or rec.storage_key is None:
        raise conflict(f"the recording is {rec.state}, not stored", "recording_id")


@ROUTES.route(
    "POST",
    "/api/recordings/{recording_id}/url",
    summary="A short-lived signed URL to play (or download) the recording",
    tag="recordings",
    roles=EVERYONE,
    ok={201: UrlOut},
    errors={**_NOT_YOURS, 409: "not stored (yet)", 410: "deleted by retention", 503: "recordings are off"},
)
async def recording_url(request: web.Request, path: RecordingPath, query: UrlQuery) -> Reply:
    rec = await _visible(request, path.recording_id)
    _usable(rec)
    recorder = _recorder(request)
    ttl = request.app[SETTINGS].recording_url_ttl_s
    expires = int(time.time()) + ttl
    mode: Literal["playback", "download"] = "download" if query.download else "playback"
    actor = audit.actor(principal(request))
    url = UrlSigner(recorder.store.ring.url_keys()).url(rec.id, mode, expires, actor)
    await catalog.audit(_pool(request), rec.id, "url", actor, {"mode": mode, "expires": expires})
    return Reply(201, UrlOut(url=url, mode=mode, expires_at=datetime.fromtimestamp(expires, UTC)))


@ROUTES.route(
    "GET",
    "/api/recordings/{recording_id}/audio",
    summary="The recording as audio/wav, through a signed URL from POST …/url (no other credentials)",
    tag="recordings",
    roles=None,
    ok={200: WavAudio},
    media_type="audio/wav",
    errors={
        403: "the link is expired or altered, or whoever it was issued to may no longer use the recording",
        404: "no such recording",
        409: "not stored",
        410: "deleted by retention",
        500: "the file cannot be decrypted (its key is missing or the file is damaged)",
        503: "recordings are off",
    },
)
async def recording_audio(request: web.Request, path: RecordingPath, query: AudioQuery) -> web.StreamResponse:
    """Every request is written to the audit trail (playback or download, and who the link was issued to)
    before the first byte is sent. Whoever the link was issued to must still be allowed the recording."""
    recorder = _recorder(request)
    pool = _pool(request)
    signer = UrlSigner(recorder.store.ring.url_keys())
    problem = signer.check(path.recording_id, query.mode, query.expires, query.actor, query.sig, time.time())
    rec = await catalog.get(pool, path.recording_id)
    if problem is not None:
        if rec is not None:
            await catalog.audit(pool, rec.id, "denied", audit.UNVERIFIED, {"reason": problem, "mode": query.mode})
        raise forbidden(problem)
    if rec is None:
        raise not_found(f"no recording {path.recording_id}", "recording_id")
    issued_to = signed_actor(query.actor)  # a URL signed before the one actor form is read as 021 maps it
    audited = str(issued_to or audit.Actor("unknown", query.actor[:60], "api"))
    scope = await scope_of_actor(pool, query.actor)
    if not await in_scope(pool, scope, rec.id):
        refusal = scope.refusal("this recording")
        await catalog.audit(pool, rec.id, "denied", audited, {"reason": refusal, "mode": query.mode})
        raise forbidden(refusal)
    _usable(rec)
    assert rec.storage_key is not None
    segments = recorder.store.read(rec.storage_key, context=str(rec.id))
    try:
        first = await anext(segments)
    except (DecryptionError, FileNotFoundError, StopAsyncIteration) as exc:
        await segments.aclose()
        raise ApiError(500, "undecryptable", f"the recording cannot be read: {exc}") from exc
    detail = {"ip": request.remote, "user_agent": request.headers.get("User-Agent", "")[:200]}
    await catalog.audit(pool, rec.id, query.mode, audited, detail)
    disposition = "attachment" if query.mode == "download" else "inline"
    response = web.StreamResponse(
        headers={
            "Content-Type": "audio/wav",
            "Content-Disposition": f'{disposition}; filename="recording-{rec.id}.wav"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        }
    )
    if rec.size_bytes is not None:
        response.content_length = rec.size_bytes
    await response.prepare(request)
    try:
        await response.write(first)
        async for part in segments:
            await response.write(part)
    finally:
        await segments.aclose()
    await response.write_eof()
    return response


@ROUTES.route(
    "PUT",
    "/api/recordings/{recording_id}/hold",
    summary="Place or lift a legal hold (with the recording's legs): a held recording is never deleted by retention",
    tag="recordings",
    roles=ADMIN,
    ok={200: RecordingOut},
    errors={404: "no such recording", 410: "already deleted by retention"},
)
async def hold_recording(request: web.Request, path: RecordingPath, body: HoldIn) -> RecordingOut:
    actor = audit.actor(principal(request))
    async with _pool(request).acquire() as conn, conn.transaction():
        rec = await catalog.get(conn, path.recording_id, for_update=True)
        if rec is None:
            raise not_found(f"no recording {path.recording_id}", "recording_id")
        if rec.deleted_at is not None:
            raise ApiError(410, "gone", "the recording was already deleted by retention")
        reason = body.reason if body.hold else None
        # The conversation is held as one: its mixed recording and its legs.
        for each in await catalog.group(conn, rec, for_update=True):
            if each.deleted_at is None and (each.legal_hold, each.hold_reason) != (body.hold, reason):
                updated = await catalog.update(conn, each.id, legal_hold=body.hold, hold_reason=reason)
                await catalog.audit(conn, each.id, "hold" if body.hold else "release", actor, {"reason": body.reason})
                rec = updated if each.id == rec.id else rec
    [out] = await _with_legs(_pool(request), [(rec, None)])
    return out


class TranscriptOut(BaseModel):
    recording_id: uuid.UUID
    state: Literal["pending", "done", "failed", "deleted"] = Field(
        description="pending: queued or being made; failed: given up (error); deleted: with the recording"
    )
    attempts: int
    language: str | None
    engine: str | None
    text: str | None
    audio_s: float | None = Field(description="seconds of audio decoded (paused spans are never decoded)")
    error: str | None
    done_at: datetime | None


@ROUTES.route(
    "GET",
    "/api/recordings/{recording_id}/transcript",
    summary="What was said in the recording, as its speech engine heard it",
    tag="recordings",
    roles=EVERYONE,
    ok={200: TranscriptOut},
    errors={**_NOT_YOURS, 409: "no transcript queued (the recording is not stored, or is a caller/agent leg)"},
)
async def recording_transcript(request: web.Request, path: RecordingPath) -> TranscriptOut:
    rec = await _visible(request, path.recording_id)
    if rec.mixed_id is not None:
        raise conflict(f"legs are not transcribed: see the mixed recording {rec.mixed_id}", "recording_id")
    found = await transcripts.get(_pool(request), rec.id)
    if found is None:
        raise conflict(f"the recording is {rec.state}: nothing to transcribe yet", "recording_id")
    fields = {k: found[k] for k in ("state", "attempts", "language", "engine", "text", "audio_s", "error", "done_at")}
    return TranscriptOut(recording_id=rec.id, **fields)


@ROUTES.route(
    "GET",
    "/api/recordings/{recording_id}/audit",
    summary="Everything done with a recording: URLs issued, playbacks, downloads, refusals, pauses, holds",
    tag="recordings",
    roles=ADMIN,
    ok={200: AuditOut},
    errors={404: "no such recording"},
)
async def recording_audit(request: web.Request, path: RecordingPath) -> AuditOut:
    pool = _pool(request)
    if await catalog.get(pool, path.recording_id) is None:
        raise not_found(f"no recording {path.recording_id}", "recording_id")
    entries = await catalog.audit_trail(pool, path.recording_id)
    return AuditOut(recording_id=path.recording_id, entries=[AuditEntry(**e) for e in entries])
