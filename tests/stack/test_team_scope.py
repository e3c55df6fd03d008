"""A supervisor acts on their teams' work only (routing/scope.py), on the real stack: on a live call of bob
(back-office), a front-office supervisor is refused every action (listen, hold, transfer, bob's state, a
supervision in progress) and bob's supervisor is allowed; attended transfers by a supervisor and by the admin
token name who did them on the timeline; pops (the live feed, reading, wrapping up), chats, moving a waiting
caller, routing's records, KPIs and alerts are cut to the teams. Every refusal is a 403 with the reason and
an audit row (ok false, the actor in the one form); every transfer is audited, done or refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from reports.monitor import WallboardMonitor
from tests.stack.calls import KNOWN_CALLER, hang_up, place
from tests.stack.conftest import NAMESPACE, Stack
from tests.stack.test_conversations import HOLD, visitor
from tests.stack.test_kpis import kpi_monitor, scripted_day  # noqa: F401 (fixture)
from tests.stack.test_screenpop import bearer, console_feed, offered_interaction, sign_in
from tests.stack.test_supervision import call_with_bob

FRONT, BACK, BOTH = ["front-office"], ["back-office"], ["front-office", "back-office"]
PHONE = "Local/silent@hilo-phone-sim"
OUTSIDE_FRONT = "is outside your teams (front-office)"
OUTSIDE_BACK = "is outside your teams (back-office)"


async def post(stack: Stack, url: str, token: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    resp = await stack.client.post(url, json=body, headers=bearer(token))
    return resp.status, await resp.json()


async def get(stack: Stack, url: str, token: str, **params: str) -> tuple[int, Any]:
    resp = await stack.client.get(url, params=params, headers=bearer(token))
    return resp.status, await resp.json()


async def audit_rows(stack: Stack) -> list[tuple[str, str, str, bool]]:
    rows = await stack.pool.fetch("SELECT actor, action, target_kind, ok FROM supervisor_actions ORDER BY id")
    return [(r["actor"], r["action"], r["target_kind"], r["ok"]) for r in rows]


async def reasons(stack: Stack) -> list[str | None]:
    rows = await stack.pool.fetch("SELECT detail FROM supervisor_actions ORDER BY id")
    return [r["detail"].get("reason") for r in rows]


async def test_live_actions_on_a_call_are_for_the_supervisors_of_its_agent(stack: Stack) -> None:
    call, interaction, _ = await call_with_bob(stack)
    front = await sign_in(stack, "front-sup", "supervisor", teams=FRONT)
    back = await sign_in(stack, "back-sup", "supervisor", teams=BACK)
    teamless = await sign_in(stack, "teamless-sup", "supervisor")
    alice = await sign_in(stack, "alice-agent", "agent", "alice")
    calls = f"/api/calls/{interaction}"
    listen = {"mode": "listen", "phone": PHONE}

    # Refused, each with its reason, and nothing rings or changes.
    status, body = await post(stack, f"{calls}/supervision", front, listen)
    assert (status, body["reason"], body["field"]) == (403, f"this call {OUTSIDE_FRONT}", "interaction_id")
    status, body = await post(stack, f"{calls}/supervision", teamless, listen)
    assert status == 403 and "you supervise no team" in body["reason"], body
    assert (await post(stack, f"{calls}/hold", front))[0] == 403
    status, body = await post(stack, f"{calls}/hold", alice)  # an agent, another agent's call
    assert status == 403 and "not yours" in body["reason"], body
    assert (await post(stack, f"{calls}/transfer", front, {"kind": "blind", "to_queue": "sales"}))[0] == 403
    status, body = await post(stack, "/api/agents/bob/state", front, {"state": "away"})
    assert (status, body["reason"]) == (403, f"agent bob {OUTSIDE_FRONT}")
    assert stack.services.board is not None
    assert (await stack.services.board.agent("bob"))["state"] == "busy"
    assert stack.services.calls is not None and not stack.services.calls.supervisions.active

    # Allowed for bob's supervisor; a supervision in progress is theirs to change and end, not front's.
    status, body = await post(stack, f"{calls}/supervision", back, listen)
    assert status == 201, body
    supervision = body["id"]
    assert (await get(stack, "/api/supervisions", front))[1]["supervisions"] == []
    assert [s["id"] for s in (await get(stack, "/api/supervisions", back))[1]["supervisions"]] == [supervision]
    resp = await stack.client.patch(f"/api/supervisions/{supervision}", json={"mode": "whisper"}, headers=bearer(front))
    assert resp.status == 403
    assert (await stack.client.delete(f"/api/supervisions/{supervision}", headers=bearer(front))).status == 403
    unknown = str(uuid.uuid4())
    resp = await stack.client.patch(f"/api/supervisions/{unknown}", json={"mode": "barge"}, headers=bearer(back))
    assert resp.status == 404
    assert (await stack.client.delete(f"/api/supervisions/{unknown}", headers=bearer(back))).status == 404
    assert (await stack.client.delete(f"/api/supervisions/{supervision}", headers=bearer(back))).status == 200
    await stack.ari_events.expect("ChannelDestroyed", within=5, channel__id=f"{NAMESPACE}-supervisor-{supervision}")
    assert (await post(stack, f"{calls}/hold", back))[0] == 200
    assert (await post(stack, f"{calls}/unhold", back))[0] == 200

    # bob's supervisor hands the call on: recorded as theirs, not as bob's own act.
    status, body = await post(stack, f"{calls}/transfer", back, {"kind": "blind", "to_queue": "sales"})
    assert (status, body["state"]) == (200, "transferred"), body
    moved = await stack.hilo_events.expect("routing.transferred", within=5, interaction_id=interaction)
    assert moved["data"] == {"kind": "blind", "from_agent": "bob", "to_queue": "sales", "by": "user:back-sup@api"}
    await stack.hilo_events.expect("agent.answered", within=20, interaction_id=interaction, data__agent="alice")
    await hang_up(stack, call, interaction)

    assert await audit_rows(stack) == [
        ("user:front-sup@api", "listen", "interaction", False),
        ("user:teamless-sup@api", "listen", "interaction", False),
        ("user:front-sup@api", "hold", "interaction", False),
        ("user:alice-agent@api", "hold", "interaction", False),
        ("user:front-sup@api", "transfer", "interaction", False),
        ("user:front-sup@api", "agent-state", "agent", False),
        ("user:back-sup@api", "listen", "interaction", True),
        ("user:front-sup@api", "whisper", "supervision", False),
        ("user:front-sup@api", "supervision-end", "supervision", False),
        ("user:back-sup@api", "barge", "supervision", False),
        ("user:back-sup@api", "supervision-end", "supervision", False),
        ("user:back-sup@api", "supervision-end", "supervision", True),
        ("user:back-sup@api", "hold", "interaction", True),
        ("user:back-sup@api", "unhold", "interaction", True),
        ("user:back-sup@api", "transfer", "interaction", True),
    ]
    said = await reasons(stack)
    assert said[0] == f"this call {OUTSIDE_FRONT}" and "you supervise no team" in str(said[1])
    assert "not yours" in str(said[3]) and said[5] == f"agent bob {OUTSIDE_FRONT}"
    assert said[7] == said[8] == f"this supervision's call {OUTSIDE_FRONT}"
    assert str(said[9]).startswith("unknown") and str(said[10]).startswith("unknown")
    done = await stack.pool.fetchval("SELECT detail FROM supervisor_actions WHERE action = 'transfer' AND ok")
    assert done == {"kind": "blind", "to_queue": "sales", "agent": "bob", "state": "transferred"}


async def test_attended_transfers_by_the_admin_and_a_supervisor_name_who_did_them(stack: Stack) -> None:
    call, interaction, _ = await call_with_bob(stack)
    back = await sign_in(stack, "back-sup", "supervisor", teams=BACK)
    front = await sign_in(stack, "front-sup", "supervisor", teams=FRONT)
    calls = f"/api/calls/{interaction}"
    consult = {"kind": "attended", "to_agent": "alice"}

    status, body = await post(stack, f"{calls}/transfer", stack.token, consult)  # the admin token
    assert (status, body["state"]) == (200, "consulting"), body
    started = await stack.hilo_events.expect("routing.consulting", within=5, interaction_id=interaction)
    assert started["data"] == {"from_agent": "bob", "to_agent": "alice", "by": "token:admin@api"}
    assert (await post(stack, f"{calls}/transfer/complete", front))[0] == 403
    assert (await post(stack, f"{calls}/transfer/cancel", front))[0] == 403
    assert (await post(stack, f"{calls}/transfer/cancel", stack.token))[0] == 200
    failed = await stack.hilo_events.expect("routing.transfer_failed", within=5, interaction_id=interaction)
    assert (failed["data"]["reason"], failed["data"]["by"]) == ("cancelled", "token:admin@api")
    await stack.hilo_events.expect("call.unheld", within=5, interaction_id=interaction)
    assert stack.services.board is not None
    assert (await stack.services.board.agent("alice"))["state"] == "available"

    mark = stack.hilo_events.mark()
    status, body = await post(stack, f"{calls}/transfer", back, consult)
    assert (status, body["state"]) == (200, "consulting"), body
    status, body = await post(stack, f"{calls}/transfer/complete", back)
    assert (status, body["state"]) == (200, "completed"), body
    handed = await stack.hilo_events.expect("routing.transferred", within=5, since=mark, interaction_id=interaction)
    assert handed["data"] == {"kind": "attended", "from_agent": "bob", "to_agent": "alice", "by": "user:back-sup@api"}
    await stack.hilo_events.expect("agent.answered", within=10, since=mark, interaction_id=interaction)
    await hang_up(stack, call, interaction)

    assert await audit_rows(stack) == [
        ("token:admin@api", "transfer", "interaction", True),
        ("user:front-sup@api", "transfer-complete", "interaction", False),
        ("user:front-sup@api", "transfer-cancel", "interaction", False),
        ("token:admin@api", "transfer-cancel", "interaction", True),
        ("user:back-sup@api", "transfer", "interaction", True),
        ("user:back-sup@api", "transfer-complete", "interaction", True),
    ]
    said = await reasons(stack)
    assert said[1] == said[2] == f"this call {OUTSIDE_FRONT}"


async def test_pops_are_pushed_read_and_wrapped_up_within_the_teams(stack: Stack) -> None:
    assert stack.services.screenpops is not None
    pops = stack.services.screenpops
    front = await sign_in(stack, "front-sup", "supervisor", teams=FRONT)
    back = await sign_in(stack, "back-sup", "supervisor", teams=BACK)
    teamless = await sign_in(stack, "teamless-sup", "supervisor")
    bobs, alices, bobs_next = [await offered_interaction(stack, a, answered=True) for a in ("bob", "alice", "bob")]
    async with console_feed(stack, front) as front_feed, console_feed(stack, back) as back_feed:
        for interaction, agent in ((bobs, "bob"), (alices, "alice"), (bobs_next, "bob")):
            await pops.on_offer(interaction, agent)
        # One connection delivers in publishing order: what each got last, it got after what it must not get.
        await front_feed.messages.expect("screenpop", within=5, interaction_id=str(alices.id))
        await back_feed.messages.expect("screenpop", within=5, interaction_id=str(bobs_next.id))
        assert {m["agent_id"] for m in front_feed.messages.events if m["type"] == "screenpop"} == {"alice"}
        assert {m["agent_id"] for m in back_feed.messages.events if m["type"] == "screenpop"} == {"bob"}

    pop = f"/console/api/interactions/{bobs.id}"
    status, body = await get(stack, pop, front)
    assert (status, body["reason"]) == (403, f"this interaction {OUTSIDE_FRONT}")
    assert (await get(stack, pop, teamless))[0] == 403
    assert (await get(stack, pop, back))[0] == 200
    assert (await post(stack, f"{pop}/wrapup", front, {"disposition": "resolved"}))[0] == 403
    assert (await post(stack, f"{pop}/wrapup", back, {"disposition": "resolved"}))[0] == 201
    assert (await get(stack, f"/console/api/interactions/{alices.id}", front))[0] == 200

    rows = await stack.pool.fetch("SELECT actor, action, target_id, ok, detail FROM supervisor_actions ORDER BY id")
    assert [(r["actor"], r["action"], r["target_id"], r["ok"], r["detail"].get("read")) for r in rows] == [
        ("user:front-sup@api", "read", str(bobs.id), False, "pop"),
        ("user:teamless-sup@api", "read", str(bobs.id), False, "pop"),
        ("user:front-sup@api", "wrapup", str(bobs.id), False, None),
    ]


async def test_chats_are_listed_read_and_answered_within_the_teams(stack: Stack) -> None:
    alice = await sign_in(stack, "alice", "agent", "alice")
    front = await sign_in(stack, "front-sup", "supervisor", teams=FRONT)
    back = await sign_in(stack, "back-sup", "supervisor", teams=BACK)
    async with visitor(stack) as (chat, _):
        await chat.say("m1", "hi")
        await chat.replies(2)
        await chat.say("m2", "Sales", choice_id="1")  # sales: alice, front office
        assert (await chat.replies(3))[2]["text"] == HOLD
    interaction = str(await stack.pool.fetchval("SELECT interaction_id FROM conversations WHERE channel = 'webchat'"))
    await stack.hilo_events.expect("routing.offered", within=10, interaction_id=interaction, data__agent="alice")
    chats = f"/console/api/chats/{interaction}"

    async def listed(token: str) -> list[str]:
        return [c["interaction_id"] for c in (await get(stack, "/console/api/chats", token))[1]["chats"]]

    assert (await listed(front), await listed(back)) == ([interaction], [])
    status, body = await get(stack, chats, back)
    assert (status, body["reason"]) == (403, f"this conversation {OUTSIDE_BACK}")
    assert (await get(stack, chats, front))[0] == 200
    assert (await post(stack, f"{chats}/accept", alice))[0] == 200
    assert (await post(stack, f"{chats}/reply", back, {"text": "Back office here"}))[0] == 403
    assert (await post(stack, f"{chats}/handback", back))[0] == 403
    assert (await post(stack, f"{chats}/close", back))[0] == 403
    status, body = await post(stack, f"{chats}/reply", front, {"text": "Front office here"})
    assert status == 201 and body["sent"]["data"]["by"] == "user:front-sup@api", body
    assert (await post(stack, f"{chats}/close", front))[0] == 200
    await stack.hilo_events.expect("interaction.ended", within=5, interaction_id=interaction)

    assert await audit_rows(stack) == [
        ("user:back-sup@api", "read", "interaction", False),
        ("user:back-sup@api", "chat-reply", "interaction", False),
        ("user:back-sup@api", "chat-handback", "interaction", False),
        ("user:back-sup@api", "chat-close", "interaction", False),
    ]
    assert set(await reasons(stack)) == {f"this conversation {OUTSIDE_BACK}"}


async def test_waiting_callers_and_routings_records_within_the_teams(stack: Stack) -> None:
    assert stack.services.board is not None
    await stack.services.board.set_state("bob", "away")  # nobody takes support: the caller waits
    call, started = await place(stack, KNOWN_CALLER, "2")
    interaction = started["interaction_id"]
    await stack.hilo_events.expect("routing.queued", within=20, interaction_id=interaction, data__queue="support")
    front = await sign_in(stack, "front-sup", "supervisor", teams=FRONT)
    back = await sign_in(stack, "back-sup", "supervisor", teams=BACK)
    both = await sign_in(stack, "both-sup", "supervisor", teams=BOTH)
    move = f"/api/routing/interactions/{interaction}/move"

    status, body = await post(stack, move, front, {"queue": "sales"})  # it waits in support, bob's queue
    assert (status, body["field"]) == (403, "interaction_id") and OUTSIDE_FRONT in body["reason"], body
    status, body = await post(stack, move, back, {"queue": "sales"})  # to a queue of another team
    assert (status, body["reason"]) == (403, f"queue sales {OUTSIDE_BACK}")
    status, body = await post(stack, move, back, {"agent": "alice"})  # to another team's agent
    assert (status, body["reason"]) == (403, f"agent alice {OUTSIDE_BACK}")

    # Routing's records: the lists cut, one thing outside refused.
    routed = f"/api/routing/interactions/{interaction}"
    assert (await get(stack, routed, front))[0] == 403 and (await get(stack, routed, back))[0] == 200
    assert [a["agent"]["id"] for a in (await get(stack, "/api/routing/agents", front))[1]["agents"]] == ["alice"]
    assert [q["queue"]["id"] for q in (await get(stack, "/api/routing/queues", front))[1]["queues"]] == ["sales"]
    assert [a["id"] for a in (await get(stack, "/api/agents", front))[1]["agents"]] == ["alice"]
    for url in ("/api/routing/agents/bob", "/api/routing/agents/bob/history", "/api/routing/queues/support"):
        status, body = await get(stack, url, front)
        assert status == 403 and OUTSIDE_FRONT in body["reason"], (url, body)
    assert (await get(stack, "/api/routing/queues/sales", front))[0] == 200

    status, body = await post(stack, move, both, {"queue": "sales"})
    assert (status, body["status"]) == (200, "offered"), body
    await stack.hilo_events.expect("agent.answered", within=20, interaction_id=interaction, data__agent="alice")
    await hang_up(stack, call, interaction)

    rows = await stack.pool.fetch(
        "SELECT actor, action, target_kind, target_id, ok, detail ->> 'read' AS read"
        " FROM supervisor_actions ORDER BY id"
    )
    assert [(r["actor"], r["action"], r["target_kind"], r["target_id"], r["ok"], r["read"]) for r in rows] == [
        ("user:front-sup@api", "move", "interaction", interaction, False, None),
        ("user:back-sup@api", "move", "interaction", interaction, False, None),
        ("user:back-sup@api", "move", "interaction", interaction, False, None),
        ("user:front-sup@api", "read", "interaction", interaction, False, "routing"),
        ("user:front-sup@api", "read", "agent", "bob", False, "agent"),
        ("user:front-sup@api", "read", "agent", "bob", False, "agent"),
        ("user:front-sup@api", "read", "queue", "support", False, "queue"),
        ("user:both-sup@api", "move", "interaction", interaction, True, None),
    ]


async def test_kpis_and_alerts_are_the_teams_own(stack: Stack, kpi_monitor: WallboardMonitor) -> None:  # noqa: F811
    script = await scripted_day(stack)
    front = await sign_in(stack, "front-sup", "supervisor", teams=FRONT)
    back = await sign_in(stack, "back-sup", "supervisor", teams=BACK)
    teamless = await sign_in(stack, "teamless-sup", "supervisor")
    day = {"from": script.day.date().isoformat(), "to": (script.day.date() + timedelta(days=1)).isoformat()}

    async def groups(token: str, by: str) -> dict[str | None, dict[str, Any]]:
        status, body = await get(stack, "/api/reports/kpis", token, **day, interval="period", by=by)
        assert status == 200, body
        return {r["group"]: r for r in body["rows"]}

    # front office: alice's sale only (the scripted day: docs in tests/stack/test_kpis.py `scripted_day`)
    assert list(await groups(front, "agent")) == ["alice"]
    assert list(await groups(front, "queue")) == ["sales"]
    assert (await groups(front, "none"))[None]["contacts"] == 1
    # back office: bob's two calls, and support's contacts no agent answered (abandoned, callbacks)
    by_agent = await groups(back, "agent")
    assert (by_agent["bob"]["answered"], by_agent[None]["contacts"]) == (2, 3) and "alice" not in by_agent
    assert {q: r["contacts"] for q, r in (await groups(back, "queue")).items()} == {"support": 5}
    # no team: nothing at all; the admin: every contact (the IVR-only ones too)
    assert (await groups(teamless, "none"))[None]["contacts"] == 0
    assert (await groups(stack.token, "none"))[None]["contacts"] == 8
    resp = await stack.client.get(
        "/api/reports/kpis.csv", params={**day, "interval": "period", "by": "agent"}, headers=bearer(front)
    )
    assert [line.split(",")[2] for line in (await resp.text()).splitlines()[1:]] == ["alice"]

    now = datetime.now(UTC)
    for queue in ("sales", "support"):
        await stack.pool.execute(
            "INSERT INTO queue_alerts (queue, kind, threshold, raised_value, raised_at, cleared_value, cleared_at)"
            " VALUES ($1, 'waiting', 0, 1, $2, 0, $3)",
            queue,
            now - timedelta(minutes=2),
            now - timedelta(minutes=1),
        )

    async def alerts(token: str) -> list[str]:
        status, body = await get(stack, "/api/reports/alerts", token)
        assert status == 200, body
        return sorted(a["queue"] for a in body["alerts"])

    assert (await alerts(front), await alerts(back), await alerts(teamless)) == (["sales"], ["support"], [])
    assert await alerts(stack.token) == ["sales", "support"]
    assert (await get(stack, "/api/reports/alerts", front, queue="support"))[1]["alerts"] == []
