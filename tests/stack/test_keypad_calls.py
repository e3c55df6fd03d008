"""The keypad over a real call, where callers get it wrong: a bare terminator, a pause between keys longer
than the inter-digit timeout, a key beyond the longest answer (it answers the next question), `*` as a
menu choice, and a menu whose tries run out (no key, a wrong key, no key) and goes on at its fallback."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from server.simcall import originate_sim_call
from speech.tts import prompt_key, voice_for
from tests.stack.conftest import NAMESPACE, Stack
from tests.stack.lines import apply_line

NUMBER = "162"
BARE, PAUSE, FULL = "Type your code, then hash.", "Type your number.", "Type your four digit PIN."
KEYPAD_FLOW = f"""
flow: keypad
language: en
start: bare
nodes:
  bare:
    kind: gather
    prompt: {BARE}
    min_digits: 1
    max_digits: 4
    terminator: "#"
    into: code
    next: bye
    no_input: pause
  pause:
    kind: gather
    prompt: {PAUSE}
    min_digits: 2
    max_digits: 6
    terminator: "#"
    inter_digit_timeout_s: 1
    into: number
    next: full
    no_input: bye
  full:
    kind: gather
    prompt: {FULL}
    min_digits: 4
    max_digits: 4
    terminator: "#"
    into: pin
    next: choose
    no_input: bye
  choose:
    kind: menu
    prompt: Press 5 to go on.
    choices:
      "5": {{label: Go on, next: star}}
    no_match: Sorry.
    no_input: Sorry.
    retries: 1
    timeout_s: 5
    fallback: bye
  star:
    kind: menu
    prompt: Press star for more.
    choices:
      "*": {{label: More, next: last}}
      "#": {{label: Back, next: bye}}
    no_match: Sorry.
    no_input: Sorry.
    retries: 1
    timeout_s: 5
    fallback: bye
  last:
    kind: menu
    prompt: Press 1 for nothing.
    choices:
      "1": {{label: Nothing, next: bye}}
    no_match: That is not a choice.
    no_input: Nothing was pressed.
    retries: 3
    timeout_s: 1
    fallback: given_up
  given_up: {{kind: hangup, text: We could not understand you. Goodbye.}}
  bye: {{kind: hangup, text: Goodbye.}}
"""


def _at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event.get("at") or event["timestamp"].replace("+0000", "+00:00"))


async def test_keys_callers_get_wrong_over_a_real_call(stack: Stack) -> None:
    await apply_line(stack, NUMBER, {"keypad": KEYPAD_FLOW})
    assert stack.services.calls is not None
    prompts = stack.services.calls.prompts
    mark, ari_mark = stack.hilo_events.mark(), stack.ari_events.mark()
    call = await originate_sim_call(stack.observer, NUMBER, "+34911222333", "", namespace=NAMESPACE, in_app=True)
    started = await stack.hilo_events.expect(
        "interaction.started", within=10, since=mark, data__channel_ref=call.ivr_leg
    )
    i = started["interaction_id"]

    async def when_asked(text: str) -> None:
        media = prompts.media_uri(prompt_key(text, voice_for("en", None), "en"))
        await stack.ari_events.expect(
            "PlaybackStarted", within=10, since=ari_mark, playback__media_uri=media,
            playback__target_uri=f"channel:{call.ivr_leg}",
        )  # fmt: skip

    async def press(keys: str) -> None:
        await stack.observer.send_dtmf(call.caller_leg, keys)

    await when_asked(BARE)
    await press("#")  # the terminator alone: no answer
    await stack.hilo_events.expect("ivr.no_input", within=10, interaction_id=i, data__node="bare", data__got="digits")
    await when_asked(PAUSE)
    await press("12")  # ... then nothing: the answer is what came before the pause
    typed = await stack.hilo_events.expect("ivr.input", within=10, interaction_id=i, data__node="pause")
    assert typed["data"]["digits"] == "12"
    last_key = [
        e for e in stack.ari_events.events[ari_mark:]
        if e["type"] == "ChannelDtmfReceived" and e["channel"]["id"] == call.ivr_leg and e["digit"] == "2"
    ][-1]  # fmt: skip
    assert (_at(typed) - _at(last_key)).total_seconds() >= 0.9  # the inter-digit timeout (1 s), not sooner
    await when_asked(FULL)
    await press("12345")  # one key too many: it answers the next question
    await stack.hilo_events.expect_in_order(
        [
            ("ivr.input", {"interaction_id": i, "data__node": "full", "data__digits": "1234"}),
            ("ivr.input", {"interaction_id": i, "data__node": "choose", "data__digit": "5", "data__valid": True}),
            ("ivr.menu", {"interaction_id": i, "data__node": "star"}),
        ],
        within=15,
    )
    await press("*")
    await stack.hilo_events.expect(
        "ivr.input", within=10, interaction_id=i, data__node="star", data__digit="*", data__valid=True
    )
    await stack.hilo_events.expect("ivr.menu", within=10, interaction_id=i, data__node="last", data__attempt=2)
    await press("9")
    await stack.hilo_events.expect_in_order(
        [
            ("ivr.input", {"interaction_id": i, "data__node": "last", "data__digit": "9", "data__valid": False}),
            ("ivr.menu", {"interaction_id": i, "data__node": "last", "data__attempt": 3}),
            ("ivr.no_input", {"interaction_id": i, "data__node": "last", "data__attempt": 3}),
            ("ivr.menu_failed", {"interaction_id": i, "data__node": "last", "data__next": "given_up"}),
            ("ivr.outcome", {"interaction_id": i, "data__node": "given_up", "data__action": "hangup"}),
        ],
        within=20,
    )
    ended = await stack.hilo_events.expect("interaction.ended", within=15, interaction_id=i)
    assert ended["data"] == {"outcome": "ivr-ended", "hangup_by": "system"}
    asked = ("ivr.menu", "ivr.no_input", "ivr.input")
    steps = [
        (e["type"], e["data"].get("node"), e["data"].get("attempt"))
        for e in stack.hilo_events.events[mark:]
        if e.get("interaction_id") == i and e["type"] in asked and e["data"].get("node") == "last"
    ]
    assert steps == [
        ("ivr.menu", "last", 1),
        ("ivr.no_input", "last", 1),
        ("ivr.menu", "last", 2),
        ("ivr.input", "last", 2),
        ("ivr.menu", "last", 3),
        ("ivr.no_input", "last", 3),
    ]
    context = await stack.pool.fetchval("SELECT context FROM interactions WHERE id = $1::uuid", i)
    collected = context["ivr"]["variables"]
    assert (collected["number"], collected["pin"], "code" in collected) == ("12", "1234", False)
    await stack.ari_events.expect("ChannelDestroyed", within=10, since=ari_mark, channel__id=call.caller_leg)
