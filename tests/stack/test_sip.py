"""A real SIP INVITE into PJSIP: SIPp plays a carrier's caller, presses 2 with SIP INFO, reaches the
support agent (another SIPp, answering agent-bob's endpoint), and gets a BYE when the call ends."""

from __future__ import annotations

import asyncio
import shutil

from hilo.settings import REPO_ROOT
from tests.stack.conftest import Stack


async def test_sip_invite_from_the_carrier_reaches_the_support_agent(stack: Stack) -> None:
    assert shutil.which("sipp"), "SIPp (Debian package sip-tester) is needed; `make stack` installs it"
    mark = stack.hilo_events.mark()
    sipp = await asyncio.create_subprocess_exec(
        "sipp",
        f"{stack.settings.sip_host}:{stack.settings.sip_port}",
        "-sf", str(REPO_ROOT / "tests" / "sipp" / "caller_uac.xml"),
        "-i", "127.0.0.3",  # the test carrier's address: Asterisk's carrier-test endpoint, Stasis app hilo-test
        "-p", "0",
        "-ci", "127.0.0.3",  # SIPp's control socket, else on all addresses
        "-s", "100",
        "-m", "1",
        "-set", "caller", "+34911222333",
        "-set", "digit", "2",
        "-timeout", "60s",
        "-timeout_error",
        "-nostdin",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        started = await stack.hilo_events.expect("interaction.started", within=15, since=mark, data__dialed="100")
        interaction = started["interaction_id"]
        await stack.hilo_events.expect_in_order(
            [
                ("customer.identified", {"interaction_id": interaction, "data__new": False}),
                ("ivr.input", {"interaction_id": interaction, "data__digit": "2", "data__valid": True}),
                ("agent.answered", {"interaction_id": interaction, "data__agent": "bob"}),
            ],
            within=30,
        )
        # Asterisk's word: the caller's channel is the SIP one from the test trunk, bridged with the agent.
        await stack.ari_events.expect(
            "ChannelEnteredBridge", within=5, channel__id=started["data"]["channel_ref"],
            channel__name=lambda n: n.startswith("PJSIP/carrier-test-"),
        )  # fmt: skip
        agent_leg = await stack.ari_events.expect(
            "ChannelEnteredBridge", within=5, channel__name=lambda n: n.startswith("PJSIP/agent-bob-")
        )
        # The agent hangs up; the caller's SIPp must receive a BYE and finish cleanly.
        await stack.observer.hangup(agent_leg["channel"]["id"])
        ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
        assert ended["data"] == {"outcome": "completed", "hangup_by": "agent"}
        output, _ = await asyncio.wait_for(sipp.communicate(), 30)
        assert sipp.returncode == 0, output.decode(errors="replace")[-2000:]
    finally:
        if sipp.returncode is None:
            sipp.kill()
            await sipp.wait()
