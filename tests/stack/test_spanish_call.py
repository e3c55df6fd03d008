"""A Spanish line end to end over a real call (the README: Spanish prompts are spoken out of the box): the
flow's prompts rendered with the Spanish voice and played to their end by Asterisk, a menu that would listen
for Spanish speech taking keys only (no Spanish model is installed by default) with its keypad prompt, and
the caller reaching the support agent, the interaction keeping the call's language."""

from __future__ import annotations

import wave

from server.simcall import originate_sim_call
from speech.tts import prompt_key, voice_for
from tests.stack.conftest import NAMESPACE, Stack
from tests.stack.lines import apply_line

NUMBER = "163"
WELCOME = "Bienvenido a Hilo. Gracias por llamar."
KEYPAD = "Para soporte técnico, pulse dos."
SPANISH_FLOW = f"""
flow: espanol
language: es
start: saludo
nodes:
  saludo: {{kind: say, text: "{WELCOME}", next: menu}}
  menu:
    kind: menu
    prompt: Para soporte técnico, diga soporte o pulse dos.
    speech: {{dtmf_prompt: "{KEYPAD}"}}
    choices:
      "2": {{label: Soporte, say: [soporte técnico], next: soporte}}
    no_match: Lo siento, no le he entendido.
    no_input: Lo siento, no le he oído.
    retries: 2
    timeout_s: 10
    fallback: adios
  soporte: {{kind: queue, queue: support}}
  adios: {{kind: hangup, text: Adiós.}}
"""


async def test_a_spanish_line_speaks_spanish_and_reaches_the_agent(stack: Stack) -> None:
    await apply_line(stack, NUMBER, {"espanol": SPANISH_FLOW})
    assert stack.services.calls is not None
    prompts = stack.services.calls.prompts
    spanish = voice_for("es", None)
    assert spanish != voice_for("en", None)

    def media(text: str) -> str:
        return prompts.media_uri(prompt_key(text, spanish, "es"))

    mark, ari_mark = stack.hilo_events.mark(), stack.ari_events.mark()
    call = await originate_sim_call(stack.observer, NUMBER, "+34911222333", "", namespace=NAMESPACE, in_app=True)
    started = await stack.hilo_events.expect(
        "interaction.started", within=10, since=mark, data__channel_ref=call.ivr_leg
    )
    i = started["interaction_id"]
    # Asterisk played the welcome, rendered with the Spanish voice, to its end.
    await stack.ari_events.expect(
        "PlaybackFinished", within=15, since=ari_mark, playback__media_uri=media(WELCOME),
        playback__target_uri=f"channel:{call.ivr_leg}", playback__state="done",
    )  # fmt: skip
    unavailable = await stack.hilo_events.expect("ivr.speech_unavailable", within=10, interaction_id=i)
    assert unavailable["data"]["node"] == "menu"
    await stack.ari_events.expect(
        "PlaybackStarted", within=10, since=ari_mark, playback__media_uri=media(KEYPAD),
        playback__target_uri=f"channel:{call.ivr_leg}",
    )  # fmt: skip
    await stack.observer.send_dtmf(call.caller_leg, "2")
    await stack.hilo_events.expect_in_order(
        [
            ("ivr.input", {"interaction_id": i, "data__node": "menu", "data__digit": "2", "data__valid": True}),
            ("routing.queued", {"interaction_id": i, "data__queue": "support"}),
            ("agent.answered", {"interaction_id": i, "data__agent": "bob"}),
        ],
        within=20,
    )
    # The rendered prompts are speech: seconds of 8 kHz audio for Asterisk, not an empty file.
    for text in (WELCOME, KEYPAD):
        with wave.open(str(stack.settings.sounds_dir / f"{prompt_key(text, spanish, 'es')}.wav")) as rendered:
            assert rendered.getframerate() == 8000 and rendered.getnframes() > 8000, text
    context = await stack.pool.fetchval("SELECT context FROM interactions WHERE id = $1::uuid", i)
    assert context["flow_language"] == "es"
    await stack.observer.hangup(call.caller_leg)
    ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=i)
    assert ended["data"] == {"outcome": "completed", "hangup_by": "caller"}
