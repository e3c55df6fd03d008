"""The ends of a flow that do not queue, over real calls: voicemail recorded by Asterisk onto the timeline,
a callback booked durably, and a transfer handed to the dialplan with the interaction id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.simcall import SimCall
from tests.stack.calls import KNOWN_CALLER, place
from tests.stack.conftest import Stack
from tests.stack.lines import apply_line

NUMBER = "150"
OUTCOMES_FLOW = """
flow: outcomes
language: en
start: menu
nodes:
  menu:
    kind: menu
    prompt: For a voicemail press 1, a callback 2, a transfer 3.
    choices:
      "1": {label: Voicemail, next: message}
      "2": {label: Callback, next: call_me}
      "3": {label: Transfer, next: elsewhere}
    no_match: Sorry.
    no_input: Sorry.
    retries: 2
    timeout_s: 10
    fallback: bye
  message:
    kind: voicemail
    prompt: Please leave a message after the tone, then press hash.
  call_me:
    kind: callback
    prompt: We will call you back as soon as an agent is free.
  elsewhere:
    kind: transfer
    to: test-line
    prompt: Transferring you now.
  bye:
    kind: hangup
"""


@pytest.fixture
async def outcomes_line(stack: Stack) -> AsyncIterator[None]:
    """The outcomes flow live on NUMBER beside the working copy (conftest restores the working copy after)."""
    await apply_line(stack, NUMBER, {"outcomes": OUTCOMES_FLOW})
    yield


async def _call(stack: Stack, key: str) -> tuple[SimCall, str]:
    call, started = await place(stack, KNOWN_CALLER, number=NUMBER, menu_key=key)
    return call, str(started["interaction_id"])


async def _ended(stack: Stack, interaction: str) -> dict[str, Any]:
    ended = await stack.hilo_events.expect("interaction.ended", within=15, interaction_id=interaction)
    return dict(ended["data"])


async def test_voicemail_is_recorded_by_asterisk_and_lands_on_the_timeline(stack: Stack, outcomes_line: None) -> None:
    call, interaction = await _call(stack, "1")
    name = f"voicemail-{interaction}"
    await stack.ari_events.expect("RecordingStarted", within=20, recording__name=name)
    try:
        # The caller speaks (a sound played on their side), then presses # to end the message.
        await stack.observer.play(call.caller_leg, ",".join(["sound:hello-world"] * 3), "sim-playback-vm")
        await stack.ari_events.expect("PlaybackFinished", within=10, playback__id="sim-playback-vm")
        await stack.observer.send_dtmf(call.caller_leg, "#")
        finished = await stack.ari_events.expect("RecordingFinished", within=10, recording__name=name)
        recorded = await stack.hilo_events.expect("voicemail.recorded", within=10, interaction_id=interaction)
        assert recorded["data"]["recording"] == name
        assert recorded["data"]["duration_s"] == finished["recording"]["duration"]
        assert recorded["data"]["duration_s"] >= 1
        assert await _ended(stack, interaction) == {"outcome": "voicemail", "hangup_by": "system"}
        # The message moved from Asterisk's spool into the encrypted recording store (recordings/).
        row = await stack.pool.fetchrow(
            "SELECT kind, state, asterisk_name FROM recordings WHERE id = $1::uuid", recorded["data"]["recording_id"]
        )
        assert row is not None and dict(row) == {"kind": "voicemail", "state": "stored", "asterisk_name": name}
        assert await stack.observer.stored_recording(name) is None
    finally:
        await stack.observer.delete_stored_recording(name)


async def test_callback_is_booked_durably_before_the_call_ends(stack: Stack, outcomes_line: None) -> None:
    _, interaction = await _call(stack, "2")
    requested = await stack.hilo_events.expect("callback.requested", within=15, interaction_id=interaction)
    row = await stack.pool.fetchrow("SELECT * FROM callbacks WHERE interaction_id = $1::uuid", interaction)
    assert row is not None
    assert (row["number"], row["state"], row["id"]) == ("+34911222333", "pending", requested["data"]["callback_id"])
    assert await _ended(stack, interaction) == {"outcome": "callback-requested", "hangup_by": "system"}


async def test_transfer_hands_the_call_to_the_dialplan_with_its_interaction(stack: Stack, outcomes_line: None) -> None:
    call, interaction = await _call(stack, "3")
    await stack.hilo_events.expect("ivr.transfer", within=15, interaction_id=interaction, data__to="test-line")
    await stack.ari_events.expect(
        "ChannelVarset", within=10, channel__id=call.ivr_leg, variable="HILO_INTERACTION", value=interaction
    )
    await stack.ari_events.expect(
        "ChannelDialplan",
        within=10,
        channel__id=call.ivr_leg,
        channel__dialplan__context="hilo-transfer",
        dialplan_app="Playback",
    )
    assert await _ended(stack, interaction) == {"outcome": "transferred", "hangup_by": "system"}
    await stack.ari_events.expect("ChannelDestroyed", within=10, channel__id=call.ivr_leg)
