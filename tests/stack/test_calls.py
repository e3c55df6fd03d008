"""Real calls through Asterisk: a simulated caller on a Local channel, agents answered by SIPp over PJSIP."""

from __future__ import annotations

from typing import Any

from tests.stack.calls import KNOWN_CALLER as KNOWN_CALLER
from tests.stack.calls import place as place
from tests.stack.conftest import Stack
from tests.stack.expect import eventually

# (KNOWN_CALLER and place live in tests/stack/calls.py; other test files import them from here too)


async def test_digit_2_reaches_the_support_agent_and_the_timeline_tells_the_story(stack: Stack) -> None:
    call, started = await place(stack, KNOWN_CALLER, "2")
    interaction = started["interaction_id"]
    steps = await stack.hilo_events.expect_in_order(
        [
            ("customer.identified", {"interaction_id": interaction, "data__new": False}),
            # the demo flow greets a known customer by name
            ("ivr.say", {"interaction_id": interaction, "data__flow": "demo", "data__node": "greet_known"}),
            ("ivr.input", {"interaction_id": interaction, "data__digit": "2", "data__valid": True}),
            ("routing.queued", {"interaction_id": interaction, "data__queue": "support"}),
            ("routing.offered", {"interaction_id": interaction, "data__agent": "bob"}),
            ("agent.answered", {"interaction_id": interaction, "data__agent": "bob"}),
        ],
        within=30,
    )
    # Asterisk's own word: the agent's PJSIP channel and the caller are in one bridge.
    await stack.ari_events.expect(
        "ChannelEnteredBridge", within=5, channel__name=lambda n: n.startswith("PJSIP/agent-bob-")
    )
    await stack.ari_events.expect("ChannelEnteredBridge", within=5, channel__id=call.ivr_leg)
    assert stack.services.board is not None
    assert (await stack.services.board.agent("bob"))["state"] == "busy"

    await stack.observer.hangup(call.caller_leg)
    ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    assert ended["data"] == {"outcome": "completed", "hangup_by": "caller"}

    customer_id = steps[0]["customer_id"]
    resp = await stack.client.get(
        f"/api/customers/{customer_id}/timeline", headers={"Authorization": f"Bearer {stack.token}"}
    )
    assert resp.status == 200
    types = [e["type"] for e in (await resp.json())["events"] if e["interaction_id"] == interaction]
    # the greeting said at once, then the one by name once the caller was identified
    story = ["ivr.say", "ivr.say", "ivr.input", "routing.queued", "agent.answered", "interaction.ended"]
    assert [t for t in types if t in story] == story
    assert all(e["channel"] == "voice" for e in (await resp.json())["events"])
    row = await stack.pool.fetchrow("SELECT * FROM interactions WHERE id = $1::uuid", interaction)
    assert row is not None
    assert (row["state"], row["queue"], row["agent_id"], row["outcome"]) == ("ended", "support", "bob", "completed")
    await stack.ari_events.expect(
        "ChannelDestroyed", within=5, channel__name=lambda n: n.startswith("PJSIP/agent-bob-")
    )
    board = stack.services.board
    # bob is freed by a task of the call that may end just after the interaction does (ivr/inbound.py)
    await eventually(lambda: _state_is(board, "bob", "available"), within=5, what="bob available again after the call")


async def _state_is(board: Any, agent: str, state: str) -> bool:
    return bool((await board.agent(agent))["state"] == state)


async def test_unknown_caller_becomes_a_customer_and_is_recognised_next_time(stack: Stack) -> None:
    number = "+34 600 11 22 33"
    call, started = await place(stack, "0034600112233", "")
    first = await stack.hilo_events.expect(
        "customer.identified", within=10, interaction_id=started["interaction_id"], data__new=True
    )
    await stack.hilo_events.expect("ivr.menu", within=10, interaction_id=started["interaction_id"])
    # Nobody typed ahead, so the greeting played to its end: Asterisk found and played the rendered prompt.
    await stack.ari_events.expect(
        "PlaybackFinished", within=10, playback__target_uri=f"channel:{call.ivr_leg}", playback__state="done"
    )
    await stack.observer.hangup(call.caller_leg)
    ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=started["interaction_id"])
    assert ended["data"] == {"outcome": "abandoned", "hangup_by": "caller"}

    resp = await stack.client.get(
        "/api/customers", params={"phone": number}, headers={"Authorization": f"Bearer {stack.token}"}
    )
    assert resp.status == 200
    customer = await resp.json()
    assert customer["id"] == first["customer_id"]
    assert [(i["kind"], i["value"]) for i in customer["identities"]] == [("phone", "+34600112233")]

    call, started = await place(stack, "600112233", "")  # national format this time
    again = await stack.hilo_events.expect(
        "customer.identified", within=10, interaction_id=started["interaction_id"], data__new=False
    )
    assert again["customer_id"] == first["customer_id"]
    await stack.observer.hangup(call.caller_leg)
    await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=started["interaction_id"])
    assert await stack.pool.fetchval("SELECT count(*) FROM customers WHERE display_name IS NULL") == 1


async def test_wrong_key_is_retried_then_the_right_queue_is_chosen(stack: Stack) -> None:
    call, started = await place(stack, KNOWN_CALLER, "91")
    interaction = started["interaction_id"]
    await stack.hilo_events.expect_in_order(
        [
            ("ivr.input", {"interaction_id": interaction, "data__digit": "9", "data__valid": False}),
            ("ivr.menu", {"interaction_id": interaction, "data__attempt": 2}),
            ("ivr.input", {"interaction_id": interaction, "data__digit": "1", "data__valid": True}),
            ("routing.queued", {"interaction_id": interaction, "data__queue": "sales"}),
            ("agent.answered", {"interaction_id": interaction, "data__agent": "alice"}),
        ],
        within=30,
    )
    await stack.observer.hangup(call.caller_leg)
    await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)


async def test_a_number_without_a_flow_hears_an_apology_and_the_call_is_recorded(stack: Stack) -> None:
    call, started = await place(stack, KNOWN_CALLER, number="555")
    assert started["data"]["dialed"] == "555"
    await stack.hilo_events.expect("ivr.no_flow", within=5, interaction_id=started["interaction_id"])
    await stack.ari_events.expect(
        "PlaybackFinished", within=15, playback__target_uri=f"channel:{call.ivr_leg}", playback__state="done"
    )
    ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=started["interaction_id"])
    assert ended["data"] == {"outcome": "no-flow", "hangup_by": "system"}
