"""A simulated caller: a Local channel into `hilo-inbound`, whose far end (dialplan context
`hilo-caller-sim`) types the digits and stays on the line. Used by `hilo call` and the stack tests."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from asterisk.ari import AriClient
from hilo.notifier import events_channel
from hilo.settings import Settings
from hilo.stores import redis_client
from speech.tts import PromptCache, voice_for


@dataclass(frozen=True)
class SimCall:
    caller_leg: str  # the simulated phone (runs hilo-caller-sim); hang it up to end the call as the caller
    ivr_leg: str  # the side that enters the Stasis app: the interaction's channel_ref


async def originate_sim_call(
    ari: AriClient,
    number: str,
    caller: str,
    digits: str,
    *,
    namespace: str,
    hold_s: float = 600,
    in_app: bool = False,
    tone: str = "",
    say: str = "",
    say_after_s: float = 3.0,
) -> SimCall:
    """With `in_app`, the simulated phone enters `ari`'s own Stasis app instead of the dialplan, so the
    caller of this function can press keys (`ari.send_dtmf`) whenever it likes; `digits` are then unused.
    `tone` (e.g. "400"): what the caller sends after the digits, a steady tone, as a caller talking.
    `say`: an Asterisk sound (e.g. "hilo/<key>") the caller plays `say_after_s` seconds after the digits."""
    call = SimCall(f"sim-{uuid.uuid4()}", f"sim-{uuid.uuid4()}")
    where: dict[str, str] = (
        {"app": ari.app, "app_args": "sim-caller"} if in_app else {"context": "hilo-caller-sim", "extension": "s"}
    )
    await ari.originate(
        f"Local/{number}@hilo-inbound",
        **where,
        caller_id=f'"" <{caller}>',
        timeout_s=30,
        channel_id=call.caller_leg,
        other_channel_id=call.ivr_leg,
        # `__` makes the variable inherited by the Local channel's other half, which runs hilo-inbound.
        variables={
            "SIM_DIGITS": digits,
            "SIM_HOLD": f"{hold_s:g}",
            "SIM_TONE": tone,
            "SIM_SAY": say,
            "SIM_SAY_AFTER": f"{say_after_s:g}",
            "__HILO_APP": namespace,
        },
    )
    return call


async def _spoken(settings: Settings, text: str) -> str:
    """What the simulated caller says, synthesized into Asterisk's sounds like a prompt (US English)."""
    cache = PromptCache(settings.tts_cache_dir, settings.sounds_dir)
    try:
        media = await cache.render(text, voice_for("en", None), "en", keep=True)
    finally:
        cache.close()
    return media.removeprefix("sound:")


def _line(event: dict[str, Any], t0: float) -> str:
    data = ", ".join(f"{k}={v}" for k, v in event.get("data", {}).items())
    return f"  +{time.monotonic() - t0:5.1f}s  {event['type']:<22} {data}"


async def place_call(
    settings: Settings,
    number: str,
    caller: str,
    digits: str,
    *,
    talk_s: float,
    timeout_s: float,
    say: str = "",
    say_after_s: float = 3.0,
) -> int:
    sound = await _spoken(settings, say) if say else ""
    redis = redis_client(settings)
    pubsub = redis.pubsub()
    await pubsub.subscribe(events_channel(settings.namespace))
    ari = AriClient(settings.ari_url, settings.ari_user, settings.ari_password.get_secret_value(), "hilo-cli")
    await ari.start()
    t0 = time.monotonic()
    interaction_id: str | None = None
    customer_id: str | None = None
    ended: dict[str, Any] | None = None
    try:
        call = await originate_sim_call(
            ari, number, caller, digits, namespace=settings.namespace, say=sound, say_after_s=say_after_s
        )
        saying = f", saying {say!r} after {say_after_s:g} s" if say else ""
        print(f"calling {number} from {caller}, typing {digits or 'nothing'!r}{saying}")
        deadline = t0 + timeout_s
        hangup_at: float | None = None
        while time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if hangup_at is not None and time.monotonic() >= hangup_at:
                await ari.hangup(call.caller_leg)
                hangup_at = None
            if message is None:
                continue
            event = json.loads(message["data"])
            if interaction_id is None and event["data"].get("channel_ref") == call.ivr_leg:
                interaction_id, customer_id = event["interaction_id"], event["customer_id"]
            if event["interaction_id"] != interaction_id:
                continue
            print(_line(event, t0))
            if event["type"] == "agent.answered":
                hangup_at = time.monotonic() + talk_s
            if event["type"] == "interaction.ended":
                ended = event
                break
        else:
            await ari.hangup(call.caller_leg)
    finally:
        await ari.close()
        with contextlib.suppress(Exception):
            await pubsub.aclose()
        await redis.aclose()
    if ended is None:
        print("the call did not end within the timeout", flush=True)
        return 1
    base = f"http://{settings.http_host}:{settings.http_port}"
    print(f"outcome: {ended['data']['outcome']} (hung up by {ended['data']['hangup_by']})")
    print(f'timeline: curl -H "Authorization: Bearer $HILO_API_TOKEN" {base}/api/customers/{customer_id}/timeline')
    return 0
