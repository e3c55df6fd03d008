"""Merging the caller's customer record while the call is live: a caller new to Hilo (a customer made at the
start of the call) talks to the support agent when a supervisor merges that record into the customer it
really is. The call goes on undisturbed; the interaction, the agent's pop and the caller's number belong to
the survivor from then on, whose timeline tells the whole call; and undoing the merge later splits it exactly
(the whole call back with the customer it began with, nothing of it left with the survivor)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from server.simcall import SimCall, originate_sim_call
from tests.stack.conftest import NAMESPACE, Stack

ANA = "+34911222333"  # Ana García in dialplans/demo-customers.yaml
SECOND_PHONE = "+34 600 55 44 33"


async def api(stack: Stack, method: str, url: str, status: int, **kwargs: Any) -> Any:
    resp = await stack.client.request(method, url, headers={"Authorization": f"Bearer {stack.token}"}, **kwargs)
    body = await resp.json()
    assert resp.status == status, (method, url, resp.status, body)
    return body


async def place(stack: Stack, caller: str, digits: str) -> tuple[SimCall, str, dict[str, Any]]:
    mark = stack.hilo_events.mark()
    call = await originate_sim_call(stack.observer, "100", caller, digits, namespace=NAMESPACE)
    started = await stack.hilo_events.expect(
        "interaction.started", within=10, since=mark, data__channel_ref=call.ivr_leg
    )
    interaction = started["interaction_id"]
    identified = await stack.hilo_events.expect("customer.identified", within=10, interaction_id=interaction)
    return call, interaction, identified


def _of_call(timeline: dict[str, Any], interaction: str) -> list[str]:
    return [e["type"] for e in timeline["events"] if e["interaction_id"] == interaction]


async def test_merging_the_callers_record_during_the_call(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    ana = (await api(stack, "GET", "/api/customers", 200, params={"phone": ANA}))["id"]
    call, interaction, identified = await place(stack, SECOND_PHONE, "2")  # support
    assert identified["data"]["new"] is True
    newcomer = identified["customer_id"]
    await stack.hilo_events.expect("agent.answered", within=30, interaction_id=interaction, data__agent="bob")
    agent_leg = await stack.ari_events.expect(
        "ChannelEnteredBridge", within=5, channel__name=lambda n: n.startswith("PJSIP/agent-bob-")
    )

    merge = await api(
        stack, "POST", f"/api/customers/{ana}/merge", 201, json={"from": newcomer, "reason": "her second phone"}
    )
    # The call goes on: the agent's pop now shows the survivor, and the interaction is hers.
    pop = await api(stack, "GET", f"/console/api/interactions/{interaction}", 200)
    assert pop["customer"]["id"] == ana and pop["customer"]["name"], pop["customer"]
    assert (
        str(await stack.pool.fetchval("SELECT customer_id FROM interactions WHERE id = $1::uuid", interaction)) == ana
    )
    assert not [
        e for e in stack.ari_events.events[stack.ari_events.baseline :]
        if e["type"] == "ChannelDestroyed" and e["channel"]["id"] in (call.ivr_leg, agent_leg["channel"]["id"])
    ], "the merge disturbed the call"  # fmt: skip
    await stack.observer.hangup(call.caller_leg)
    ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    assert ended["data"] == {"outcome": "completed", "hangup_by": "caller"}
    row = await stack.pool.fetchrow("SELECT customer_id, outcome FROM interactions WHERE id = $1::uuid", interaction)
    assert row is not None and (str(row["customer_id"]), row["outcome"]) == (ana, "completed")
    # The survivor's timeline tells the whole call, what happened after the merge included, in order.
    whole = ["interaction.started", "customer.identified", "ivr.input", "routing.queued", "agent.answered",
             "agent.call_ended", "interaction.ended"]  # fmt: skip
    told = _of_call(await api(stack, "GET", f"/api/customers/{ana}/timeline", 200), interaction)
    assert [t for t in told if t in whole] == whole, told
    # The caller's second phone is hers now: the next call from it is recognised as Ana.
    again, again_id, identified = await place(stack, SECOND_PHONE, "")
    assert (identified["customer_id"], identified["data"]["new"]) == (ana, False)
    await stack.observer.hangup(again.caller_leg)
    await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=again_id)

    # Undone: the first call goes back whole to the customer it began with, and nothing of it stays with Ana.
    await api(stack, "POST", f"/api/merges/{merge['id']}/unmerge", 200)
    back = _of_call(await api(stack, "GET", f"/api/customers/{newcomer}/timeline", 200), interaction)
    assert [t for t in back if t in whole] == whole, back
    assert _of_call(await api(stack, "GET", f"/api/customers/{ana}/timeline", 200), interaction) == []
    assert str(await stack.pool.fetchval("SELECT customer_id FROM interactions WHERE id = $1::uuid", interaction)) == (
        newcomer
    )
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
