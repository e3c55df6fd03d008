"""The ARI link survives a dropped socket and an Asterisk restart."""

from __future__ import annotations

import asyncio

from hilo.settings import REPO_ROOT
from tests.stack.conftest import Stack
from tests.stack.test_calls import KNOWN_CALLER, place


async def test_call_continues_after_the_events_socket_drops(stack: Stack) -> None:
    assert stack.services.ari is not None
    call, started = await place(stack, KNOWN_CALLER, "", in_app=True)
    interaction = started["interaction_id"]
    await stack.hilo_events.expect("ivr.menu", within=10, interaction_id=interaction)
    before = stack.services.ari.connections
    await stack.services.ari.drop_connection()
    await stack.services.ari.wait_for_connection(before + 1, timeout=10)
    # The call is still ours after the resync: the caller's key now reaches the agent.
    await stack.observer.send_dtmf(call.caller_leg, "2")
    await stack.hilo_events.expect("agent.answered", within=30, interaction_id=interaction, data__agent="bob")
    await stack.observer.hangup(call.caller_leg)
    ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    assert ended["data"]["outcome"] == "completed"


async def test_asterisk_restart_ends_calls_cleanly_and_the_client_recovers(stack: Stack) -> None:
    assert stack.services.ari is not None
    call, started = await place(stack, KNOWN_CALLER, "")
    interaction = started["interaction_id"]
    await stack.hilo_events.expect("ivr.menu", within=10, interaction_id=interaction)
    before = stack.services.ari.connections

    restart = await asyncio.create_subprocess_exec(
        "bash", str(REPO_ROOT / "stack" / "asterisk.sh"), "restart",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(restart.communicate(), 120)
    assert restart.returncode == 0, output.decode(errors="replace")[-2000:]

    # The call that was in the IVR is ended, not left open: Asterisk lost it, so Hilo records a drop.
    ended = await stack.hilo_events.expect("interaction.ended", within=30, interaction_id=interaction)
    assert ended["data"] == {"outcome": "dropped", "hangup_by": "system"}
    await stack.services.ari.wait_for_connection(before + 1, timeout=30)
    await stack.observer.wait_connected(30)
    assert stack.services.ami is not None
    await asyncio.wait_for(stack.services.ami.logged_in.wait(), 30)
    await asyncio.wait_for(stack.services.ami.fully_booted.wait(), 30)  # AMI's event stream is back too
    resp = await stack.client.get("/healthz")
    assert resp.status == 200, await resp.text()

    # And new calls work again.
    call, started = await place(stack, KNOWN_CALLER, "2")
    await stack.hilo_events.expect("agent.answered", within=30, interaction_id=started["interaction_id"])
    await stack.observer.hangup(call.caller_leg)
    await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=started["interaction_id"])
