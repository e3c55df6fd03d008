"""Agents transferring real calls from the API (the console's buttons): blind to a queue and to an agent, a
blind transfer to an agent who does not answer going back to the queue, and attended transfers completed
and cancelled. The SIPp agents answer; every step is a declared event with its fields."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from dialplans.models import Agent
from server.simcall import SimCall
from tests.stack.calls import hang_up, place
from tests.stack.conftest import Stack
from tests.stack.lines import apply_line
from tests.stack.test_screenpop import bearer, sign_in

KNOWN_CALLER = "+34911222333"
_PLACED: list[SimCall] = []


@pytest.fixture(autouse=True)
async def hang_up_leftovers(stack: Stack) -> AsyncIterator[None]:
    yield
    while _PLACED:
        await stack.observer.hangup(_PLACED.pop().caller_leg)


async def call_with_bob(stack: Stack) -> tuple[SimCall, str]:
    call, started = await place(stack, KNOWN_CALLER, "2", placed=_PLACED)
    interaction = str(started["interaction_id"])
    await stack.hilo_events.expect("agent.answered", within=30, interaction_id=interaction, data__agent="bob")
    return call, interaction


async def transfer(stack: Stack, interaction: str, token: str, **body: Any) -> tuple[int, dict[str, Any]]:
    resp = await stack.client.post(f"/api/calls/{interaction}/transfer", json=body, headers=bearer(token))
    return resp.status, await resp.json()


def _alice_leg(name: str) -> bool:
    return name.startswith("PJSIP/agent-alice-")


async def test_blind_transfer_to_a_queue_requeues_the_caller_with_the_context(stack: Stack) -> None:
    call, interaction = await call_with_bob(stack)
    bob = await sign_in(stack, "bob-xfer", "agent", "bob")
    alice = await sign_in(stack, "alice-xfer", "agent", "alice")
    status, body = await transfer(stack, interaction, alice, kind="blind", to_queue="sales")
    assert status == 403, body  # not her call
    status, body = await transfer(stack, interaction, bob, kind="blind", to_queue="nowhere")
    assert status == 409 and body["field"] == "to_queue", body
    status, body = await transfer(stack, interaction, bob, kind="blind", to_queue="sales", note="wants a quote")
    assert (status, body["state"]) == (200, "transferred"), body
    await stack.hilo_events.expect_in_order(
        [
            (
                "routing.transferred",
                {
                    "interaction_id": interaction,
                    "data__kind": "blind",
                    "data__from_agent": "bob",
                    "data__to_queue": "sales",
                },
            ),
            ("routing.offered", {"interaction_id": interaction, "data__agent": "alice", "data__queue": "sales"}),
            ("agent.answered", {"interaction_id": interaction, "data__agent": "alice"}),
        ],
        within=20,
    )
    await stack.ari_events.expect("ChannelEnteredBridge", within=5, channel__name=_alice_leg)
    # alice's pop shows what the caller told the IVR and bob's note
    resp = await stack.client.get(f"/console/api/interactions/{interaction}", headers=bearer(alice))
    pop = await resp.json()
    assert resp.status == 200, pop
    assert pop["transfers"] == [{"kind": "blind", "from_agent": "bob", "to_queue": "sales", "note": "wants a quote"}]
    assert pop["ivr"]["flow"] == "demo" and pop["customer"]["name"]
    assert stack.services.board is not None
    assert (await stack.services.board.agent("bob"))["state"] == "available"  # bob is free again
    ended = await hang_up(stack, call, interaction)
    assert ended["data"]["outcome"] == "completed"
    row = await stack.pool.fetchrow(
        "SELECT agent_id, queue FROM routing_interactions WHERE interaction_id = $1::uuid", interaction
    )
    assert row is not None and (row["agent_id"], row["queue"]) == ("alice", "sales")


async def test_blind_transfer_to_an_agent(stack: Stack) -> None:
    call, interaction = await call_with_bob(stack)
    status, body = await transfer(stack, interaction, stack.token, kind="blind", to_agent="alice")
    assert (status, body["state"]) == (200, "transferred"), body
    await stack.hilo_events.expect_in_order(
        [
            ("routing.transferred", {"interaction_id": interaction, "data__kind": "blind", "data__to_agent": "alice"}),
            ("routing.offered", {"interaction_id": interaction, "data__agent": "alice"}),
            ("agent.answered", {"interaction_id": interaction, "data__agent": "alice"}),
        ],
        within=20,
    )
    await hang_up(stack, call, interaction)


@pytest.fixture
async def carol(stack: Stack) -> AsyncIterator[str]:
    """An agent whose phone never answers (no such PJSIP endpoint)."""
    assert stack.services.routing is not None
    engine = stack.services.routing
    await engine.put_agent(
        Agent(id="carol", name="Carol", sip_endpoint="agent-carol-nowhere", queues=["sales"]),
        presence_if_new="available",
    )
    yield "carol"
    await engine.state.drop_agent("carol")
    await stack.pool.execute("DELETE FROM agents WHERE id = 'carol'")


async def test_a_blind_transfer_nobody_answers_goes_back_to_the_queue_not_dropped(stack: Stack, carol: str) -> None:
    call, interaction = await call_with_bob(stack)
    status, body = await transfer(stack, interaction, stack.token, kind="blind", to_agent=carol)
    assert status == 200, body
    await stack.hilo_events.expect_in_order(
        [
            ("routing.offered", {"interaction_id": interaction, "data__agent": carol}),
            ("routing.not_answered", {"interaction_id": interaction, "data__agent": carol}),
            # back in its queue (support), where bob, free again, takes it
            ("routing.offered", {"interaction_id": interaction, "data__agent": "bob"}),
            ("agent.answered", {"interaction_id": interaction, "data__agent": "bob"}),
        ],
        within=25,
    )
    ended = await hang_up(stack, call, interaction)
    assert ended["data"]["outcome"] == "completed"


async def _consult(stack: Stack) -> tuple[SimCall, str, str]:
    call, interaction = await call_with_bob(stack)
    bob = await sign_in(stack, "bob-consult", "agent", "bob")
    status, body = await transfer(stack, interaction, bob, kind="attended", to_agent="alice", note="billing issue")
    assert (status, body["state"]) == (200, "consulting"), body
    await stack.hilo_events.expect_in_order(
        [
            ("call.held", {"interaction_id": interaction, "data__agent": "bob"}),
            ("routing.consulting", {"interaction_id": interaction, "data__to_agent": "alice"}),
        ],
        within=5,
    )
    # alice's phone joined bob in the call's bridge; the caller is out of it, on hold
    await stack.ari_events.expect("ChannelEnteredBridge", within=5, channel__name=_alice_leg)
    await stack.ari_events.expect("ChannelLeftBridge", within=5, channel__id=call.ivr_leg)
    assert stack.services.board is not None
    alice = await stack.services.board.agent("alice")  # reserved: routing offers her nothing meanwhile
    assert (alice["state"], alice["reason"]) == ("away", "consulting"), alice
    return call, interaction, bob


async def test_attended_transfer_completed_hands_the_caller_to_the_consulted_agent(stack: Stack) -> None:
    call, interaction, bob = await _consult(stack)
    mark = stack.ari_events.mark()
    resp = await stack.client.post(f"/api/calls/{interaction}/transfer/complete", headers=bearer(bob))
    assert resp.status == 200, await resp.text()
    await stack.hilo_events.expect_in_order(
        [
            (
                "routing.transferred",
                {
                    "interaction_id": interaction,
                    "data__kind": "attended",
                    "data__from_agent": "bob",
                    "data__to_agent": "alice",
                },
            ),
            ("agent.answered", {"interaction_id": interaction, "data__agent": "alice"}),
        ],
        within=10,
    )
    await stack.ari_events.expect("ChannelEnteredBridge", within=5, since=mark, channel__id=call.ivr_leg)
    await stack.ari_events.expect(
        "ChannelDestroyed", within=5, channel__name=lambda n: n.startswith("PJSIP/agent-bob-")
    )
    assert stack.services.calls is not None
    assert stack.services.calls.live.get(interaction).agent_id == "alice"
    assert stack.services.board is not None
    assert (await stack.services.board.agent("alice"))["state"] == "busy"
    ended = await hang_up(stack, call, interaction)
    assert ended["data"]["outcome"] == "completed"
    row = await stack.pool.fetchrow("SELECT agent_id FROM interactions WHERE id = $1::uuid", interaction)
    assert row is not None and row["agent_id"] == "alice"


async def test_attended_transfer_cancelled_takes_the_caller_back(stack: Stack) -> None:
    call, interaction, bob = await _consult(stack)
    mark = stack.ari_events.mark()
    resp = await stack.client.post(f"/api/calls/{interaction}/transfer/cancel", headers=bearer(bob))
    assert resp.status == 200, await resp.text()
    await stack.hilo_events.expect_in_order(
        [
            ("routing.transfer_failed", {"interaction_id": interaction, "data__reason": "cancelled"}),
            ("call.unheld", {"interaction_id": interaction}),
        ],
        within=10,
    )
    await stack.ari_events.expect("ChannelDestroyed", within=5, since=mark, channel__name=_alice_leg)
    await stack.ari_events.expect("ChannelEnteredBridge", within=5, since=mark, channel__id=call.ivr_leg)
    assert stack.services.calls is not None
    assert stack.services.calls.live.get(interaction).agent_id == "bob"
    assert stack.services.board is not None
    assert (await stack.services.board.agent("alice"))["state"] == "available"  # free again
    assert not [e for e in stack.hilo_events.events[stack.hilo_events.baseline :] if e["type"] == "routing.transferred"]
    resp = await stack.client.post(f"/api/calls/{interaction}/transfer/complete", headers=bearer(bob))
    assert resp.status == 409
    await hang_up(stack, call, interaction)


XFER_FLOW = """
flow: xfer
language: en
start: out
nodes:
  out:
    kind: transfer
    to: "{target}"
    on_failure: sorry
  sorry:
    kind: hangup
    text: Sorry, nobody could take your call.
"""


async def _xfer_line(stack: Stack, target: str) -> None:
    await apply_line(stack, "180", {"xfer": XFER_FLOW.format(target=target)})


async def _flow_call(stack: Stack) -> tuple[SimCall, str]:
    call, started = await place(stack, KNOWN_CALLER, number="180", placed=_PLACED)
    return call, str(started["interaction_id"])


async def test_a_flow_transfer_nobody_answers_comes_back_to_the_flow(stack: Stack) -> None:
    await _xfer_line(stack, "agent-nobody")  # no such endpoint: the dialplan's Dial fails at once
    call, interaction = await _flow_call(stack)
    steps = await stack.hilo_events.expect_in_order(
        [
            ("ivr.transfer", {"interaction_id": interaction, "data__to": "agent-nobody"}),
            ("ivr.transfer_failed", {"interaction_id": interaction, "data__to": "agent-nobody", "data__status": bool}),
            ("ivr.outcome", {"interaction_id": interaction, "data__node": "sorry", "data__action": "hangup"}),
        ],
        within=20,
    )
    # Hilo itself speaks to the caller again on the same channel
    await stack.ari_events.expect(
        "PlaybackFinished", within=15, playback__target_uri=f"channel:{call.ivr_leg}", playback__state="done"
    )
    ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    assert ended["data"] == {"outcome": "ivr-ended", "hangup_by": "system"}
    assert steps[1]["data"]["status"] in ("CHANUNAVAIL", "CONGESTION", "INVALIDTARGET"), steps[1]


async def test_a_flow_transfer_that_is_answered_ends_as_transferred(stack: Stack) -> None:
    await _xfer_line(stack, "test-line")  # answers, beeps, hangs up
    _, interaction = await _flow_call(stack)
    await stack.hilo_events.expect("ivr.transfer", within=15, interaction_id=interaction, data__to="test-line")
    ended = await stack.hilo_events.expect("interaction.ended", within=15, interaction_id=interaction)
    assert ended["data"]["outcome"] == "transferred"
    assert not [e for e in stack.hilo_events.events[stack.hilo_events.baseline :] if e["type"] == "ivr.transfer_failed"]
