"""A supervisor on a real call: listen, whisper and barge measured on the audio each leg hears, hold and
unhold from the API with their timeline events, moving a waiting interaction, and the audit of it all.

The caller (a Local channel) sends a steady 400 Hz tone as if talking; the supervisor's phone
(Local/tone-1400@hilo-phone-sim) a steady 1400 Hz. What each leg hears is recorded by a snoop (spy=out) on
that leg's channel and the two tones are measured in it."""

from __future__ import annotations

from pathlib import Path

from server.simcall import SimCall
from tests.stack.audio import Heard, record_what_it_hears
from tests.stack.calls import hang_up, place
from tests.stack.conftest import NAMESPACE, Stack
from tests.stack.test_screenpop import bearer, sign_in

KNOWN_CALLER = "+34911222333"
CALLER_HZ, SUPERVISOR_HZ = 400, 1400
SUPERVISOR_PHONE = f"Local/tone-{SUPERVISOR_HZ}@hilo-phone-sim"
HEARD = 500.0  # amplitude above which a tone is heard (PlayTones sends about 3,500)
NOT_HEARD = 5.0  # below which it is not there at all (silence measures under 1)


async def call_with_bob(stack: Stack) -> tuple[SimCall, str, str]:
    """A caller who talks (400 Hz), through the demo flow's support choice, bridged with bob."""
    call, started = await place(stack, KNOWN_CALLER, "2", tone=str(CALLER_HZ))
    interaction = started["interaction_id"]
    await stack.hilo_events.expect("agent.answered", within=30, interaction_id=interaction)
    assert stack.services.calls is not None
    agent_leg = stack.services.calls.live.get(interaction).agent.id
    return call, interaction, agent_leg


async def both_legs(stack: Stack, call: SimCall, agent_leg: str, folder: Path) -> tuple[Heard, Heard]:
    caller = await record_what_it_hears(stack.observer, stack.ari_events, call.ivr_leg, 2, folder)
    agent = await record_what_it_hears(stack.observer, stack.ari_events, agent_leg, 2, folder)
    assert caller.seconds >= 1.5 and agent.seconds >= 1.5, (caller.seconds, agent.seconds)  # each ear was open
    return caller, agent


async def test_whisper_reaches_the_agent_only_listen_nobody_barge_both(stack: Stack, tmp_path: Path) -> None:
    call, interaction, agent_leg = await call_with_bob(stack)
    supervisor = await sign_in(stack, "sup-whisper", "supervisor", teams=["back-office"])  # bob's team

    # Before anyone supervises: the agent hears the caller, nobody hears 1400 Hz.
    caller_ear, agent_ear = await both_legs(stack, call, agent_leg, tmp_path)
    assert agent_ear.amplitude(CALLER_HZ) > HEARD, agent_ear.amplitude(CALLER_HZ)
    assert agent_ear.amplitude(SUPERVISOR_HZ) < NOT_HEARD

    resp = await stack.client.post(
        f"/api/calls/{interaction}/supervision",
        json={"mode": "listen", "phone": SUPERVISOR_PHONE},
        headers=bearer(supervisor),
    )
    assert resp.status == 201, await resp.text()
    supervision = (await resp.json())["id"]
    phone_leg = f"{NAMESPACE}-supervisor-{supervision}"
    await stack.ari_events.expect("ChannelEnteredBridge", within=5, channel__id=phone_leg)

    caller_ear, agent_ear = await both_legs(stack, call, agent_leg, tmp_path)
    assert agent_ear.amplitude(SUPERVISOR_HZ) < NOT_HEARD, "listen: the agent must not hear the supervisor"
    assert caller_ear.amplitude(SUPERVISOR_HZ) < NOT_HEARD, "listen: the caller must not hear the supervisor"

    resp = await stack.client.patch(
        f"/api/supervisions/{supervision}", json={"mode": "whisper"}, headers=bearer(supervisor)
    )
    assert (resp.status, (await resp.json())["mode"]) == (200, "whisper")
    caller_ear, agent_ear = await both_legs(stack, call, agent_leg, tmp_path)
    assert agent_ear.amplitude(SUPERVISOR_HZ) > HEARD, "whisper: the agent hears the supervisor"
    assert agent_ear.amplitude(CALLER_HZ) > HEARD, "whisper: and still the caller"
    assert caller_ear.amplitude(SUPERVISOR_HZ) < NOT_HEARD, "whisper: the caller must not hear the supervisor"

    resp = await stack.client.patch(
        f"/api/supervisions/{supervision}", json={"mode": "barge"}, headers=bearer(supervisor)
    )
    assert resp.status == 200
    caller_ear, agent_ear = await both_legs(stack, call, agent_leg, tmp_path)
    # The same measurement on the caller's leg does hear the supervisor once they barge in.
    assert caller_ear.amplitude(SUPERVISOR_HZ) > HEARD, "barge: the caller hears the supervisor"
    assert agent_ear.amplitude(SUPERVISOR_HZ) > HEARD, "barge: the agent hears the supervisor"

    resp = await stack.client.delete(f"/api/supervisions/{supervision}", headers=bearer(supervisor))
    assert (resp.status, (await resp.json())["active"]) == (200, False)
    await stack.ari_events.expect("ChannelDestroyed", within=5, channel__id=phone_leg)
    ended = await hang_up(stack, call, interaction)
    assert ended["data"]["outcome"] == "completed"

    resp = await stack.client.get(
        "/api/audit/supervisor-actions", params={"target": interaction}, headers=bearer(supervisor)
    )
    actions = (await resp.json())["actions"]
    assert [(a["actor"], a["actor_role"], a["action"], a["ok"]) for a in actions] == [
        ("user:sup-whisper@api", "supervisor", "listen", True)
    ]
    assert actions[0]["detail"]["phone"] == SUPERVISOR_PHONE
    resp = await stack.client.get(
        "/api/audit/supervisor-actions", params={"target": supervision}, headers=bearer(supervisor)
    )
    assert [a["action"] for a in (await resp.json())["actions"]] == ["supervision-end", "barge", "whisper"]


async def test_supervision_of_a_call_that_is_not_live_is_refused_and_audited(stack: Stack) -> None:
    supervisor = await sign_in(stack, "sup-refused", "supervisor")
    agent = await sign_in(stack, "agent-refused", "agent", "bob")
    nowhere = "00000000-0000-4000-8000-000000000001"
    body = {"mode": "whisper", "phone": SUPERVISOR_PHONE}
    resp = await stack.client.post(f"/api/calls/{nowhere}/supervision", json=body, headers=bearer(supervisor))
    assert (resp.status, (await resp.json())["field"]) == (409, "interaction_id")
    assert (
        await stack.client.post(f"/api/calls/{nowhere}/supervision", json=body, headers=bearer(agent))
    ).status == 403
    bad = {"mode": "whisper", "phone": "SIP/evil;x"}
    resp = await stack.client.post(f"/api/calls/{nowhere}/supervision", json=bad, headers=bearer(supervisor))
    assert (resp.status, (await resp.json())["field"]) == (400, "phone")
    rows = await stack.pool.fetch("SELECT actor, action, ok, detail FROM supervisor_actions ORDER BY id")
    assert [(r["actor"], r["action"], r["ok"], r["detail"]["reason"]) for r in rows] == [
        ("user:sup-refused@api", "whisper", False, "not_here")
    ]


async def test_hold_and_unhold_from_the_api_are_on_the_timeline_and_audited(stack: Stack, tmp_path: Path) -> None:
    call, interaction, agent_leg = await call_with_bob(stack)
    bob = await sign_in(stack, "bob-hold", "agent", "bob")
    alice = await sign_in(stack, "alice-hold", "agent", "alice")
    assert (await stack.client.post(f"/api/calls/{interaction}/hold", headers=bearer(alice))).status == 403

    resp = await stack.client.post(f"/api/calls/{interaction}/hold", headers=bearer(bob))
    assert (resp.status, await resp.json()) == (200, {"interaction_id": interaction, "held": True, "changed": True})
    await stack.hilo_events.expect("call.held", within=5, interaction_id=interaction, data__by="user:bob-hold@api")
    await stack.ari_events.expect("ChannelLeftBridge", within=5, channel__id=call.ivr_leg)
    _, agent_ear = await both_legs(stack, call, agent_leg, tmp_path)
    assert agent_ear.amplitude(CALLER_HZ) < NOT_HEARD, "on hold: the agent no longer hears the caller"
    again = await stack.client.post(f"/api/calls/{interaction}/hold", headers=bearer(bob))
    assert (await again.json())["changed"] is False

    mark = stack.ari_events.mark()
    resp = await stack.client.post(f"/api/calls/{interaction}/unhold", headers=bearer(bob))
    assert (resp.status, (await resp.json())["held"]) == (200, False)
    await stack.hilo_events.expect("call.unheld", within=5, interaction_id=interaction)
    await stack.ari_events.expect("ChannelEnteredBridge", within=5, since=mark, channel__id=call.ivr_leg)
    _, agent_ear = await both_legs(stack, call, agent_leg, tmp_path)
    assert agent_ear.amplitude(CALLER_HZ) > HEARD, "back: the agent hears the caller again"

    await stack.client.post(f"/api/calls/{interaction}/hold", headers=bearer(bob))
    await hang_up(stack, call, interaction)  # hung up on hold: the hold lasts until the agent's end
    await stack.hilo_events.expect("agent.call_ended", within=5, interaction_id=interaction)
    rows = await stack.pool.fetch(
        "SELECT actor, action, ok, detail ->> 'changed' AS changed FROM supervisor_actions ORDER BY id"
    )
    assert [(r["actor"], r["action"], r["ok"], r["changed"]) for r in rows] == [
        ("user:alice-hold@api", "hold", False, None),  # another agent's call: refused, and audited
        ("user:bob-hold@api", "hold", True, "true"),
        ("user:bob-hold@api", "hold", True, "false"),
        ("user:bob-hold@api", "unhold", True, "true"),
        ("user:bob-hold@api", "hold", True, "true"),
    ]
    gone = await stack.client.post(f"/api/calls/{interaction}/unhold", headers=bearer(bob))
    assert gone.status == 409


async def test_a_supervisor_setting_an_agents_state_is_audited(stack: Stack) -> None:
    supervisor = await sign_in(stack, "sup-states", "supervisor", teams=["front-office"])  # alice's team
    resp = await stack.client.post("/api/agents/alice/state", json={"state": "away"}, headers=bearer(supervisor))
    assert resp.status == 200
    assert stack.services.board is not None
    assert (await stack.services.board.agent("alice"))["state"] == "away"
    missing = await stack.client.post("/api/agents/nobody/state", json={"state": "away"}, headers=bearer(supervisor))
    assert missing.status == 404
    resp = await stack.client.get("/api/audit/supervisor-actions", headers=bearer(supervisor))
    actions = [(a["actor"], a["action"], a["target_id"], a["ok"], a["detail"]) for a in (await resp.json())["actions"]]
    assert actions == [
        ("user:sup-states@api", "agent-state", "nobody", False, {"state": "away"}),
        ("user:sup-states@api", "agent-state", "alice", True, {"state": "away"}),
    ]
