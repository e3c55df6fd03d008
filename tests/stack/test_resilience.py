"""The ARI link survives a dropped socket and an Asterisk restart."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from hilo.settings import REPO_ROOT
from tests.stack.conftest import Stack
from tests.stack.faults import FaultReport, calls_up_during, kept_by_callers, outcomes, timeline_missing
from tests.stack.test_calls import KNOWN_CALLER, place

pytestmark = pytest.mark.fault
# What a call's timeline has, whatever happened to it.
OPENED_AND_CLOSED = ("interaction.started", "interaction.ended")


async def test_call_continues_after_the_events_socket_drops(stack: Stack, fault_report: FaultReport) -> None:
    assert stack.services.ari is not None
    mark = stack.hilo_events.mark()
    call, started = await place(stack, KNOWN_CALLER, "", in_app=True)
    interaction = started["interaction_id"]
    await stack.hilo_events.expect("ivr.menu", within=10, interaction_id=interaction)
    before = stack.services.ari.connections
    began = datetime.now(UTC)
    await stack.services.ari.drop_connection()
    await stack.services.ari.wait_for_connection(before + 1, timeout=10)
    in_flight = await calls_up_during(stack.pool, began, datetime.now(UTC))
    # The call is still ours after the resync: the caller's key now reaches the agent.
    await stack.observer.send_dtmf(call.caller_leg, "2")
    await stack.hilo_events.expect("agent.answered", within=30, interaction_id=interaction, data__agent="bob")
    await stack.observer.hangup(call.caller_leg)
    ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    assert ended["data"]["outcome"] == "completed"
    fault = fault_report.fault("ARI events socket dropped")
    fault.calls(in_flight=len(in_flight), kept=await kept_by_callers(stack.pool, in_flight))
    fault.timeline(
        *await timeline_missing(
            stack.pool,
            stack.hilo_events.events[mark:],
            {interaction: (*OPENED_AND_CLOSED, "ivr.menu", "agent.answered")},
        )
    )


async def test_asterisk_restart_ends_calls_cleanly_and_the_client_recovers(
    stack: Stack, fault_report: FaultReport
) -> None:
    assert stack.services.ari is not None
    mark = stack.hilo_events.mark()
    call, started = await place(stack, KNOWN_CALLER, "")
    interaction = started["interaction_id"]
    await stack.hilo_events.expect("ivr.menu", within=10, interaction_id=interaction)
    before = stack.services.ari.connections
    began = datetime.now(UTC)

    restart = await asyncio.create_subprocess_exec(
        "bash", str(REPO_ROOT / "stack" / "asterisk.sh"), "restart",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(restart.communicate(), 120)
    assert restart.returncode == 0, output.decode(errors="replace")[-2000:]

    # The call that was in the IVR is ended, not left open: Asterisk lost it, so Hilo records a drop.
    ended = await stack.hilo_events.expect("interaction.ended", within=30, interaction_id=interaction)
    assert ended["data"] == {"outcome": "dropped", "hangup_by": "system"}
    in_flight = await calls_up_during(stack.pool, began, datetime.now(UTC))
    # Asterisk carries the call's media: its restart ends the call, which Hilo must have on record as dropped
    # (cut), not left open or forgotten (lost).
    cut = list((await outcomes(stack.pool, in_flight)).values()).count(("dropped", "system"))
    fault = fault_report.fault("Asterisk restarted")
    fault.calls(in_flight=len(in_flight), kept=await kept_by_callers(stack.pool, in_flight), cut=cut)
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
    fault.timeline(
        *await timeline_missing(
            stack.pool,
            stack.hilo_events.events[mark:],
            {interaction: OPENED_AND_CLOSED, started["interaction_id"]: (*OPENED_AND_CLOSED, "agent.answered")},
        )
    )
