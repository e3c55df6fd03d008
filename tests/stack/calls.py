"""A test's calls, placed and ended one way everywhere: a simulated caller (server/simcall.py) rings a number
and the test waits for Hilo to open its interaction; the caller hangs up and the test waits for Hilo to end
it."""

from __future__ import annotations

from typing import Any

from server.simcall import SimCall, originate_sim_call
from tests.stack.conftest import NAMESPACE, Stack

KNOWN_CALLER = "+34911222333"  # Ana García in tests/dialplans/demo-customers.yaml


async def place(
    stack: Stack,
    caller: str,
    digits: str = "",
    *,
    number: str = "100",
    in_app: bool = False,
    menu_key: str | None = None,
    placed: list[SimCall] | None = None,
    **options: Any,
) -> tuple[SimCall, dict[str, Any]]:
    """`caller` rings `number`, pressing `digits` as soon as it is answered; or, `in_app`, with the caller's
    phone in the test's hands (`stack.observer.send_dtmf`), pressing `menu_key` once the flow asks its first
    menu. `placed`: a list the call joins as soon as it exists (for a fixture that hangs up what a failed
    test left); `options`: originate_sim_call's others (tone, say, ...). Returns the call and Hilo's
    `interaction.started` of it."""
    mark = stack.hilo_events.mark()
    in_app = in_app or menu_key is not None
    call = await originate_sim_call(
        stack.observer, number, caller, digits, namespace=NAMESPACE, in_app=in_app, **options
    )
    if placed is not None:
        placed.append(call)
    started = await stack.hilo_events.expect(
        "interaction.started", within=10, since=mark, data__channel_ref=call.ivr_leg
    )
    if menu_key is not None:
        interaction = started["interaction_id"]
        await stack.hilo_events.expect("ivr.menu", within=15, since=mark, interaction_id=interaction)
        await stack.observer.send_dtmf(call.caller_leg, menu_key)
    return call, started


async def hang_up(stack: Stack, call: SimCall | str, interaction: str, *, within: float = 10) -> dict[str, Any]:
    """The caller hangs up (a call's caller leg, or any channel of it): Hilo's `interaction.ended` of it."""
    await stack.observer.hangup(call.caller_leg if isinstance(call, SimCall) else call)
    ended: dict[str, Any] = await stack.hilo_events.expect(
        "interaction.ended", within=within, interaction_id=interaction
    )
    return ended
