"""The agent console against the real stack: signing in, the screen-pop of a real call reaching the agent's
WebSocket before their phone rings, who may read which interaction, and the wrap-up on the timeline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest

import console.ws
from asterisk.events import Event
from console.screenpop import ScreenPops
from console.users import add_user
from crm_bridge import customers
from crm_bridge.timeline import Interaction
from hilo.passwords import Cost, hash_password, needs_rehash
from hilo.web.sessions import COOKIE
from hilo.web.signin import MAX_FAILURES
from tests.stack.conftest import Stack
from tests.stack.expect import EventStream
from tests.stack.test_calls import KNOWN_CALLER, place


def new_password() -> str:
    return secrets.token_urlsafe(16)


async def sign_in(
    stack: Stack, username: str, role: str, agent_id: str | None = None, teams: list[str] | None = None
) -> str:
    """Create the console user (a supervisor of `teams`) and sign in; returns the session token."""
    password = new_password()
    await add_user(stack.pool, username, password, role, agent_id, teams=teams)
    resp = await stack.client.post("/console/api/login", json={"username": username, "password": password})
    body = await resp.json()
    assert resp.status == 200, body
    assert (body["username"], body["role"], body["agent_id"]) == (username, role, agent_id)
    forget_cookies(stack)  # the tests say which session they use, by its token
    return str(body["token"])


def forget_cookies(stack: Stack) -> None:
    stack.client.session.cookie_jar.clear()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Feed:
    """A console WebSocket, its messages in an EventStream, each stamped with when it arrived."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.messages = EventStream("console WebSocket")
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.messages.add({**json.loads(message.data), "_received": loop.time()})
        self.closed.set_result(self.ws.close_code)


@contextlib.asynccontextmanager
async def console_feed(stack: Stack, token: str) -> AsyncIterator[Feed]:
    ws = await stack.client.ws_connect("/console/ws", headers=bearer(token))
    feed = Feed(ws)
    try:
        await feed.messages.expect("hello", within=5)
        yield feed
    finally:
        await ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await feed.task


@contextlib.contextmanager
def timed_ari(stack: Stack, keep: Callable[[dict[str, Any]], bool]) -> Any:
    """ARI events (as the observer sees them) stamped with their arrival time on this loop."""
    stream = EventStream("ARI (timed)")
    loop = asyncio.get_running_loop()

    def handler(event: Event) -> None:
        if keep(event.raw):
            stream.add({**event.raw, "_received": loop.time()})

    stack.observer.handlers.append(handler)
    try:
        yield stream
    finally:
        stack.observer.handlers.remove(handler)


def bob_leg(raw: dict[str, Any]) -> bool:
    return str(raw.get("channel", {}).get("name", "")).startswith("PJSIP/agent-bob-")


async def offered_interaction(stack: Stack, agent: str, *, answered: bool) -> Interaction:
    """An interaction of the demo customer Ana offered to `agent` (no call needed)."""
    assert stack.services.timeline is not None
    ana = await customers.identify(stack.pool, "phone", KNOWN_CALLER)
    interaction = await stack.services.timeline.start_interaction(
        ana.customer_id, "voice", "inbound", dialed="100", context={"caller_number": KNOWN_CALLER, "dialed": "100"}
    )
    await stack.services.timeline.record(interaction, "routing.offered", {"agent": agent, "queue": "support"})
    if answered:
        await stack.services.timeline.update(interaction, agent_id=agent)
    return interaction


# -- the pop on a real call -------------------------------------------------------------------------


async def test_the_pop_reaches_the_agent_before_their_phone_rings(stack: Stack) -> None:
    bob = await sign_in(stack, "bob", "agent", "bob")
    sue = await sign_in(stack, "sue", "supervisor", teams=["back-office"])  # bob's team
    async with console_feed(stack, bob) as agent, console_feed(stack, sue) as supervisor:
        with timed_ari(stack, bob_leg) as ari:
            call, started = await place(stack, KNOWN_CALLER, "92")  # a wrong key first, then support
            interaction = started["interaction_id"]
            pop = await agent.messages.expect("screenpop", within=30, interaction_id=interaction)
            ringing = await ari.expect("ChannelStateChange", within=10, channel__state="Ringing")
        # On this loop the pop came first; and by the clocks of Hilo and Asterisk it left first too.
        assert pop["_received"] < ringing["_received"]
        # (Asterisk stamps its events to the millisecond, so its clock reading is allowed that much.)
        ringing_at = datetime.fromisoformat(ringing["timestamp"]) + timedelta(milliseconds=1)
        assert datetime.fromisoformat(pop["offered_at"]) < ringing_at
        watched = await supervisor.messages.expect("screenpop", within=5, interaction_id=interaction)
        assert watched["agent_id"] == "bob"

    assert pop["agent_id"] == "bob"
    assert pop["customer"]["name"] == "Ana García"
    assert {"kind": "phone", "value": KNOWN_CALLER} in pop["customer"]["identities"]
    assert (pop["customer"]["verified"], pop["customer"]["identified_by"]) == (False, "caller_number")
    assert (pop["call"]["caller_number"], pop["call"]["queue"], pop["call"]["dialed"]) == (
        KNOWN_CALLER,
        "support",
        "100",
    )
    answers = [s["summary"] for s in pop["ivr"]["path"] if s["type"] == "ivr.input"]
    assert answers == ["pressed 9 (not an option)", "pressed 2 (Support)"]
    assert pop["ivr"]["flow"] == "demo"

    await stack.hilo_events.expect("agent.answered", within=15, interaction_id=interaction, data__agent="bob")
    await stack.observer.hangup(call.caller_leg)
    await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)


async def test_the_next_pop_shows_the_last_interaction_its_outcome_and_open_cases(stack: Stack) -> None:
    bob = await sign_in(stack, "bob", "agent", "bob")
    earlier = await offered_interaction(stack, "bob", answered=True)
    assert stack.services.timeline is not None
    await stack.services.timeline.end_interaction(earlier, "completed", "caller")
    resp = await stack.client.post(
        f"/console/api/interactions/{earlier.id}/wrapup", json={"disposition": "follow_up"}, headers=bearer(bob)
    )
    assert resp.status == 201, await resp.json()
    await stack.pool.execute(
        "INSERT INTO cases (customer_id, subject, status) VALUES ($1, 'Router replacement', 'open'),"
        " ($1, 'Old closed one', 'closed')",
        earlier.customer_id,
    )
    async with console_feed(stack, bob) as agent:
        call, started = await place(stack, KNOWN_CALLER, "2")
        interaction = started["interaction_id"]
        pop = await agent.messages.expect("screenpop", within=30, interaction_id=interaction)
        await stack.hilo_events.expect("agent.answered", within=15, interaction_id=interaction)
        await stack.observer.hangup(call.caller_leg)
        await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    assert [(h["interaction_id"], h["outcome"], h["disposition"]) for h in pop["history"]] == [
        (str(earlier.id), "completed", "follow_up")
    ]
    assert [c["subject"] for c in pop["open_cases"]] == ["Router replacement"]


async def test_a_console_that_connects_late_gets_the_latest_pop(stack: Stack) -> None:
    bob = await sign_in(stack, "bob", "agent", "bob")
    interaction = await offered_interaction(stack, "bob", answered=False)
    assert stack.services.redis is not None and stack.services.flows is not None
    flows = stack.services.flows
    pops = ScreenPops(stack.pool, stack.services.redis, stack.settings.namespace, lambda: flows.current.flows)
    await pops.on_offer(interaction, "bob")
    async with console_feed(stack, bob) as agent:
        pop = await agent.messages.expect("screenpop", within=5, interaction_id=str(interaction.id))
    assert pop["customer"]["name"] == "Ana García"


# -- who may do what --------------------------------------------------------------------------------


async def test_an_agent_reads_only_interactions_offered_to_them(stack: Stack) -> None:
    alice = await sign_in(stack, "alice", "agent", "alice")
    bob = await sign_in(stack, "bob", "agent", "bob")
    sue = await sign_in(stack, "sue", "supervisor", teams=["back-office"])  # bob's team
    interaction = await offered_interaction(stack, "bob", answered=True)
    url = f"/console/api/interactions/{interaction.id}"

    resp = await stack.client.get(url, headers=bearer(alice))
    assert resp.status == 403 and (await resp.json())["reason"] == "this interaction was not offered to you"
    resp = await stack.client.post(f"{url}/wrapup", json={"disposition": "resolved"}, headers=bearer(alice))
    assert resp.status == 403
    for token in (bob, sue, stack.token):  # the agent it was offered to, a supervisor, the admin API token
        resp = await stack.client.get(url, headers=bearer(token))
        body = await resp.json()
        assert resp.status == 200, body
        assert body["interaction_id"] == str(interaction.id) and body["customer"]["name"] == "Ana García"
    assert (await stack.client.get(url)).status == 401
    resp = await stack.client.get("/console/api/interactions/not-a-uuid", headers=bearer(sue))
    assert resp.status == 400 and (await resp.json())["field"] == "interaction_id"
    assert (await stack.client.get(f"/console/api/interactions/{uuid.uuid4()}", headers=bearer(sue))).status == 404
    # Agents do not use the supervisors' API; supervisors do.
    assert (await stack.client.get("/api/agents", headers=bearer(bob))).status == 403
    assert (await stack.client.get("/api/agents", headers=bearer(sue))).status == 200


async def test_sockets_need_a_session_from_this_origin(stack: Stack) -> None:
    resp = await stack.client.get("/console/ws")
    assert resp.status == 401
    bob = await sign_in(stack, "bob", "agent", "bob")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await stack.client.ws_connect("/console/ws", headers={**bearer(bob), "Origin": "http://evil.example"})
    assert refused.value.status == 403


async def test_heartbeats_flow_and_signing_out_closes_the_socket(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console.ws, "HEARTBEAT_S", 0.3)
    bob = await sign_in(stack, "bob", "agent", "bob")
    async with console_feed(stack, bob) as feed:
        await feed.messages.expect("heartbeat", within=3)
        await feed.ws.send_str("ping")
        await feed.messages.expect("pong", within=3)
        resp = await stack.client.post("/console/api/logout", headers=bearer(bob))
        assert resp.status == 200
        assert await asyncio.wait_for(asyncio.shield(feed.closed), 5) == console.ws.SESSION_ENDED


# -- signing in -------------------------------------------------------------------------------------


async def test_sign_in_sets_a_strict_cookie_and_sign_out_ends_the_session(stack: Stack) -> None:
    password = new_password()
    await add_user(stack.pool, "bob", password, "agent", "bob")
    resp = await stack.client.post("/console/api/login", json={"username": "Bob", "password": password})
    assert resp.status == 200
    token = (await resp.json())["token"]
    forget_cookies(stack)
    cookie = resp.cookies[COOKIE]
    assert cookie.value == token
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    stored = [k async for k in stack.services.redis.scan_iter(match=f"{stack.settings.namespace}:console:session:*")]  # type: ignore[union-attr]
    assert len(stored) == 1 and token not in stored[0].decode()

    # The browser's way: the cookie alone.
    cookies = {COOKIE: token}
    resp = await stack.client.get("/console/api/me", cookies=cookies)
    me = await resp.json()
    assert resp.status == 200, me
    assert (me["username"], me["role"], me["agent_id"], me["state"]) == ("bob", "agent", "bob", "available")
    assert {"id": "resolved", "label": "Resolved"} in me["dispositions"]
    # A cookie-carried change from another site's page is refused.
    resp = await stack.client.post(
        "/console/api/me/state", json={"state": "offline"}, cookies=cookies, headers={"Origin": "http://evil.example"}
    )
    assert resp.status == 401

    resp = await stack.client.post("/console/api/logout", headers=bearer(token))
    assert resp.status == 200
    assert (await stack.client.get("/console/api/me", headers=bearer(token))).status == 401
    assert (await stack.client.get("/console/api/me", cookies=cookies)).status == 401


async def test_failed_sign_ins_are_limited_per_user(stack: Stack) -> None:
    password = new_password()
    await add_user(stack.pool, "bob", password, "agent", "bob")
    for _ in range(MAX_FAILURES):
        resp = await stack.client.post("/console/api/login", json={"username": "bob", "password": "wrong password"})
        assert resp.status == 401 and (await resp.json())["reason"] == "wrong username or password"
    resp = await stack.client.post("/console/api/login", json={"username": "bob", "password": password})
    assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
    # Another user is not locked out, and an unknown user gets the same answer as a wrong password.
    resp = await stack.client.post("/console/api/login", json={"username": "nobody", "password": "whatever12"})
    assert resp.status == 401 and (await resp.json())["reason"] == "wrong username or password"
    resp = await stack.client.post("/console/api/login", json={"username": "bad name!", "password": "x"})
    assert resp.status == 400 and (await resp.json())["field"] == "username"


async def test_a_parallel_burst_of_wrong_passwords_is_checked_no_more_than_the_limit(stack: Stack) -> None:
    """The lockout is taken before the password is checked (a Lua script on the real Redis)."""
    password, other = new_password(), new_password()
    await add_user(stack.pool, "bob", password, "agent", "bob")
    await add_user(stack.pool, "sue", other, "supervisor", None)

    async def attempt(username: str, guess: str) -> int:
        resp = await stack.client.post("/console/api/login", json={"username": username, "password": guess})
        return resp.status

    statuses = await asyncio.gather(*(attempt("bob", f"wrong password {n}") for n in range(12)))
    assert sorted(statuses) == [401] * MAX_FAILURES + [429] * (12 - MAX_FAILURES)
    assert await attempt("bob", password) == 429  # locked for this address: the right password too
    assert await attempt("sue", other) == 200  # and nobody else
    forget_cookies(stack)


async def test_a_password_hash_of_an_older_cost_is_upgraded_at_sign_in(stack: Stack) -> None:
    password = new_password()
    await add_user(stack.pool, "bob", password, "agent", "bob")
    older = hash_password(password, Cost(n=2**15, r=8, p=1))
    await stack.pool.execute("UPDATE console_users SET password_hash = $1 WHERE username = 'bob'", older)
    resp = await stack.client.post("/console/api/login", json={"username": "bob", "password": password})
    assert resp.status == 200
    forget_cookies(stack)
    stored = await stack.pool.fetchval("SELECT password_hash FROM console_users WHERE username = 'bob'")
    assert stored != older and not needs_rehash(stored)


async def test_an_agent_sets_only_their_own_state(stack: Stack) -> None:
    assert stack.services.board is not None
    bob = await sign_in(stack, "bob", "agent", "bob")
    resp = await stack.client.post("/console/api/me/state", json={"state": "away"}, headers=bearer(bob))
    assert resp.status == 400 and (await resp.json())["field"] == "reason"
    resp = await stack.client.post(
        "/console/api/me/state", json={"state": "away", "reason": "lunch"}, headers=bearer(bob)
    )
    assert resp.status == 200, await resp.json()
    assert (await stack.services.board.agent("bob"))["state"] == "away"
    assert (await stack.services.board.agent("alice"))["state"] == "available"
    me = await (await stack.client.get("/console/api/me", headers=bearer(bob))).json()
    assert (me["state"], me["away_reason"]) == ("away", "lunch")
    resp = await stack.client.post("/console/api/me/state", json={"state": "busy"}, headers=bearer(bob))
    assert resp.status == 400 and (await resp.json())["field"] == "state"
    resp = await stack.client.post("/console/api/me/state", json={"state": "available"}, headers=bearer(bob))
    assert resp.status == 200
    assert (await stack.services.board.agent("bob"))["state"] == "available"
    sue = await sign_in(stack, "sue", "supervisor")
    resp = await stack.client.post("/console/api/me/state", json={"state": "available"}, headers=bearer(sue))
    assert resp.status == 403


# -- wrap-up ----------------------------------------------------------------------------------------


async def test_a_wrapup_lands_on_the_timeline_once(stack: Stack) -> None:
    bob = await sign_in(stack, "bob", "agent", "bob")
    interaction = await offered_interaction(stack, "bob", answered=True)
    url = f"/console/api/interactions/{interaction.id}/wrapup"
    body = {"disposition": "resolved", "note": "Reset the router; works now."}

    # A double click: two identical submits at once make one wrap-up.
    first, second = await asyncio.gather(
        stack.client.post(url, json=body, headers=bearer(bob)), stack.client.post(url, json=body, headers=bearer(bob))
    )
    assert sorted([first.status, second.status]) == [200, 201]
    again = await stack.client.post(url, json=body, headers=bearer(bob))
    assert again.status == 200 and (await again.json())["duplicate"] is True
    resp = await stack.client.post(url, json={"disposition": "escalated"}, headers=bearer(bob))
    assert resp.status == 409 and (await resp.json())["field"] == "disposition"

    published = await stack.hilo_events.expect(
        "agent.disposition", within=5, interaction_id=str(interaction.id), data__disposition="resolved"
    )
    assert published["data"] == {"agent": "bob", "by": "user:bob@api", "disposition": "resolved"}
    rows = await stack.pool.fetch(
        "SELECT type, data FROM timeline_events WHERE interaction_id = $1 AND type LIKE 'agent.%' ORDER BY id",
        interaction.id,
    )
    assert [(r["type"], r["data"]) for r in rows] == [
        ("agent.disposition", {"agent": "bob", "by": "user:bob@api", "disposition": "resolved"}),
        ("agent.note", {"agent": "bob", "by": "user:bob@api", "note": "Reset the router; works now."}),
    ]
    read = await (await stack.client.get(f"/console/api/interactions/{interaction.id}", headers=bearer(bob))).json()
    assert read["wrapup"]["disposition"] == "resolved" and read["wrapup"]["username"] == "user:bob@api"


async def test_bad_wrapups_are_named_and_only_the_agent_who_took_it_wraps_up(stack: Stack) -> None:
    bob = await sign_in(stack, "bob", "agent", "bob")
    alice = await sign_in(stack, "alice", "agent", "alice")
    sue = await sign_in(stack, "sue", "supervisor", teams=["back-office"])  # bob's team
    offered_only = await offered_interaction(stack, "bob", answered=False)
    taken = await offered_interaction(stack, "bob", answered=True)
    url = f"/console/api/interactions/{taken.id}/wrapup"
    for body, field in [
        ({"disposition": "happy"}, "disposition"),
        ({"disposition": "resolved", "note": "x" * 2001}, "note"),
        ({"disposition": "resolved", "extra": 1}, "extra"),
    ]:
        resp = await stack.client.post(url, json=body, headers=bearer(bob))
        assert resp.status == 400 and (await resp.json())["field"] == field
    resp = await stack.client.post(url, data="not json", headers=bearer(bob))
    assert resp.status == 400 and (await resp.json())["field"] == "body"
    # bob never answered this one: he may read it (offered) but not wrap it up; a supervisor may.
    resp = await stack.client.post(
        f"/console/api/interactions/{offered_only.id}/wrapup", json={"disposition": "resolved"}, headers=bearer(bob)
    )
    assert resp.status == 403
    resp = await stack.client.post(url, json={"disposition": "resolved"}, headers=bearer(alice))
    assert resp.status == 403
    resp = await stack.client.post(url, json={"disposition": "escalated", "note": ""}, headers=bearer(sue))
    assert resp.status == 201
    event = await stack.hilo_events.expect("agent.disposition", within=5, interaction_id=str(taken.id))
    assert event["data"] == {"agent": "bob", "by": "user:sue@api", "disposition": "escalated"}
    notes = await stack.pool.fetchval(
        "SELECT count(*) FROM timeline_events WHERE interaction_id = $1 AND type = 'agent.note'", taken.id
    )
    assert notes == 0  # an empty note is no note
    resp = await stack.client.post(
        f"/console/api/interactions/{uuid.uuid4()}/wrapup", json={"disposition": "resolved"}, headers=bearer(sue)
    )
    assert resp.status == 404
