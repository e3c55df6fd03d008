"""An agent whose SIP phone stops answering is not offered calls, and comes back when it answers again.

Bob's SIPp phone is frozen (SIGSTOP): Asterisk's OPTIONS go unanswered, the endpoint goes offline, Hilo
takes bob out of routing; a support call waits; the phone is thawed, bob is back and gets the call."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import datetime, timedelta

from dialplans.models import load_routing
from hilo.settings import REPO_ROOT
from routing.presence import PHONE_UNREACHABLE
from tests.stack.conftest import Stack
from tests.stack.expect import eventually
from tests.stack.test_calls import KNOWN_CALLER, place

BOB_PID_FILE = REPO_ROOT / ".run" / "sipp" / "agent-bob.pid"
OFFER_WOULD_COME_S = 2.0  # an available agent is offered a queued interaction within milliseconds
SAME_CHANGE = timedelta(milliseconds=200)  # two ARI events of one state change, stamped a moment apart


def _instant(text: str) -> datetime:
    """Hilo's ISO times and Asterisk's (`2026-12-07T21:27:17.123+0000`): the same clock, this machine's."""
    return datetime.fromisoformat(text.replace("+0000", "+00:00"))


async def _agent_becomes(stack: Stack, agent: str, within: float = 5, **fields: str) -> None:
    """Routing's view of the agent, asked until it matches (the change follows the ARI event at once)."""
    assert stack.services.routing is not None

    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    seen: dict[str, str | None] = {}
    while loop.time() < deadline:
        seen = {k: (await stack.services.routing.agent(agent)).get(k) for k in fields}
        if seen == fields:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"agent {agent}: expected {fields} within {within}s, still {seen}")


async def test_an_unreachable_phone_takes_its_agent_out_of_routing_until_it_answers(stack: Stack) -> None:
    assert stack.services.board is not None
    pid = int(BOB_PID_FILE.read_text().strip())
    os.kill(pid, signal.SIGSTOP)
    try:
        # Asterisk's qualify gives up on the phone (the observer sees it as the peer going unreachable).
        await stack.ari_events.expect(
            "PeerStatusChange", within=20, endpoint__resource="agent-bob", endpoint__state="offline"
        )
        await _agent_becomes(stack, "bob", presence="offline", reason=PHONE_UNREACHABLE)
        call, started = await place(stack, KNOWN_CALLER, "2")  # support: bob is its only agent
        interaction = started["interaction_id"]
        await stack.hilo_events.expect("routing.queued", within=20, interaction_id=interaction)
        # Not offered while the phone is gone: bob, the queue's only agent, would be offered it at once.
        await stack.hilo_events.expect_none("routing.offered", within=OFFER_WOULD_COME_S, interaction_id=interaction)
    finally:
        os.kill(pid, signal.SIGCONT)
    online = await stack.ari_events.expect(
        "PeerStatusChange", within=20, endpoint__resource="agent-bob", endpoint__state="online"
    )
    # The first offer comes once the phone answers again, and none before it did.
    offered = await stack.hilo_events.expect(
        "routing.offered", within=20, interaction_id=interaction, data__agent="bob"
    )
    # (Hilo follows the endpoint's EndpointStateChange, which Asterisk sends with this one, in either order)
    assert _instant(offered["at"]) >= _instant(online["timestamp"]) - SAME_CHANGE
    await stack.hilo_events.expect("agent.answered", within=15, interaction_id=interaction)
    await stack.observer.hangup(call.caller_leg)
    await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)


async def test_the_call_app_follows_no_endpoint_and_presence_only_the_agents_phones(stack: Stack) -> None:
    """Asterisk's word on the subscriptions: the call app follows no endpoint (ARI would send it each event of
    every SIP channel a second time), presence's own app follows each agent's phone, for its state alone."""
    ari = stack.services.ari
    assert ari is not None
    agents = sorted(f"PJSIP/{a.sip_endpoint}" for a in load_routing(stack.settings.dialplans_dir).agents)

    async def subscriptions() -> tuple[list[str], list[str], list[dict[str, str]]] | None:
        apps = {a["name"]: a for a in await stack.observer.request("GET", "/applications")}
        call_app, presence = apps.get(ari.app), apps.get(f"{ari.app}-presence")
        if call_app is None or presence is None or sorted(presence["endpoint_ids"]) != agents:
            return None  # the resync at connection not done yet
        return call_app["endpoint_ids"], presence["endpoint_ids"], presence["events_allowed"]

    call_endpoints, _, allowed = await eventually(subscriptions, within=5, what="presence subscribed")
    assert call_endpoints == []
    assert allowed == [{"type": "EndpointStateChange"}]
