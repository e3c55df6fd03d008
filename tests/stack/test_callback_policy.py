"""Callbacks and the outbound policy over real calls: a caller "from" a premium-rate or far-away number (caller
ids are easy to fake) asks for a callback; it is refused with the reason on the timeline and never booked, so
never dialled. A number called back too often is refused too. A booking whose number the policy refuses when
its turn comes (booked before the policy) is never offered to an agent nor dialled. A flow's transfer to a
number the policy refuses is not dialled either."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asterisk.ari import AriError
from dialplans.models import OutboundLimit
from routing.engine import RoutingEngine
from routing.live import AgentBoard
from server.simcall import SimCall
from tests.stack.calls import place
from tests.stack.conftest import Stack
from tests.stack.expect import eventually
from tests.stack.lines import apply_line

NUMBER = "172"
FLOW = """
flow: callmeback
language: en
start: menu
nodes:
  menu:
    kind: menu
    prompt: For a callback press 1, for our other office press 2.
    choices:
      "1": {label: Callback, next: call_me}
      "2": {label: Other office, next: elsewhere}
    no_match: Sorry.
    no_input: Sorry.
    retries: 2
    timeout_s: 10
    fallback: bye
  call_me:
    kind: callback
    prompt: We will call you back.
    queue: support
  elsewhere:
    kind: transfer
    to: "+449098790000"
    on_failure: bye
  bye:
    kind: hangup
    text: Goodbye.
"""
ANA = "+34911222333"  # a demo customer: a Madrid fixed line, dialled back


@pytest.fixture
async def callback_line(stack: Stack) -> AsyncIterator[RoutingEngine]:
    """The flow on NUMBER; bob (support) away until the test sets him available; customers dialled in the
    simulated network (hilo-callback-sim), never out through the trunk."""
    assert stack.services.routing is not None and stack.services.calls is not None
    await apply_line(stack, NUMBER, {"callmeback": FLOW})
    engine = stack.services.routing
    assert await engine.set_state("bob", "away", "test")
    dialler = stack.services.calls.callbacks
    before = dialler.dial
    dialler.dial = "Local/{number}@hilo-callback-sim"
    yield engine
    dialler.dial = before
    await engine.set_state("bob", "available")


async def _choose(stack: Stack, caller: str, key: str) -> tuple[SimCall, str]:
    call, started = await place(stack, caller, number=NUMBER, menu_key=key)
    return call, str(started["interaction_id"])


async def _ended(stack: Stack, call: SimCall, interaction: str) -> dict[str, Any]:
    ended = await stack.hilo_events.expect("interaction.ended", within=15, interaction_id=interaction)
    with contextlib.suppress(AriError):
        await stack.observer.hangup(call.caller_leg)
    return dict(ended["data"])


async def _state(board: AgentBoard, agent: str) -> bool:
    return (await board.agent(agent)).get("state") == "available"


def _events(stack: Stack, type_: str, interaction: str) -> list[dict[str, Any]]:
    return [
        e
        for e in stack.hilo_events.events[stack.hilo_events.baseline :]
        if e["type"] == type_ and e.get("interaction_id") == interaction
    ]


@pytest.mark.parametrize(
    ("caller", "reason"),
    [
        ("+34806123456", "blocked range +3480"),  # a Spanish premium-rate number
        ("+18765551234", "country JM is not allowed (allowed: ES)"),  # "+1", but Jamaica
    ],
)
async def test_a_callback_to_a_premium_or_foreign_number_is_refused_and_never_dialled(
    stack: Stack, callback_line: RoutingEngine, caller: str, reason: str
) -> None:
    call, interaction = await _choose(stack, caller, "1")
    refused = await stack.hilo_events.expect("callback.refused", within=15, interaction_id=interaction)
    assert refused["data"] == {"reason": reason}
    assert await _ended(stack, call, interaction) == {"outcome": "callback-unavailable", "hangup_by": "system"}
    # Never booked, so nothing for the dialler, which dials bookings only; nothing queued for an agent either.
    assert await stack.pool.fetchval("SELECT count(*) FROM callbacks") == 0
    assert not _events(stack, "callback.requested", interaction) and not _events(stack, "routing.queued", interaction)


async def test_a_number_called_back_too_often_is_refused(stack: Stack, callback_line: RoutingEngine) -> None:
    assert stack.services.calls is not None
    config = stack.services.calls.outbound.policy.config
    before = config.per_number
    config.per_number = OutboundLimit(max=1, within_s=3600)
    try:
        call, first = await _choose(stack, ANA, "1")
        await stack.hilo_events.expect("callback.requested", within=15, interaction_id=first)
        await _ended(stack, call, first)
        call, second = await _choose(stack, ANA, "1")
        refused = await stack.hilo_events.expect("callback.refused", within=15, interaction_id=second)
        assert refused["data"] == {"reason": "more than 1 callbacks to this number within 3600s"}
        assert await _ended(stack, call, second) == {"outcome": "callback-unavailable", "hangup_by": "system"}
        assert await stack.pool.fetchval("SELECT count(*) FROM callbacks") == 1
    finally:
        config.per_number = before


async def test_a_booking_the_policy_refuses_when_its_turn_comes_is_never_offered_nor_dialled(
    stack: Stack, callback_line: RoutingEngine
) -> None:
    engine = callback_line
    call, booked = await _choose(stack, ANA, "1")
    await stack.hilo_events.expect("callback.requested", within=15, interaction_id=booked)
    await _ended(stack, call, booked)
    # As if booked before the policy (or by a node with another one): the stored number is premium-rate.
    await stack.pool.execute("UPDATE callbacks SET number = '+34806123456' WHERE interaction_id = $1::uuid", booked)
    ari_mark = stack.ari_events.mark()
    assert await engine.set_state("bob", "available")
    # The dialler looks at its bookings every second: this one is refused on sight, bob free or not.
    refused = await stack.hilo_events.expect("callback.refused", within=15, interaction_id=booked)
    assert refused["data"]["reason"] == "blocked range +3480"
    row = await stack.pool.fetchrow(
        "SELECT state, attempts, last_result FROM callbacks WHERE interaction_id = $1::uuid", booked
    )
    assert row is not None and dict(row) == {"state": "failed", "attempts": 0, "last_result": "refused"}
    assert not _events(stack, "callback.dialing", booked)
    rung = [
        e
        for e in stack.ari_events.events[ari_mark:]
        if e.get("type") == "ChannelCreated" and e["channel"]["name"].startswith("PJSIP/agent-bob")
    ]
    assert not rung, rung  # bob's phone never rang for it
    board = stack.services.board
    assert board is not None
    await eventually(lambda: _state(board, "bob"), within=5, what="bob available, no booking held for him")


async def test_a_flow_transfer_to_a_number_the_policy_refuses_is_not_dialled(
    stack: Stack, callback_line: RoutingEngine
) -> None:
    call, interaction = await _choose(stack, ANA, "2")
    refused = await stack.hilo_events.expect("ivr.transfer_refused", within=15, interaction_id=interaction)
    assert refused["data"] == {"to": "+449098790000", "reason": "blocked range +449"}
    await stack.hilo_events.expect(
        "ivr.outcome", within=10, interaction_id=interaction, data__node="bye", data__action="hangup"
    )
    assert await _ended(stack, call, interaction) == {"outcome": "ivr-ended", "hangup_by": "system"}
    assert not _events(stack, "ivr.transfer", interaction)
