"""Real SIP calls that the other call tests do not make: keys sent the way carriers send them (RFC 4733
telephone-events in the RTP stream, as the trunk is configured: dtmf_mode=rfc4733), a caller who hangs up
before the answer (CANCEL) or while the agent's phone rings, and an agent's phone that answers 486 Busy."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from dialplans.models import Agent
from routing.engine import RoutingEngine
from server.simcall import originate_sim_call
from tests.stack.conftest import NAMESPACE, Stack
from tests.stack.expect import eventually
from tests.stack.lines import apply_line
from tests.stack.rtp_events import write_keys_pcap
from tests.stack.sipp import start_sipp

KEYS_NUMBER = "161"
KEYS_FLOW = """
flow: keys
language: en
start: menu
nodes:
  menu:
    kind: menu
    prompt: For your account press star.
    choices:
      "*": {label: Account, next: account}
    no_match: Sorry.
    no_input: Sorry.
    retries: 2
    timeout_s: 10
    fallback: bye
  account:
    kind: gather
    prompt: Type your account number, then hash.
    min_digits: 4
    max_digits: 8
    terminator: "#"
    timeout_s: 10
    into: account
    next: agent
    no_input: bye
  agent:
    kind: menu
    prompt: To speak to support press hash.
    choices:
      "#": {label: Support, next: support}
    no_match: Sorry.
    no_input: Sorry.
    retries: 2
    timeout_s: 10
    fallback: bye
  support: {kind: queue, queue: support}
  bye: {kind: hangup, text: Goodbye.}
"""

async def test_keys_sent_as_rfc4733_events_by_the_carrier_drive_the_ivr_to_the_agent(
    stack: Stack, tmp_path: Path
) -> None:
    await apply_line(stack, KEYS_NUMBER, {"keys": KEYS_FLOW})
    keys = "*1001##"  # a repeated key is a new event each time, not a repeat to drop
    write_keys_pcap(tmp_path / "keys.pcap", keys)
    mark, ari_mark = stack.hilo_events.mark(), stack.ari_events.mark()
    sipp = await start_sipp(stack, "caller_rfc4733_uac.xml", service=KEYS_NUMBER, cwd=tmp_path)
    try:
        started = await stack.hilo_events.expect("interaction.started", within=15, since=mark, data__dialed=KEYS_NUMBER)
        interaction, channel = started["interaction_id"], started["data"]["channel_ref"]
        await stack.hilo_events.expect_in_order(
            [
                ("ivr.input", {"interaction_id": interaction, "data__node": "menu", "data__digit": "*"}),
                ("ivr.input", {"interaction_id": interaction, "data__node": "account", "data__digits": "1001"}),
                ("ivr.input", {"interaction_id": interaction, "data__node": "agent", "data__digit": "#"}),
                ("routing.queued", {"interaction_id": interaction, "data__queue": "support"}),
                ("agent.answered", {"interaction_id": interaction, "data__agent": "bob"}),
            ],
            within=30,
        )
        assert not [
            e for e in stack.hilo_events.events[mark:]
            if e["type"] == "ivr.input" and e.get("interaction_id") == interaction and e["data"].get("valid") is False
        ], "a key the caller did not press was read"  # fmt: skip
        # Asterisk's word: it read every key from the SIP leg's RTP stream, in order, none lost or doubled.
        received = [
            (e["digit"], e["channel"]["name"].split("-0")[0])
            for e in stack.ari_events.events[ari_mark:]
            if e["type"] == "ChannelDtmfReceived" and e["channel"]["id"] == channel
        ]
        assert received == [(key, "PJSIP/carrier-test") for key in keys], received
        agent_leg = await stack.ari_events.expect(
            "ChannelEnteredBridge", within=5, since=ari_mark, channel__name=lambda n: n.startswith("PJSIP/agent-bob-")
        )
        await stack.observer.hangup(agent_leg["channel"]["id"])
        ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
        assert ended["data"] == {"outcome": "completed", "hangup_by": "agent"}
        status, output = await sipp.finished(within=30)
        assert status == 0, output
    finally:
        await sipp.stop()


def _ended_count(stack: Stack, outcome: str) -> float:
    return stack.services.registry.get_sample_value("hilo_calls_ended_total", {"outcome": outcome}) or 0.0


async def _cancelled_call(stack: Stack) -> tuple[int, bool]:
    """A SIP caller who sends CANCEL right after Asterisk's 100 Trying. The Hilo mark before it, and whether
    the call reached the Stasis app before the CANCEL ended it (else Asterisk ended it before Hilo knew)."""
    mark, ari_mark = stack.hilo_events.mark(), stack.ari_events.mark()
    sipp = await start_sipp(stack, "caller_cancel_uac.xml", service="100", timeout_s=20)
    try:
        status, output = await sipp.finished(within=30)
        assert status == 0, output  # the INVITE ended 487: cancelled, never answered
    finally:
        await sipp.stop()
    # Asterisk's word: the caller's channel came and went.
    created = await stack.ari_events.expect(
        "ChannelCreated", within=5, since=ari_mark, channel__name=lambda n: n.startswith("PJSIP/carrier-test-")
    )
    channel = created["channel"]["id"]
    await stack.ari_events.expect("ChannelDestroyed", within=5, since=ari_mark, channel__id=channel)
    calls = stack.services.calls
    assert calls is not None
    await eventually(lambda: not calls.tasks, within=5, what="no call task left")
    in_app = any(
        e["type"] == "ChannelDialplan" and e["channel"]["id"] == channel and e.get("dialplan_app") == "Stasis"
        for e in stack.ari_events.events[ari_mark:]
    )
    return mark, in_app


async def test_a_caller_who_hangs_up_before_the_answer_leaves_nothing_behind(stack: Stack) -> None:
    mark, _ = await _cancelled_call(stack)
    assert await stack.pool.fetchval("SELECT count(*) FROM interactions WHERE ended_at IS NULL") == 0
    # Depending on who is first, Asterisk ends the call before Hilo hears of it, Hilo's answer is refused, or
    # it is accepted a moment before the channel goes: then the interaction is the caller's abandon.
    events = stack.hilo_events.events[mark:]
    started = {e["interaction_id"] for e in events if e["type"] == "interaction.started"}
    ended = [e for e in events if e["type"] == "interaction.ended"]
    assert {e["interaction_id"] for e in ended} == started, events
    assert all(e["data"] == {"outcome": "abandoned", "hangup_by": "caller"} for e in ended), ended
    assert not [e for e in events if e["type"].startswith(("routing.", "agent."))], events


async def test_a_caller_who_hangs_up_before_the_answer_is_not_a_failed_call(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ivr")
    failed, abandoned = _ended_count(stack, "failed"), _ended_count(stack, "abandoned")
    # The case: the call reached the app and the CANCEL came before Hilo's answer (which is then refused, so no
    # interaction begins). Asterisk may also end the call before the app hears of it, or take the answer.
    for _ in range(5):
        mark, in_app = await _cancelled_call(stack)
        if in_app and not [e for e in stack.hilo_events.events[mark:] if e["type"] == "interaction.started"]:
            break
    else:
        pytest.fail("in 5 calls, no CANCEL came between the call reaching the app and Hilo's answer")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert (_ended_count(stack, "failed") - failed, _ended_count(stack, "abandoned") - abandoned) == (0, 1)


def engine_of(stack: Stack) -> RoutingEngine:
    assert stack.services.routing is not None
    return stack.services.routing


async def _sales_agent_on(stack: Stack, agent_id: str, endpoint: str) -> AsyncIterator[str]:
    """A sales agent, offered sales calls before alice (a higher level), whose phone is one of stack/up.sh's
    SIPp test phones."""
    engine = engine_of(stack)
    found = await stack.observer.request("GET", f"/endpoints/PJSIP/{endpoint}", missing_ok=True)
    if found is None:
        pytest.fail(f"Asterisk has no PJSIP/{endpoint} (dialplans/phones.yaml): run `make stack` again to add it")
    await engine.put_agent(
        Agent(id=agent_id, name=agent_id.title(), sip_endpoint=endpoint, queues=["sales"], skills={"sales": 9}),
        presence_if_new="available",
    )
    yield agent_id
    await engine.state.drop_agent(agent_id)
    await stack.pool.execute("DELETE FROM agent_states WHERE agent_id = $1", agent_id)
    await stack.pool.execute("DELETE FROM agents WHERE id = $1", agent_id)


@pytest.fixture
async def ringing_agent(stack: Stack) -> AsyncIterator[str]:
    """Dave, whose phone (agent-noanswer) rings and is never picked up."""
    async for agent_id in _sales_agent_on(stack, "dave", "agent-noanswer"):
        yield agent_id


@pytest.fixture
async def busy_agent(stack: Stack) -> AsyncIterator[str]:
    """Erin, whose phone (agent-busy) answers every call 486 Busy Here."""
    async for agent_id in _sales_agent_on(stack, "erin", "agent-busy"):
        yield agent_id


def _at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event.get("at") or event["timestamp"].replace("+0000", "+00:00"))


async def test_the_caller_hanging_up_while_the_agents_phone_rings_stops_the_ringing(
    stack: Stack, ringing_agent: str
) -> None:
    engine = engine_of(stack)
    mark, ari_mark = stack.hilo_events.mark(), stack.ari_events.mark()
    call = await originate_sim_call(stack.observer, "100", "+34911000101", "1", namespace=NAMESPACE)  # sales
    started = await stack.hilo_events.expect(
        "interaction.started", within=10, since=mark, data__channel_ref=call.ivr_leg
    )
    interaction = started["interaction_id"]
    await stack.hilo_events.expect("routing.offered", within=20, interaction_id=interaction, data__agent=ringing_agent)
    ringing = await stack.ari_events.expect(
        "ChannelStateChange", within=10, since=ari_mark, channel__state="Ringing",
        channel__name=lambda n: n.startswith("PJSIP/agent-noanswer-"),
    )  # fmt: skip
    await stack.observer.hangup(call.caller_leg)
    ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    assert ended["data"] == {"outcome": "abandoned", "hangup_by": "caller"}
    # Asterisk's word: the phone stopped ringing (CANCEL) at once, not at the ring timeout.
    stopped = await stack.ari_events.expect(
        "ChannelDestroyed", within=5, since=ari_mark, channel__id=ringing["channel"]["id"]
    )
    assert (_at(stopped) - _at(ringing)).total_seconds() < stack.settings.ring_timeout_s - 2
    # Not the agent's doing: dave is not rested, and nobody else was offered the call.
    events = [e for e in stack.hilo_events.events[mark:] if e.get("interaction_id") == interaction]
    assert [e["data"]["agent"] for e in events if e["type"] == "routing.offered"] == [ringing_agent]
    assert not [e for e in events if e["type"] in ("routing.not_answered", "agent.answered")]
    dave = await engine.agent(ringing_agent)
    assert (dave["state"], dave["presence"]) == ("available", "available"), dave
    routed = await stack.pool.fetchrow(
        "SELECT state, end_reason FROM routing_interactions WHERE interaction_id = $1::uuid", interaction
    )
    assert routed is not None and (routed["state"], routed["end_reason"]) == ("ended", "abandoned")
    offers = await stack.pool.fetch(
        "SELECT agent_id, outcome FROM routing_offers WHERE interaction_id = $1::uuid", interaction
    )
    assert [(o["agent_id"], o["outcome"]) for o in offers] == [(ringing_agent, "withdrawn")]


async def test_an_agent_whose_phone_answers_busy_is_rested_and_the_caller_goes_to_the_next(
    stack: Stack, busy_agent: str
) -> None:
    engine = engine_of(stack)
    mark, ari_mark = stack.hilo_events.mark(), stack.ari_events.mark()
    call = await originate_sim_call(stack.observer, "100", "+34911000102", "1", namespace=NAMESPACE)  # sales
    started = await stack.hilo_events.expect(
        "interaction.started", within=10, since=mark, data__channel_ref=call.ivr_leg
    )
    interaction = started["interaction_id"]
    offered, not_answered, _, _ = await stack.hilo_events.expect_in_order(
        [
            ("routing.offered", {"interaction_id": interaction, "data__agent": busy_agent}),
            ("routing.not_answered", {"interaction_id": interaction, "data__agent": busy_agent}),
            ("routing.offered", {"interaction_id": interaction, "data__agent": "alice"}),
            ("agent.answered", {"interaction_id": interaction, "data__agent": "alice"}),
        ],
        within=20,
    )
    # Asterisk's word: erin's phone said busy (cause 17, user busy); Hilo moved on at once, not at the ring timeout.
    busy = await stack.ari_events.expect(
        "ChannelDestroyed", within=5, since=ari_mark, channel__name=lambda n: n.startswith("PJSIP/agent-busy-")
    )
    assert busy["cause"] == 17, busy
    assert (_at(not_answered) - _at(offered)).total_seconds() < stack.settings.ring_timeout_s - 2
    erin = await engine.agent(busy_agent)
    assert erin["presence"] == "away", erin  # rested like an agent who does not answer: their phone is busy
    await stack.observer.hangup(call.caller_leg)
    ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    assert ended["data"] == {"outcome": "completed", "hangup_by": "caller"}
