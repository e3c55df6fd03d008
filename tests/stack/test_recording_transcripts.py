"""Transcripts and the flow's recording nodes over real calls: a caller's synthesized words, spoken into a
real bridged call, come back in the recording's transcript and find it through the API; a caller who
refuses consent is not recorded at all; a `record: pause` around a card-number `gather` leaves silence in
the file and the keys nowhere."""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import UTC, datetime

import pytest

from crm_bridge import identity
from recordings import catalog, transcripts
from server.simcall import SimCall
from speech.tts import voice_for
from tests.stack.calls import place
from tests.stack.conftest import NAMESPACE, Stack
from tests.stack.lines import apply_line
from tests.stack.recordings import stored_recording
from tests.stack.test_calls import KNOWN_CALLER
from tests.stack.test_recordings import SILENCE_MAX_RMS, call_support, levels
from tests.stack.test_screenpop import bearer, sign_in

SPOKEN = "I want a refund for my broken television"
CARD_DIGITS = "55501234"  # keyed while the flow's recording is paused: must appear nowhere
KEY = re.compile(r"digit\W{1,4}[0-9*#]", re.IGNORECASE)
SPEECH_MIN_RMS = 100  # synthesized prompts measure several hundred over a second or more


async def say_as_caller(stack: Stack, call: SimCall, text: str) -> None:
    """The caller speaks `text` (synthesized), into the call, and finishes saying it."""
    assert stack.services.calls is not None
    media = await stack.services.calls.prompts.render(text, voice_for("en", None), "en")
    playback_id = f"sim-say-{uuid.uuid4().hex[:8]}"
    await stack.observer.play(call.caller_leg, media, playback_id)
    await stack.ari_events.expect("PlaybackFinished", within=15, playback__id=playback_id)


async def call_flow(stack: Stack, number: str, flow_id: str, text: str) -> tuple[SimCall, str]:
    """A known caller rings `number`, answered by the flow `text` applied for it: the call and its
    interaction id."""
    await apply_line(stack, number, {flow_id: text})
    call, started = await place(stack, KNOWN_CALLER, number=number, in_app=True)
    return call, str(started["interaction_id"])


async def test_what_the_caller_said_is_transcribed_and_finds_the_recording(stack: Stack) -> None:
    assert stack.services.transcripts is not None, "the test stack transcribes (HILO_TRANSCRIPTS defaults on)"
    bob = await sign_in(stack, f"bob-{uuid.uuid4().hex[:6]}", "agent", "bob")
    alice = await sign_in(stack, f"alice-{uuid.uuid4().hex[:6]}", "agent", "alice")
    call, interaction = await call_support(stack)
    started = await stack.hilo_events.expect("recording.started", within=5, interaction_id=interaction)
    recording_id = started["data"]["recording_id"]
    await say_as_caller(stack, call, SPOKEN)
    await stack.observer.hangup(call.caller_leg)
    await stack.hilo_events.expect("recording.stored", within=20, interaction_id=interaction)

    done = await stack.hilo_events.expect(
        "recording.transcribed", within=30, interaction_id=interaction, data__recording_id=recording_id
    )
    text = done["data"]["text"]
    assert (done["data"]["language"], done["data"]["engine"]) == ("en", "pocketsphinx")
    assert "refund" in text.split(), text
    on_timeline = await stack.pool.fetchval(
        "SELECT data->>'text' FROM timeline_events WHERE interaction_id = $1 AND type = 'recording.transcribed'",
        uuid.UUID(interaction),
    )
    assert on_timeline == text

    # Found by a word said (and by another form of it: "refunds" is stemmed as "refund" is), by those who may.
    for query in ("refund", "refunds", '"want a refund"', "refund -fridge"):
        resp = await stack.client.get("/api/recordings", params={"q": query}, headers=bearer(bob))
        assert resp.status == 200, await resp.text()
        found = (await resp.json())["recordings"]
        assert [r["id"] for r in found] == [recording_id], query
    assert "«refund»" in found[0]["headline"]
    nothing = await stack.client.get("/api/recordings", params={"q": "refund fridge"}, headers=bearer(bob))
    assert (await nothing.json())["recordings"] == []
    others = await stack.client.get("/api/recordings", params={"q": "refund"}, headers=bearer(alice))
    assert (await others.json())["recordings"] == [], "agents find only their own calls"
    admin = await stack.client.get("/api/recordings", params={"q": "refund"}, headers=bearer(stack.token))
    assert [r["id"] for r in (await admin.json())["recordings"]] == [recording_id]
    resp = await stack.client.get(f"/api/recordings/{recording_id}/transcript", headers=bearer(bob))
    body = await resp.json()
    assert resp.status == 200 and body["state"] == "done" and body["text"] == text and body["attempts"] == 1
    assert (await stack.client.get(f"/api/recordings/{recording_id}/transcript", headers=bearer(alice))).status == 403
    too_long = await stack.client.get("/api/recordings", params={"q": "x" * 201}, headers=bearer(bob))
    assert too_long.status == 400 and "q" in await too_long.text()


async def _stored_recording(
    stack: Stack, *, with_file: bool, leased_for_s: float = 0, flow_language: str | None = "en"
) -> uuid.UUID:
    """A recording made stored now, as the recorder does (the trigger queues its transcript): with an
    encrypted file of a quiet second, or naming a file that is not there. With `leased_for_s`, its job is
    first left as a worker that died mid-way leaves it: tried once, still leased."""

    async def leased(rec: catalog.Recording) -> None:
        if leased_for_s:
            await stack.pool.execute(
                "INSERT INTO recording_transcripts (recording_id, attempts, leased_until)"
                " VALUES ($1, 1, now() + make_interval(secs => $2))",
                rec.id,
                leased_for_s,
            )

    context = {"flow_language": flow_language} if flow_language else {}
    if with_file:
        return (await stored_recording(stack, context=context, before_stored=leased)).id
    # A row stored without its file: no recorder leaves one (it stores the file first); a store that lost it.
    assert stack.services.timeline is not None
    found = await identity.identify_or_create(stack.pool, "phone", KNOWN_CALLER, "ES")
    interaction = await stack.services.timeline.start_interaction(
        found.customer_id, "voice", "inbound", context=context
    )
    rec = await catalog.create(
        stack.pool,
        kind="call",
        interaction_id=interaction.id,
        customer_id=found.customer_id,
        agent_id="bob",
        queue="support",
        asterisk_name=f"test-transcript-{uuid.uuid4()}",
        started_at=datetime.now(UTC),
        retention_days=30,
    )
    await leased(rec)
    await catalog.update(stack.pool, rec.id, state="stored", storage_key=f"test/{rec.id}.hrec", duration_s=1.0)
    return rec.id


async def test_a_job_left_by_a_dead_worker_is_taken_up_and_failures_are_retried_then_recorded(stack: Stack) -> None:
    worker = stack.services.transcripts
    assert worker is not None
    worker.policy = transcripts.RetryPolicy(max_attempts=2, backoff_s=0.2, lease_s=60)
    try:
        crashed = await _stored_recording(stack, with_file=True, leased_for_s=1.5)
        missing = await _stored_recording(stack, with_file=False)
        # Ana's own language is Spanish: without a flow's language, hers is used, and nothing here serves it.
        spanish = await _stored_recording(stack, with_file=True, flow_language=None)
        unserved = await stack.hilo_events.expect(
            "recording.transcription_failed", within=15, data__recording_id=str(spanish)
        )
        assert unserved["data"]["attempts"] == 1 and "'es'" in unserved["data"]["reason"]  # no retry can help
        failed = await stack.hilo_events.expect(
            "recording.transcription_failed", within=15, data__recording_id=str(missing)
        )
        assert failed["data"]["attempts"] == 2 and "FileNotFoundError" in failed["data"]["reason"]
        row = await transcripts.get(stack.pool, missing)
        assert row is not None and (row["state"], row["attempts"]) == ("failed", 2)
        # The dead worker's lease ran out: the job was taken up again (its second attempt) and finished.
        done = await stack.hilo_events.expect("recording.transcribed", within=15, data__recording_id=str(crashed))
        assert done["data"]["text"] == ""  # the file is a second of near silence: nothing to decode
        row = await transcripts.get(stack.pool, crashed)
        assert row is not None and (row["state"], row["attempts"]) == ("done", 2)
    finally:
        worker.policy = transcripts.RetryPolicy()


CONSENT_FLOW = """
flow: consent_ask
language: en
start: ask
nodes:
  ask:
    kind: consent
    prompt: This call may be recorded. Press 1 to agree, or 2 if you do not want to be recorded.
    next: start_recording
  start_recording:
    kind: record
    action: start
    next: to_support
  to_support:
    kind: queue
    queue: support
"""


async def test_a_caller_who_refuses_consent_is_not_recorded_even_by_a_recording_queue(stack: Stack) -> None:
    call, interaction = await call_flow(stack, "152", "consent_ask", CONSENT_FLOW)
    await stack.hilo_events.expect("ivr.flow_started", within=10, interaction_id=interaction)
    await stack.observer.send_dtmf(call.caller_leg, "2")
    consent = await stack.hilo_events.expect("recording.consent", within=15, interaction_id=interaction)
    assert consent["data"] == {"given": False, "via": "dtmf"}
    refused = await stack.hilo_events.expect("ivr.record", within=5, interaction_id=interaction, data__action="start")
    assert refused["data"]["result"] == "refused"
    await stack.hilo_events.expect("agent.answered", within=30, interaction_id=interaction, data__agent="bob")
    skipped = await stack.hilo_events.expect("recording.skipped", within=5, interaction_id=interaction, since=None)
    assert skipped["data"] == {"reason": "consent"}
    context = await stack.pool.fetchval("SELECT context FROM interactions WHERE id = $1", uuid.UUID(interaction))
    assert context["recording_consent"] is False
    await stack.observer.hangup(call.caller_leg)
    await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    assert await stack.pool.fetchval("SELECT count(*) FROM recordings") == 0
    store = stack.settings.recordings_dir / "store"
    assert not store.exists() or not [p for p in store.rglob("*") if p.is_file()]
    assert not [r for r in await stack.observer.request("GET", "/recordings/stored") if NAMESPACE in r["name"]]


LATE_CONSENT_FLOW = """
flow: consent_late
language: en
start: record
nodes:
  record:
    kind: record
    action: start
    next: ask
  ask:
    kind: consent
    prompt: This call is being recorded. Press 1 to agree, or 2 if you do not want to be recorded.
    next: bye
  bye:
    kind: hangup
    text: Goodbye.
"""


async def test_a_refusal_throws_away_the_flow_recording_already_running(stack: Stack) -> None:
    call, interaction = await call_flow(stack, "154", "consent_late", LATE_CONSENT_FLOW)
    recording = await stack.hilo_events.expect("recording.started", within=10, interaction_id=interaction)
    recording_id = recording["data"]["recording_id"]
    await stack.observer.send_dtmf(call.caller_leg, "2")
    deleted = await stack.hilo_events.expect("recording.deleted", within=15, interaction_id=interaction)
    assert deleted["data"] == {"recording_id": recording_id, "reason": "consent refused"}
    await stack.hilo_events.expect("interaction.ended", within=15, interaction_id=interaction)
    row = await stack.pool.fetchrow(
        "SELECT state, storage_key, asterisk_name, deleted_at FROM recordings WHERE id = $1", uuid.UUID(recording_id)
    )
    assert row is not None and row["state"] == "deleted" and row["storage_key"] is None and row["deleted_at"]
    assert await stack.observer.stored_recording(row["asterisk_name"]) is None, "Asterisk kept the audio"
    trail = await catalog.audit_trail(stack.pool, uuid.UUID(recording_id))
    assert [(e["action"], e["actor"]) for e in trail] == [("deleted", "system:flow@system")]


CARD_FLOW = """
flow: card_line
language: en
start: record
nodes:
  record:
    kind: record
    action: start
    next: welcome
  welcome:
    kind: say
    text: Welcome to the payment line. Please listen carefully to the following instructions.
    next: pause
  pause:
    kind: record
    action: pause
    next: card
  card:
    kind: gather
    prompt: Please key your card number now.
    min_digits: 8
    max_digits: 8
    into: card
    next: resume
    no_input: resume
  resume:
    kind: record
    action: resume
    next: thanks
  thanks:
    kind: say
    text: Thank you. Your payment is being processed, and a receipt will follow by mail.
    next: stop
  stop:
    kind: record
    action: stop
    next: bye
  bye:
    kind: hangup
"""


async def test_a_pause_around_a_gather_leaves_silence_and_the_keys_nowhere(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    mark = stack.hilo_events.mark()
    call, interaction = await call_flow(stack, "153", "card_line", CARD_FLOW)
    recording = await stack.hilo_events.expect("recording.started", within=10, interaction_id=interaction)
    recording_id = recording["data"]["recording_id"]
    await stack.hilo_events.expect(
        "ivr.record", within=20, interaction_id=interaction, data__action="pause", data__result="paused"
    )
    await stack.observer.send_dtmf(call.caller_leg, CARD_DIGITS, between_ms=80)
    typed = await stack.hilo_events.expect("ivr.input", within=20, interaction_id=interaction, data__node="card")
    assert typed["data"]["digits"] == "*" * len(CARD_DIGITS)
    await stack.hilo_events.expect(
        "ivr.record", within=10, interaction_id=interaction, data__action="resume", data__result="resumed"
    )
    await stack.hilo_events.expect("recording.stored", within=30, interaction_id=interaction)
    await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)

    resp = await stack.client.get(f"/api/recordings/{recording_id}", headers=bearer(stack.token))
    meta = await resp.json()
    [span] = meta["paused_spans"]
    assert meta["agent_id"] is None and span["end_s"] - span["start_s"] > 1.0  # the card prompt and the keys
    resp = await stack.client.post(f"/api/recordings/{recording_id}/url", headers=bearer(stack.token))
    audio = await (await stack.client.get((await resp.json())["url"])).read()
    assert levels(audio, 0.5, span["start_s"] - 0.2) > SPEECH_MIN_RMS  # the welcome, heard by the caller
    assert levels(audio, span["start_s"] + 0.1, span["end_s"] - 0.1) < SILENCE_MAX_RMS
    assert levels(audio, span["end_s"] + 0.2, meta["duration_s"] - 0.2) > SPEECH_MIN_RMS  # the thanks

    # The transcript is of what was recorded: nothing of the card prompt said during the pause.
    done = await stack.hilo_events.expect("recording.transcribed", within=30, interaction_id=interaction)
    assert "card" not in done["data"]["text"].split()

    # The keys are nowhere: timeline, events, the interaction, logs.
    timeline = await stack.pool.fetch(
        "SELECT type, data FROM timeline_events WHERE interaction_id = $1", uuid.UUID(interaction)
    )
    assert CARD_DIGITS not in json.dumps([dict(r) for r in timeline], default=str)
    assert CARD_DIGITS not in json.dumps(stack.hilo_events.events[mark:])
    context = await stack.pool.fetchval("SELECT context::text FROM interactions WHERE id = $1", uuid.UUID(interaction))
    assert CARD_DIGITS not in context and '"card": "********"' in context
    assert not [r.getMessage() for r in caplog.records if CARD_DIGITS in r.getMessage() or KEY.search(r.getMessage())]
