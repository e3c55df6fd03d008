"""Per-leg recordings over a real call: a queue that records legs gives three recordings of one conversation
(mixed, caller, agent), each measured on its decrypted audio: the caller talks at 400 Hz (a tone from their
phone), the agent at 1000 Hz (RTP from the agent's phone), each leg holds its own side's tone and not the
other's, the mixed one both; one PCI pause is silence in all three; legs are listed with their mixed
recording, share its access rule, and no snoop channel is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
import wave
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from dialplans.models import QueueRecording
from recordings.calls import CallRecorder
from tests.stack.audio import talk_into, tone_amplitude
from tests.stack.calls import place
from tests.stack.conftest import Stack
from tests.stack.test_screenpop import bearer, sign_in

KNOWN_CALLER = "+34911222333"
CALLER_HZ, AGENT_HZ = 400, 1000
HEARD = 500.0  # amplitude above which a tone is there (each side sends about 3,500-4,000)
NOT_HEARD = 5.0  # below which it is not there at all (silence measures under 1)
LEGS = ("mixed", "caller", "agent")


@contextlib.contextmanager
def support_records_legs(recorder: CallRecorder) -> Iterator[None]:
    """The support queue as if routing.yaml said `recording: {record: true, legs: true}` (the demo's does not)."""
    before = recorder.policy.queues["support"]
    recorder.policy.queues["support"] = QueueRecording(record=True, legs=True)
    try:
        yield
    finally:
        recorder.policy.queues["support"] = before


async def talk(seconds: float) -> None:
    # Both sides keep talking for this long so each part of the files has audio of a known length.
    await asyncio.sleep(seconds)


def amplitudes(wav_bytes: bytes, start_s: float, end_s: float) -> dict[int, float]:
    with wave.open(io.BytesIO(wav_bytes)) as w:
        rate = w.getframerate()
        w.setpos(int(start_s * rate))
        frames = w.readframes(int((end_s - start_s) * rate))
    samples = [int.from_bytes(frames[i : i + 2], "little", signed=True) for i in range(0, len(frames), 2)]
    return {hz: tone_amplitude(samples, hz) for hz in (CALLER_HZ, AGENT_HZ)}


async def audio_of(stack: Stack, token: str, recording_id: str) -> bytes:
    resp = await stack.client.post(f"/api/recordings/{recording_id}/url", headers=bearer(token))
    assert resp.status == 201, await resp.text()
    audio = await stack.client.get((await resp.json())["url"])
    assert audio.status == 200 and audio.headers["Content-Type"] == "audio/wav"
    return await audio.read()


async def test_a_queue_with_legs_records_each_side_apart_and_pauses_them_together(stack: Stack) -> None:
    recorder = stack.services.recordings
    assert recorder is not None and stack.services.calls is not None
    bob = await sign_in(stack, f"bob-{uuid.uuid4().hex[:6]}", "agent", "bob")
    alice = await sign_in(stack, f"alice-{uuid.uuid4().hex[:6]}", "agent", "alice")
    with support_records_legs(recorder):
        call, started = await place(stack, KNOWN_CALLER, "2", tone=str(CALLER_HZ))
        interaction = started["interaction_id"]
        await stack.hilo_events.expect("agent.answered", within=30, interaction_id=interaction, data__agent="bob")
        mixed_started = await stack.hilo_events.expect(
            "recording.started", within=5, interaction_id=interaction, data__kind="call"
        )
        mixed_id = mixed_started["data"]["recording_id"]
        ids = {"mixed": mixed_id}
        for leg in ("caller", "agent"):
            leg_started = await stack.hilo_events.expect(
                "recording.started", within=5, interaction_id=interaction, data__leg=leg, data__mixed_id=mixed_id
            )
            ids[leg] = leg_started["data"]["recording_id"]
        snoops = [c["id"] for c in await stack.observer.request("GET", "/channels") if "-legsnoop-" in c["id"]]
        assert len(snoops) == 2, snoops  # one snoop (spy=in) per side
        agent_leg = stack.services.calls.live.get(interaction).agent.id
        agent_talks = await talk_into(stack.observer, agent_leg, AGENT_HZ)
        try:
            await talk(2.5)
            # One PCI pause, asked on the mixed recording, holds for the legs as well.
            resp = await stack.client.post(f"/api/recordings/{mixed_id}/pause", headers=bearer(bob))
            assert resp.status == 200, await resp.text()
            paused = await resp.json()
            assert paused["paused"] and {leg["leg"]: leg["paused"] for leg in paused["legs"]} == {
                "caller": True,
                "agent": True,
            }
            for leg in LEGS:
                await stack.hilo_events.expect(
                    "recording.paused", within=5, interaction_id=interaction, data__recording_id=ids[leg]
                )
            await talk(2.0)  # both sides go on talking: none of it may reach any of the three files
            # Resumed from a leg: the whole conversation resumes.
            resp = await stack.client.post(f"/api/recordings/{ids['agent']}/resume", headers=bearer(bob))
            assert resp.status == 200, await resp.text()
            for leg in LEGS:
                await stack.hilo_events.expect(
                    "recording.resumed", within=5, interaction_id=interaction, data__recording_id=ids[leg]
                )
            await talk(2.5)
        finally:
            agent_talks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await agent_talks
        await stack.observer.hangup(call.caller_leg)
        for leg in LEGS:
            await stack.hilo_events.expect(
                "recording.stored", within=20, interaction_id=interaction, data__recording_id=ids[leg]
            )
        await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    for snoop in snoops:
        await stack.ari_events.expect("ChannelDestroyed", within=5, since=0, channel__id=snoop)

    # Listed as one conversation: the mixed recording with its two legs, same agent, queue and retention.
    resp = await stack.client.get("/api/recordings", params={"interaction_id": interaction}, headers=bearer(bob))
    [listed] = (await resp.json())["recordings"]
    assert (listed["id"], listed["leg"], listed["mixed_id"]) == (mixed_id, "mixed", None)
    legs = {leg["leg"]: leg for leg in listed["legs"]}
    assert {leg: legs[leg]["id"] for leg in legs} == {"caller": ids["caller"], "agent": ids["agent"]}
    for leg in legs.values():
        assert leg["mixed_id"] == mixed_id and leg["state"] == "stored"
        assert (leg["agent_id"], leg["queue"], leg["retention_days"]) == ("bob", "support", listed["retention_days"])
    resp = await stack.client.get(f"/api/recordings/{ids['caller']}", headers=bearer(bob))
    assert (await resp.json())["mixed_id"] == mixed_id
    # The same access rule: another agent may not use bob's legs.
    assert (await stack.client.post(f"/api/recordings/{ids['agent']}/url", headers=bearer(alice))).status == 403

    # Each file, decrypted: its own side's tone, never the other's; the mixed one both; the pause silent in all.
    metas: dict[str, dict[str, Any]] = {"mixed": listed, **legs}
    for leg in LEGS:
        meta = metas[leg]
        body = await audio_of(stack, bob, ids[leg])
        assert len(read_wav_bytes(body)) / 8000 == pytest.approx(meta["duration_s"], abs=0.01)
        [span] = meta["paused_spans"]
        assert span["end_s"] - span["start_s"] == pytest.approx(2.0, abs=0.6), (leg, span)
        before = amplitudes(body, 0.8, span["start_s"] - 0.3)
        during = amplitudes(body, span["start_s"] + 0.2, span["end_s"] - 0.2)
        after = amplitudes(body, span["end_s"] + 0.5, meta["duration_s"] - 0.5)
        assert max(during.values()) < NOT_HEARD, (leg, "paused", during)
        for heard in (before, after):
            if leg in ("mixed", "caller"):
                assert heard[CALLER_HZ] > HEARD, (leg, heard)
            else:
                assert heard[CALLER_HZ] < NOT_HEARD, (leg, "the agent's leg must not hold the caller", heard)
            if leg in ("mixed", "agent"):
                assert heard[AGENT_HZ] > HEARD, (leg, heard)
            else:
                assert heard[AGENT_HZ] < NOT_HEARD, (leg, "the caller's leg must not hold the agent", heard)
    # The pause began and ended at the same moment of the call in each file (each counts from its own start).
    for edge in ("start_s", "end_s"):
        moments = [
            datetime.fromisoformat(metas[leg]["started_at"]) + timedelta(seconds=metas[leg]["paused_spans"][0][edge])
            for leg in LEGS
        ]
        assert max(moments) - min(moments) < timedelta(seconds=0.3), (edge, moments)

    # Only the mixed recording is transcribed (it holds both speakers); a leg's transcript names it.
    queued = await stack.pool.fetch("SELECT recording_id::text FROM recording_transcripts")
    assert [r["recording_id"] for r in queued] == [mixed_id]
    resp = await stack.client.get(f"/api/recordings/{ids['caller']}/transcript", headers=bearer(bob))
    assert resp.status == 409 and mixed_id in (await resp.json())["reason"]

    # A legal hold holds the whole conversation.
    resp = await stack.client.put(
        f"/api/recordings/{mixed_id}/hold", json={"hold": True, "reason": "case 19"}, headers=bearer(stack.token)
    )
    assert resp.status == 200 and all(leg["legal_hold"] for leg in (await resp.json())["legs"])


def read_wav_bytes(body: bytes) -> list[int]:
    with wave.open(io.BytesIO(body)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        frames = w.readframes(w.getnframes())
    return [int.from_bytes(frames[i : i + 2], "little", signed=True) for i in range(0, len(frames), 2)]
