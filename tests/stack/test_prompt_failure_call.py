"""Text to speech failing for one prompt of a real call (a greeting for known customers that comes out empty
for a new caller, on which the speech engine fails): the caller hears nothing there and the call goes on to
the agent; the failure is logged, and the call is not dropped with an apology."""

from __future__ import annotations

import logging

import pytest

from server.simcall import originate_sim_call
from speech.tts import prompt_key, voice_for
from tests.stack.conftest import NAMESPACE, Stack
from tests.stack.lines import apply_line

NUMBER = "165"
MENU = "For support press 2."
SAYING_FLOW = f"""
flow: saying
language: en
start: tell
nodes:
  # a greeting for known customers only: for a caller new to Hilo it comes out empty
  tell: {{kind: say, text: "{{% if customer.known %}}Welcome back, {{{{ customer.name }}}}.{{% endif %}}", next: menu}}
  menu:
    kind: menu
    prompt: {MENU}
    choices:
      "2": {{label: Support, next: support}}
    no_match: Sorry.
    no_input: Sorry.
    retries: 2
    timeout_s: 10
    fallback: bye
  support: {{kind: queue, queue: support}}
  bye: {{kind: hangup, text: Goodbye.}}
"""


async def test_a_prompt_the_speech_engine_cannot_render_is_left_out_and_the_call_goes_on(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ivr")
    await apply_line(stack, NUMBER, {"saying": SAYING_FLOW})
    assert stack.services.calls is not None
    menu = stack.services.calls.prompts.media_uri(prompt_key(MENU, voice_for("en", None), "en"))
    mark, ari_mark = stack.hilo_events.mark(), stack.ari_events.mark()
    call = await originate_sim_call(stack.observer, NUMBER, "+34600987654", "", namespace=NAMESPACE, in_app=True)
    started = await stack.hilo_events.expect(
        "interaction.started", within=10, since=mark, data__channel_ref=call.ivr_leg
    )
    i = started["interaction_id"]
    await stack.hilo_events.expect("ivr.say", within=10, interaction_id=i, data__node="tell")
    # The first thing the caller hears is the menu: nothing was played for the message that failed.
    first = await stack.ari_events.expect(
        "PlaybackStarted", within=15, since=ari_mark, playback__target_uri=f"channel:{call.ivr_leg}"
    )
    assert first["playback"]["media_uri"] == menu, first["playback"]
    await stack.observer.send_dtmf(call.caller_leg, "2")
    await stack.hilo_events.expect_in_order(
        [
            ("ivr.input", {"interaction_id": i, "data__node": "menu", "data__digit": "2", "data__valid": True}),
            ("agent.answered", {"interaction_id": i, "data__agent": "bob"}),
        ],
        within=20,
    )
    await stack.observer.hangup(call.caller_leg)
    ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=i)
    assert ended["data"] == {"outcome": "completed", "hangup_by": "caller"}
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"a prompt (0 characters) could not be rendered for {call.ivr_leg}: left out"], errors
