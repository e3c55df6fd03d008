"""Call recordings over real calls: the caller-agent conversation recorded by Asterisk from the bridge, a PCI
pause that leaves silence and no trace of the keys pressed, the file encrypted at rest, playback through
signed URLs for those allowed (audited), 403 for others; consent; retention with legal hold."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import logging
import re
import time
import uuid
import wave
from pathlib import Path
from typing import Any

import pytest

from recordings import catalog
from recordings.access import UrlSigner
from recordings.audio import rms
from recordings.calls import CallRecorder
from recordings.cli import run_recordings_command
from server.simcall import SimCall
from tests.stack.calls import place
from tests.stack.conftest import Stack
from tests.stack.lines import apply_line
from tests.stack.recordings import stored_recording
from tests.stack.test_calls import KNOWN_CALLER
from tests.stack.test_screenpop import bearer, sign_in

CARD_DIGITS = "49271836"  # keyed while the recording is paused: must appear nowhere
KEY = re.compile(r"digit\W{1,4}[0-9*#]", re.IGNORECASE)  # Digit='4', "digit": "4", digit=4 ...
TONE_MIN_RMS = 500  # the 440 Hz tone the caller "speaks" measures about 2500
SILENCE_MAX_RMS = 5


def recorder(stack: Stack) -> CallRecorder:
    assert stack.services.recordings is not None, "the test stack runs with HILO_RECORDING_KEYS (stack/up.sh)"
    return stack.services.recordings


async def talk(seconds: float) -> None:
    # The call goes on for this long so there is audio of a known length; nothing is being waited for.
    await asyncio.sleep(seconds)


async def call_support(stack: Stack, number: str = "100", menu_key: str | None = "2") -> tuple[SimCall, str]:
    """A call from Ana García that reaches bob (support); the caller's phone stays under the test's control."""
    call, started = await place(stack, KNOWN_CALLER, number=number, in_app=True, menu_key=menu_key)
    interaction = str(started["interaction_id"])
    await stack.hilo_events.expect("agent.answered", within=30, interaction_id=interaction, data__agent="bob")
    return call, interaction


async def tone(stack: Stack, call: SimCall, playback_id: str) -> None:
    """The caller speaks: a continuous tone from their phone, into the bridge."""
    await stack.observer.play(call.caller_leg, "tone:440", playback_id)
    await stack.ari_events.expect("PlaybackStarted", within=5, playback__id=playback_id)


async def quiet(stack: Stack, playback_id: str) -> None:
    await stack.observer.stop_playback(playback_id)
    await stack.ari_events.expect("PlaybackFinished", within=5, playback__id=playback_id)


def levels(wav_bytes: bytes, start_s: float, end_s: float) -> float:
    with wave.open(io.BytesIO(wav_bytes)) as w:
        rate = w.getframerate()
        w.setpos(int(start_s * rate))
        return rms(w.readframes(int((end_s - start_s) * rate)))


def asterisk_log(stack: Stack) -> Path:
    assert stack.settings.asterisk_root is not None
    return stack.settings.asterisk_root / "var" / "log" / "asterisk" / "messages"


async def test_a_bridged_call_is_recorded_paused_for_pci_and_stored_encrypted(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bob = await sign_in(stack, f"bob-{uuid.uuid4().hex[:6]}", "agent", "bob")
    alice = await sign_in(stack, f"alice-{uuid.uuid4().hex[:6]}", "agent", "alice")
    call, interaction = await call_support(stack)
    started = await stack.hilo_events.expect("recording.started", within=5, interaction_id=interaction)
    recording_id = started["data"]["recording_id"]
    rec = await catalog.get(stack.pool, uuid.UUID(recording_id))
    assert rec is not None and (rec.state, rec.kind, rec.agent_id, rec.queue) == ("recording", "call", "bob", "support")
    await stack.ari_events.expect("RecordingStarted", within=5, recording__name=rec.asterisk_name)
    began = time.monotonic()

    await tone(stack, call, f"sim-tone-{interaction}-1")
    await talk(2.0)

    # PCI: bob pauses his own call's recording; the caller keys a card number meanwhile.
    resp = await stack.client.post(f"/api/recordings/{recording_id}/pause", headers=bearer(alice))
    assert resp.status == 403, "another agent may not pause bob's call"
    resp = await stack.client.post(f"/api/recordings/{recording_id}/pause", headers=bearer(bob))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["paused"] is True
    paused_at = time.monotonic()
    after_pause = stack.hilo_events.mark()
    log_size = asterisk_log(stack).stat().st_size
    again = await stack.client.post(f"/api/recordings/{recording_id}/pause", headers=bearer(bob))
    assert again.status == 200 and len((await again.json())["paused_spans"]) == 1, "a second pause has no effect"
    await talk(0.5)  # the tone goes on while paused: it must not reach the file
    await quiet(stack, f"sim-tone-{interaction}-1")  # Asterisk sends the caller's keys once the tone stops
    await stack.observer.send_dtmf(call.caller_leg, CARD_DIGITS, between_ms=80)
    await stack.ari_events.expect(
        "ChannelDtmfReceived", within=10, channel__id=call.ivr_leg, digit=CARD_DIGITS[-1]
    )  # the keys really went through Asterisk, towards the agent
    await tone(stack, call, f"sim-tone-{interaction}-2")
    await talk(max(3.0 - (time.monotonic() - paused_at), 0.5))
    resp = await stack.client.post(f"/api/recordings/{recording_id}/resume", headers=bearer(bob))
    assert resp.status == 200, await resp.text()
    paused_for = time.monotonic() - paused_at
    await stack.hilo_events.expect("recording.resumed", within=5, interaction_id=interaction)
    await talk(2.0)
    await stack.observer.hangup(call.caller_leg)
    talked_for = time.monotonic() - began

    stored = await stack.hilo_events.expect("recording.stored", within=20, interaction_id=interaction)
    await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    assert stored["data"]["paused_spans"] == 1

    # Metadata: one paused span of the paused length; the file is as long as the call, pause included.
    resp = await stack.client.get(f"/api/recordings/{recording_id}", headers=bearer(bob))
    assert resp.status == 200
    meta = await resp.json()
    assert meta["state"] == "stored" and meta["key_id"] == recorder(stack).store.ring.current
    [span] = meta["paused_spans"]
    assert abs((span["end_s"] - span["start_s"]) - paused_for) < 0.5, (span, paused_for)
    assert abs(meta["duration_s"] - talked_for) < 1.0, (meta["duration_s"], talked_for)

    # Playback through a signed URL, by the agent of the call.
    resp = await stack.client.post(f"/api/recordings/{recording_id}/url", headers=bearer(bob))
    assert resp.status == 201, await resp.text()
    url = (await resp.json())["url"]
    audio = await stack.client.get(url)  # no credentials: the URL is the credential
    assert audio.status == 200 and audio.headers["Content-Type"] == "audio/wav"
    body = await audio.read()
    assert hashlib.sha256(body).hexdigest() == meta["sha256"]
    with wave.open(io.BytesIO(body)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1)
        assert abs(w.getnframes() / w.getframerate() - meta["duration_s"]) < 0.01
    # Tone before and after the pause, digital silence in the paused span (Asterisk left it out; the
    # silence was put back from the metadata).
    assert levels(body, 0.8, span["start_s"] - 0.3) > TONE_MIN_RMS
    assert levels(body, span["start_s"] + 0.2, span["end_s"] - 0.2) < SILENCE_MAX_RMS
    assert levels(body, span["end_s"] + 0.5, meta["duration_s"] - 0.5) > TONE_MIN_RMS

    # At rest the file is ciphertext: not a WAV, none of the audio in it.
    row = await stack.pool.fetchrow("SELECT storage_key, asterisk_name FROM recordings WHERE id = $1", rec.id)
    assert row is not None
    at_rest = (stack.settings.recordings_dir / "store" / row["storage_key"]).read_bytes()
    assert not at_rest.startswith(b"RIFF") and body[44:4044] not in at_rest
    with pytest.raises((wave.Error, EOFError)):
        wave.open(io.BytesIO(at_rest))
    assert await stack.observer.stored_recording(row["asterisk_name"]) is None, "plaintext left in Asterisk's spool"
    assert not any((stack.settings.recordings_dir / "incoming").iterdir())

    # The card digits are nowhere: not on the timeline, not in Hilo's events or logs, not in Asterisk's log.
    timeline = await stack.pool.fetch(
        "SELECT type, data FROM timeline_events WHERE interaction_id = $1", rec.interaction_id
    )
    assert CARD_DIGITS not in json.dumps([dict(r) for r in timeline], default=str)
    assert not [r["type"] for r in timeline if r["type"].startswith("ivr.input") and r["data"].get("digit") != "2"]
    events_since = stack.hilo_events.events[after_pause:]
    assert CARD_DIGITS not in json.dumps(events_since) and not any("digit" in e.get("data", {}) for e in events_since)
    context = await stack.pool.fetchval("SELECT context::text FROM interactions WHERE id = $1", rec.interaction_id)
    assert CARD_DIGITS not in context
    # (at DEBUG: even the AMI client's dump of every event it receives; no event names a key any more)
    assert not [r.getMessage() for r in caplog.records if CARD_DIGITS in r.getMessage() or KEY.search(r.getMessage())]
    with asterisk_log(stack).open("rb") as log:
        log.seek(log_size)
        assert b"DTMF" not in log.read()

    # Others: another agent gets 403; a changed or expired link gets 403; all of it audited.
    assert (await stack.client.get(f"/api/recordings/{recording_id}", headers=bearer(alice))).status == 403
    assert (await stack.client.post(f"/api/recordings/{recording_id}/url", headers=bearer(alice))).status == 403
    listed = await (await stack.client.get("/api/recordings", headers=bearer(alice))).json()
    assert listed["recordings"] == []
    assert (await stack.client.get(url.replace("actor=user%3A", "actor=token%3A"))).status == 403
    signer = UrlSigner(recorder(stack).store.ring.url_keys())
    expired = signer.url(rec.id, "download", int(time.time()) - 1, "user:bob@api")
    assert (await stack.client.get(expired)).status == 403
    resp = await stack.client.get(f"/api/recordings/{recording_id}/audit", headers=bearer(stack.token))
    trail = [(e["action"], e["actor"]) for e in (await resp.json())["entries"]]
    bob_actor = next(actor for action, actor in trail if action == "pause")
    assert bob_actor.startswith("user:bob-") and bob_actor.endswith("@api")
    assert ("url", bob_actor) in trail and ("playback", bob_actor) in trail and ("resume", bob_actor) in trail
    denied = [actor for action, actor in trail if action == "denied"]
    assert (
        len(denied) == 5 and denied.count("unknown:unverified@api") == 2
    )  # alice thrice; the changed and the expired link
    assert (await stack.client.get(f"/api/recordings/{recording_id}/audit", headers=bearer(bob))).status == 403


CONSENT_FLOW = """
flow: consent
language: en
start: ask
nodes:
  ask:
    kind: set
    variables: {record_consent: false}
    next: to_support
  to_support:
    kind: queue
    queue: support
"""


async def test_a_caller_who_declines_is_not_recorded(stack: Stack) -> None:
    await apply_line(stack, "151", {"consent": CONSENT_FLOW})
    call, interaction = await call_support(stack, "151", menu_key=None)
    skipped = await stack.hilo_events.expect("recording.skipped", within=5, interaction_id=interaction)
    assert skipped["data"] == {"reason": "consent"}
    await stack.observer.hangup(call.caller_leg)
    await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    assert await stack.pool.fetchval("SELECT count(*) FROM recordings") == 0


async def _old_recording(stack: Stack, days_ago: int, retention_days: int) -> catalog.Recording:
    """A stored recording made `days_ago` days ago (its file encrypted in the store like any other)."""
    return await stored_recording(stack, days_ago=days_ago, retention_days=retention_days)


async def test_retention_deletes_expired_recordings_but_not_held_ones(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    expired = await _old_recording(stack, days_ago=40, retention_days=30)
    held = await _old_recording(stack, days_ago=40, retention_days=30)
    young = await _old_recording(stack, days_ago=2, retention_days=30)
    store = stack.settings.recordings_dir / "store"
    resp = await stack.client.put(
        f"/api/recordings/{held.id}/hold", json={"hold": True, "reason": "case 2026-118"}, headers=bearer(stack.token)
    )
    assert resp.status == 200 and (await resp.json())["legal_hold"] is True
    bad = await stack.client.put(f"/api/recordings/{held.id}/hold", json={"hold": True}, headers=bearer(stack.token))
    assert bad.status == 400 and "reason" in (await bad.json())["reason"]

    assert await run_recordings_command(argparse.Namespace(dry_run=True), stack.settings) == 0
    assert f"would delete {expired.id}" in capsys.readouterr().out
    assert all((store / r.storage_key).exists() for r in (expired, held, young) if r.storage_key)

    mark = stack.hilo_events.mark()
    assert await run_recordings_command(argparse.Namespace(dry_run=False), stack.settings) == 0
    assert "deleted 1 recording(s); 1 past their retention kept by a legal hold" in capsys.readouterr().out
    deleted = await stack.hilo_events.expect(
        "recording.deleted", within=5, since=mark, data__recording_id=str(expired.id)
    )
    assert deleted["data"]["reason"] == "retention"
    assert expired.storage_key and not (store / expired.storage_key).exists()
    assert held.storage_key and (store / held.storage_key).exists()
    assert young.storage_key and (store / young.storage_key).exists()
    rows = {r["id"]: r for r in await stack.pool.fetch("SELECT id, state, deleted_at FROM recordings")}
    assert rows[expired.id]["state"] == "deleted" and rows[expired.id]["deleted_at"] is not None
    assert rows[held.id]["state"] == rows[young.id]["state"] == "stored"
    audit: list[dict[str, Any]] = await catalog.audit_trail(stack.pool, expired.id)
    assert [(e["action"], e["actor"]) for e in audit] == [("deleted", "system:retention@cli")]  # the command
    resp = await stack.client.post(f"/api/recordings/{expired.id}/url", headers=bearer(stack.token))
    assert resp.status == 410
