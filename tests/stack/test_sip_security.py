"""Someone who reaches Asterisk's SIP port, from an address of their own (127.0.0.64-127, never the stack's
127.0.0.1-3): they cannot register as an agent's phone (no password, a wrong one, even the right one for a
phone Asterisk reaches at a fixed address), nor pass for the carrier trunk by naming it; the agent's phone
keeps its one contact and a call to the agent's queue still rings the real phone, never theirs. Their failed
requests are counted, and after a few Asterisk refuses their address altogether (403 from its ACL) until the
block expires."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import random
import re
from collections.abc import AsyncIterator

import pytest

from asterisk.sip_guard import SipGuard
from tests.stack.calls import place
from tests.stack.conftest import Stack
from tests.stack.expect import eventually
from tests.stack.sip import SipPeer

ALICE_PHONE = "sip:agent-alice@127.0.0.1:5071"  # dialplans/phones.yaml: the SIPp phone stack/up.sh starts
BLOCK_S = 3


@pytest.fixture
async def quick_guard(stack: Stack) -> AsyncIterator[SipGuard]:
    """The test server's SIP guard, blocking after 4 failures for a few seconds (the server's defaults: 5 and
    15 minutes)."""
    guard = stack.services.sip_guard
    assert guard is not None, "the SIP guard runs in every server (HILO_SIP_GUARD)"
    saved = dataclasses.replace(guard.config)
    guard.config.block_after, guard.config.block_s, guard.config.check_s = 4, BLOCK_S, 0.2
    yield guard
    guard.config = saved
    for block in await guard.blocked():
        await guard.unblock(block.network)


def attacker_address(stack: Stack, network: str = "127.0.0.64/26") -> str:
    """An address of `network` that no Hilo on this Asterisk has blocked: a demo server (`make run`) hears
    the same security events as the tests' server and keeps its own list. (Other test files take other
    networks, so failures counted against one file's addresses never block another's.)"""
    assert stack.settings.asterisk_root is not None, "HILO_ASTERISK_ROOT (Asterisk's configuration) is needed"
    blocked = {
        match
        for path in (stack.settings.asterisk_root / "etc" / "asterisk").glob("hilo-sip-blocks.*.conf")
        for match in re.findall(r"^deny=([0-9.]+)/32$", path.read_text(), re.MULTILINE)
    }
    free = [str(a) for a in ipaddress.ip_network(network).hosts() if str(a) not in blocked]
    assert free, f"every address of {network} is blocked: {sorted(blocked)}"
    return random.choice(free)


async def contacts(stack: Stack, endpoint: str) -> list[str]:
    assert stack.services.ami is not None
    reply = await stack.services.ami.action({"Action": "PJSIPShowEndpoint", "Endpoint": endpoint})
    return sorted(str(m["URI"]) for m in reply if m.get("Event") == "ContactStatusDetail")


async def test_nobody_registers_as_an_agent_and_a_source_that_keeps_failing_is_refused(
    stack: Stack, quick_guard: SipGuard
) -> None:
    env = {**stack.env, **os.environ}
    secret = env.get("HILO_PHONE_SECRET_AGENT_ALICE")
    assert secret, "agent-alice's SIP password (make stack generates it into .run/env)"
    auth = {"Authorization": f"Bearer {stack.token}"}
    registry = stack.services.registry
    before = {
        e: registry.get_sample_value("hilo_sip_security_events_total", {"event": e}) or 0.0
        for e in ("ChallengeResponseFailed", "RequestNotSupported", "InvalidAccountID")
    }
    assert await contacts(stack, "agent-alice") == [ALICE_PHONE]
    peer = await SipPeer(attacker_address(stack), (stack.settings.sip_host, stack.settings.sip_port)).open()
    try:
        # No credentials: challenged. A wrong password: refused. Even the right one: a phone Asterisk reaches at
        # a fixed address takes no registration (403), so nobody adds a contact beside it.
        assert await peer.register("agent-alice") == [401]
        assert await peer.register("agent-alice", "not-alices-password") == [401, 401]
        assert await peer.register("agent-alice", secret) == [401, 403]
        # Naming the trunk in From is not being the trunk: trunks are recognised by their address only.
        assert await peer.invite_as("carrier-test") == 401
        assert await contacts(stack, "agent-alice") == [ALICE_PHONE]

        # A caller for sales still reaches alice's own phone, and nothing reaches the stranger.
        mark = stack.ari_events.mark()
        placed, started = await place(stack, "+34911000101", "1")
        interaction = started["interaction_id"]
        await stack.hilo_events.expect("agent.answered", within=20, interaction_id=interaction, data__agent="alice")
        await stack.ari_events.expect(
            "ChannelEnteredBridge", within=5, since=mark, channel__name=lambda n: n.startswith("PJSIP/agent-alice-")
        )
        await stack.observer.hangup(placed.caller_leg)
        await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
        assert peer.requests == []

        # Each refusal was counted (the wrong password, the registration, the unknown account).
        def counted() -> bool:
            now = {e: registry.get_sample_value("hilo_sip_security_events_total", {"event": e}) or 0 for e in before}
            return all(now[e] > before[e] for e in before)

        await eventually(counted, within=5, what=f"hilo_sip_security_events_total counted {sorted(before)}")
        # The fourth failure: Asterisk refuses the address before any endpoint sees it.
        assert await peer.register("agent-alice", "another-guess") == [401, 401]

        async def refused() -> bool:
            return await peer.register("agent-alice", within=1.0) in ([403], [None])

        await eventually(refused, within=10, what="the attacker's requests refused by Asterisk's ACL")
        resp = await stack.client.get("/api/sip/blocks", headers=auth)
        assert resp.status == 200
        assert [b["source"] for b in (await resp.json())["blocks"]] == [f"{peer.address}/32"]
        assert (registry.get_sample_value("hilo_sip_blocked_sources") or 0) >= 1

        # The block expires: challenged again, like anyone.
        async def challenged() -> bool:
            return await peer.register("agent-alice", within=1.0) == [401]

        await eventually(challenged, within=BLOCK_S + 15, what="the block expired")
        assert (await (await stack.client.get("/api/sip/blocks", headers=auth)).json())["blocks"] == []
        # Reloading Asterisk's SIP configuration did not disturb the phones.
        assert await contacts(stack, "agent-alice") == [ALICE_PHONE]
        endpoint = await stack.observer.request("GET", "/endpoints/PJSIP/agent-alice")
        assert endpoint["state"] == "online"
    finally:
        peer.close()
        with contextlib.suppress(Exception):
            await quick_guard.sync()


async def test_an_admin_lifts_a_block(stack: Stack, quick_guard: SipGuard) -> None:
    auth = {"Authorization": f"Bearer {stack.token}"}
    address = attacker_address(stack)
    peer = await SipPeer(address, (stack.settings.sip_host, stack.settings.sip_port)).open()
    try:
        await quick_guard.block(ipaddress.ip_network(f"{address}/32"), reason="test", seconds=120)
        assert await peer.register("agent-alice", within=1.0) in ([403], [None])
        assert (await stack.client.delete(f"/api/sip/blocks/{address}")).status == 401
        assert (await stack.client.delete(f"/api/sip/blocks/{address}", headers=auth)).status == 204
        assert await peer.register("agent-alice") == [401]
        resp = await stack.client.delete(f"/api/sip/blocks/{address}", headers=auth)
        assert resp.status == 404 and (await resp.json())["field"] == "address"
    finally:
        peer.close()
