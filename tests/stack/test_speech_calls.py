"""Speech over real calls: the caller's side of a Local channel plays synthesized speech (espeak-ng, rendered
by Hilo's own TTS into Asterisk's sounds), Hilo hears it live through externalMedia RTP and routes by it;
speaking stops a long prompt; gibberish and silence lead to the reprompt and then to keys only."""

from __future__ import annotations

import time
import wave
from typing import Any

import pytest

from server.simcall import SimCall
from speech.tts import PromptCache, prompt_key, voice_for
from tests.stack.calls import hang_up, place
from tests.stack.conftest import NAMESPACE, Stack
from tests.stack.lines import apply_line

NUMBER = "171"
CALLER = "+34911222333"
PROMPT = "Say sales, billing, or technical support. Or press 1, 2 or 3."
LONG_PROMPT = (
    "Welcome to the Hilo speech line. This greeting is long on purpose, so that a caller who knows what they "
    "want can interrupt it at any moment. You can say sales, billing, or technical support, or press one, two "
    "or three on your keypad."
)
SPEECH_FLOW = """
flow: speech_menu
language: en
start: main
nodes:
  main:
    kind: menu
    prompt: "{prompt}"
    choices:
      "1": {{label: Sales, next: to_sales}}
      "2": {{label: Billing, next: to_billing}}
      "3": {{label: Support, say: [technical support, support], next: to_support}}
    speech:
      min_confidence: 0.5
      dtmf_prompt: Please use your keypad. Press 1 for sales, 2 for billing, 3 for technical support.
    no_match: Sorry, I did not catch that.
    no_input: Sorry, I did not hear you.
    retries: 3
    timeout_s: 4
    fallback: bye
  to_sales: {{kind: queue, queue: sales}}
  to_billing: {{kind: hangup, text: Billing is closed today.}}
  to_support: {{kind: queue, queue: support}}
  bye: {{kind: hangup, text: Goodbye.}}
"""


async def _use_speech_line(stack: Stack, prompt: str) -> None:
    await apply_line(stack, NUMBER, {"speech_menu": SPEECH_FLOW.format(prompt=prompt)})


async def _utterance(stack: Stack, text: str) -> str:
    """What the caller says, as Asterisk media: spoken by Hilo's TTS into its sounds folder."""
    cache = PromptCache(stack.settings.tts_cache_dir, stack.settings.sounds_dir)
    try:
        return await cache.render(text, voice_for("en", None), "en", keep=True)
    finally:
        cache.close()


def _seconds(stack: Stack, text: str) -> float:
    path = stack.settings.sounds_dir / f"{prompt_key(text, voice_for('en', None), 'en')}.wav"
    with wave.open(str(path)) as wav:
        return float(wav.getnframes()) / float(wav.getframerate())


async def _call(stack: Stack) -> tuple[SimCall, str]:
    call, started = await place(stack, CALLER, number=NUMBER, in_app=True)
    return call, started["interaction_id"]


async def _prompt_started(stack: Stack, call: SimCall, since: int) -> dict[str, Any]:
    return await stack.ari_events.expect(
        "PlaybackStarted", within=10, since=since, playback__target_uri=f"channel:{call.ivr_leg}"
    )


async def _say(stack: Stack, call: SimCall, media: str) -> None:
    await stack.observer.play(call.caller_leg, media, f"sim-say-{time.monotonic_ns()}")


@pytest.fixture
async def speech_line(stack: Stack) -> dict[str, str]:
    await _use_speech_line(stack, PROMPT)
    return {text: await _utterance(stack, text) for text in ("technical support", "sales", "zubba wokka fleem gorp")}


async def test_saying_technical_support_routes_the_call_to_support(stack: Stack, speech_line: dict[str, str]) -> None:
    ari_mark = stack.ari_events.mark()
    call, i = await _call(stack)
    await stack.hilo_events.expect("ivr.menu", within=10, interaction_id=i, data__attempt=1, data__speech=True)
    await _prompt_started(stack, call, ari_mark)
    await _say(stack, call, speech_line["technical support"])
    heard = await stack.hilo_events.expect("ivr.input", within=15, interaction_id=i)
    assert heard["data"]["via"] == "speech", heard
    assert (heard["data"]["digit"], heard["data"]["valid"], heard["data"]["heard"]) == ("3", True, "technical support")
    assert heard["data"]["confidence"] >= 0.5
    await stack.hilo_events.expect_in_order(
        [
            ("ivr.outcome", {"interaction_id": i, "data__action": "queue", "data__target": "support"}),
            ("routing.queued", {"interaction_id": i, "data__queue": "support"}),
        ],
        within=10,
    )
    # Hilo's listening channels (snoop + externalMedia) are gone once the menu is answered.
    await stack.ari_events.expect(
        "ChannelDestroyed", within=5, since=ari_mark, channel__id=lambda c: c.startswith(f"{NAMESPACE}-speech-media-")
    )
    await hang_up(stack, call, i)


async def test_speaking_stops_a_long_prompt(stack: Stack) -> None:
    await _use_speech_line(stack, LONG_PROMPT)
    sales = await _utterance(stack, "sales")
    ari_mark = stack.ari_events.mark()
    call, i = await _call(stack)
    started = await _prompt_started(stack, call, ari_mark)
    prompt_s = _seconds(stack, LONG_PROMPT)
    t0 = time.monotonic()
    await _say(stack, call, sales)
    finished = await stack.ari_events.expect(
        "PlaybackFinished", within=prompt_s, since=ari_mark, playback__id=started["playback"]["id"]
    )
    stopped_after = time.monotonic() - t0
    assert prompt_s > 10 and stopped_after < 3.0, (prompt_s, stopped_after, finished["playback"])
    heard = await stack.hilo_events.expect("ivr.input", within=15, interaction_id=i)
    assert (heard["data"]["via"], heard["data"]["digit"], heard["data"]["valid"]) == ("speech", "1", True), heard
    await stack.hilo_events.expect("routing.queued", within=10, interaction_id=i, data__queue="sales")
    await hang_up(stack, call, i)


async def test_gibberish_then_silence_lead_to_the_reprompt_then_keys_only(
    stack: Stack, speech_line: dict[str, str]
) -> None:
    ari_mark = stack.ari_events.mark()
    call, i = await _call(stack)
    await _prompt_started(stack, call, ari_mark)
    await _say(stack, call, speech_line["zubba wokka fleem gorp"])
    nothing = await stack.hilo_events.expect("ivr.input", within=15, interaction_id=i, data__attempt=1)
    assert (nothing["data"]["via"], nothing["data"]["valid"]) == ("speech", False), nothing
    # The reprompt listens again; the caller says nothing.
    await stack.hilo_events.expect("ivr.menu", within=10, interaction_id=i, data__attempt=2, data__speech=True)
    await stack.hilo_events.expect("ivr.no_input", within=20, interaction_id=i, data__attempt=2)
    # The last try takes keys only.
    await stack.hilo_events.expect("ivr.menu", within=10, interaction_id=i, data__attempt=3, data__speech=False)
    await stack.observer.send_dtmf(call.caller_leg, "3")
    typed = await stack.hilo_events.expect("ivr.input", within=15, interaction_id=i, data__attempt=3)
    assert (typed["data"]["digit"], typed["data"]["valid"]) == ("3", True), typed
    await stack.hilo_events.expect("routing.queued", within=10, interaction_id=i, data__queue="support")
    await hang_up(stack, call, i)


DEMO_PROMPT = "For sales, say sales or press 1. For technical support, say technical support or press 2."


@pytest.mark.parametrize(
    ("said", "queue", "agent"), [("sales", "sales", "alice"), ("technical support", "support", "bob")]
)
async def test_the_demo_line_routes_a_spoken_choice_to_its_agent(
    stack: Stack, said: str, queue: str, agent: str
) -> None:
    """The demo line 100 as `make run` starts it (the working copy's demo flow): the caller says what they
    want and reaches that queue's agent on a real SIP phone."""
    utterance = await _utterance(stack, said)
    prompt_media = f"sound:hilo/{prompt_key(DEMO_PROMPT, voice_for('en', 'gmw/en-US'), 'en')}"
    ari_mark = stack.ari_events.mark()
    call, started = await place(stack, CALLER, in_app=True)
    i = started["interaction_id"]
    await stack.hilo_events.expect("ivr.menu", within=10, interaction_id=i, data__attempt=1, data__speech=True)
    await stack.ari_events.expect(
        "PlaybackStarted",
        within=10,
        since=ari_mark,
        playback__media_uri=prompt_media,
        playback__target_uri=f"channel:{call.ivr_leg}",
    )
    await _say(stack, call, utterance)
    heard = await stack.hilo_events.expect("ivr.input", within=15, interaction_id=i)
    assert (heard["data"]["via"], heard["data"]["valid"], heard["data"]["heard"]) == ("speech", True, said), heard
    await stack.hilo_events.expect_in_order(
        [
            ("routing.queued", {"interaction_id": i, "data__queue": queue}),
            ("routing.offered", {"interaction_id": i, "data__agent": agent}),
            ("agent.answered", {"interaction_id": i, "data__agent": agent}),
        ],
        within=30,
    )
    await hang_up(stack, call, i)


DIGITS_NUMBER = "172"
DIGITS_FLOW = """
flow: speech_digits
language: en
start: account
nodes:
  account:
    kind: gather
    prompt: Please say or key your account number.
    min_digits: 4
    max_digits: 6
    into: account
    speech: {min_confidence: 0.5}
    next: thanks
    no_input: bye
  thanks: {kind: hangup, text: "Thank you."}
  bye: {kind: hangup, text: Goodbye.}
"""


async def test_an_account_number_said_on_a_call_fills_the_gather(stack: Stack) -> None:
    await apply_line(stack, DIGITS_NUMBER, {"speech_digits": DIGITS_FLOW})
    said = await _utterance(stack, "four two seven one")
    ari_mark = stack.ari_events.mark()
    call, started = await place(stack, CALLER, number=DIGITS_NUMBER, in_app=True)
    i = started["interaction_id"]
    await _prompt_started(stack, call, ari_mark)
    await _say(stack, call, said)
    heard = await stack.hilo_events.expect("ivr.input", within=15, interaction_id=i)
    assert heard["data"] == {"flow": "speech_digits", "node": "account", "digits": "4271", "into": "account"}, heard
    ended = await stack.hilo_events.expect("interaction.ended", within=15, interaction_id=i)
    assert ended["data"]["hangup_by"] == "system", ended


async def test_the_simulated_caller_of_hilo_call_can_say_its_choice(stack: Stack) -> None:
    """`hilo call --say`: the caller's words played by the dialplan side (hilo-caller-sim's SIM_SAY) while
    the menu prompt plays, no test hand on the call."""
    sound = (await _utterance(stack, "sales")).removeprefix("sound:")
    # Said once the greetings (welcome, then the caller by name) are over and the menu prompt plays.
    call, started = await place(stack, CALLER, say=sound, say_after_s=5.0)
    i = started["interaction_id"]
    heard = await stack.hilo_events.expect("ivr.input", within=20, interaction_id=i)
    assert (heard["data"]["via"], heard["data"]["digit"], heard["data"]["heard"]) == ("speech", "1", "sales"), heard
    await stack.hilo_events.expect("agent.answered", within=20, interaction_id=i, data__agent="alice")
    await hang_up(stack, call, i)
