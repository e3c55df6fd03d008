"""Who may use which recording, over the real server and PostgreSQL: agents their own calls', supervisors
their teams' (agents' `teams`, the queues those agents serve for recordings without an agent), admins all,
in the listing, the search, each recording, its playback URL and the playback itself; and retention that
leaves nothing of a deleted recording's words (the transcript's text on the timeline is redacted, webhooks
never carried it), while a held recording keeps them."""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from console.users import UserError, add_user, get_user
from recordings import catalog, transcripts
from recordings.access import UrlSigner
from recordings.cli import run_recordings_command
from recordings.transcribe import Transcript
from tests.stack.conftest import Stack
from tests.stack.recordings import stored_recording
from tests.stack.test_recordings import recorder
from tests.stack.test_screenpop import bearer, forget_cookies, sign_in
from tests.stack.test_webhooks import Receiver, subscribe

ALICE_SAID = "i want a refund for the blender"  # alice: front-office, queue sales
BOB_SAID = "i want a refund for my television"  # bob: back-office, queue support


@pytest.fixture
async def hook() -> AsyncIterator[Receiver]:
    """A webhook receiver (answers 200)."""
    receiver = Receiver()
    await receiver.server.start_server()
    yield receiver
    await receiver.server.close()


async def make_recording(
    stack: Stack,
    *,
    agent_id: str | None,
    queue: str | None,
    said: str | None = None,
    kind: str = "call",
    days_ago: int = 0,
) -> uuid.UUID:
    """A stored recording (an encrypted quiet second in the store) kept 30 days. With `said`, its transcript
    is written by the transcript worker's own code, as if the worker had heard that; without, its job waits
    leased (the running worker leaves it alone)."""
    worker = stack.services.transcripts
    assert worker is not None, "the test stack transcribes (HILO_TRANSCRIPTS defaults on)"

    async def leased(rec: catalog.Recording) -> None:
        # Queued and leased before the recording is stored (the trigger's own insert then does nothing).
        await stack.pool.execute(
            "INSERT INTO recording_transcripts (recording_id, attempts, leased_until) VALUES ($1, 1, now() + '1 hour')",
            rec.id,
        )

    rec = await stored_recording(
        stack,
        agent_id=agent_id,
        queue=queue,
        kind=kind,
        days_ago=days_ago,
        context={"flow_language": "en"},
        before_stored=leased,
    )
    if said is not None:
        mark = stack.hilo_events.mark()
        await worker._done(transcripts.Job(rec.id, 1), rec, "en", "pocketsphinx", Transcript(said, 1.0, 0.1))
        await stack.hilo_events.expect("recording.transcribed", within=5, since=mark, data__recording_id=str(rec.id))
    return rec.id


async def sign_in_supervisor(stack: Stack, username: str, teams: list[str] | None) -> str:
    """A supervisor of `teams`, signed in; returns the session token."""
    password = "supervisor-password-" + uuid.uuid4().hex
    await add_user(stack.pool, username, password, "supervisor", None, teams=teams)
    resp = await stack.client.post("/console/api/login", json={"username": username, "password": password})
    assert resp.status == 200, await resp.text()
    forget_cookies(stack)
    return str((await resp.json())["token"])


async def ids_listed(stack: Stack, token: str, **params: str) -> set[str]:
    resp = await stack.client.get("/api/recordings", params=params, headers=bearer(token))
    assert resp.status == 200, await resp.text()
    return {r["id"] for r in (await resp.json())["recordings"]}


async def test_supervisors_use_their_teams_recordings_agents_their_own_admins_all(stack: Stack) -> None:
    alices = str(await make_recording(stack, agent_id="alice", queue="sales", said=ALICE_SAID))
    bobs = str(await make_recording(stack, agent_id="bob", queue="support", said=BOB_SAID))
    voicemail = str(await make_recording(stack, agent_id=None, queue="support", kind="voicemail"))
    flow_only = str(await make_recording(stack, agent_id=None, queue=None))  # a flow's recording, no queue yet
    tag = uuid.uuid4().hex[:6]
    front = await sign_in_supervisor(stack, f"front-{tag}", ["front-office"])
    back_name = f"back-{tag}"
    back = await sign_in_supervisor(stack, back_name, ["back-office"])
    teamless = await sign_in_supervisor(stack, f"teamless-{tag}", None)
    alice = await sign_in(stack, f"alice-{tag}", "agent", "alice")
    bob = await sign_in(stack, f"bob-{tag}", "agent", "bob")

    # Listing and search show each person exactly what they may open.
    assert await ids_listed(stack, front) == {alices}
    assert await ids_listed(stack, back) == {bobs, voicemail}  # support's voicemail: bob serves support
    assert await ids_listed(stack, teamless) == set()
    assert await ids_listed(stack, alice) == {alices}
    assert await ids_listed(stack, bob) == {bobs}
    assert await ids_listed(stack, stack.token) == {alices, bobs, voicemail, flow_only}
    assert await ids_listed(stack, front, q="refund") == {alices}
    assert await ids_listed(stack, back, q="refund") == {bobs}
    assert await ids_listed(stack, back, q="blender") == set()
    assert await ids_listed(stack, stack.token, q="refund") == {alices, bobs}

    # Each recording, its transcript, its playback URL and a pause: 403 outside the scope, audited.
    for path in ("", "/transcript"):
        assert (await stack.client.get(f"/api/recordings/{bobs}{path}", headers=bearer(front))).status == 403
        assert (await stack.client.get(f"/api/recordings/{bobs}{path}", headers=bearer(back))).status == 200
        assert (await stack.client.get(f"/api/recordings/{alices}{path}", headers=bearer(bob))).status == 403
    refused = await stack.client.post(f"/api/recordings/{bobs}/url", headers=bearer(front))
    assert refused.status == 403 and "(front-office)" in (await refused.json())["reason"]
    assert (await stack.client.post(f"/api/recordings/{bobs}/pause", headers=bearer(front))).status == 403
    assert (await stack.client.post(f"/api/recordings/{bobs}/pause", headers=bearer(back))).status == 409  # not live
    assert (await stack.client.get(f"/api/recordings/{flow_only}", headers=bearer(back))).status == 403
    assert (await stack.client.get(f"/api/recordings/{flow_only}", headers=bearer(teamless))).status == 403
    assert (await stack.client.get(f"/api/recordings/{uuid.uuid4()}", headers=bearer(back))).status == 404
    hold = await stack.client.put(
        f"/api/recordings/{bobs}/hold", json={"hold": True, "reason": "case 7"}, headers=bearer(back)
    )
    assert hold.status == 403, "legal holds are for admins"

    # Playback: the supervisor of bob's team plays it; once moved to another team, their link no longer works.
    issued = await stack.client.post(f"/api/recordings/{bobs}/url", headers=bearer(back))
    assert issued.status == 201
    url = (await issued.json())["url"]
    played = await stack.client.get(url)
    assert played.status == 200 and len(await played.read()) == 44 + 16000
    # A link signed before the one actor form (console:<user>) still plays until it expires, audited in the form
    # migration 021 gives such rows: the door was not recorded.
    signer = UrlSigner(recorder(stack).store.ring.url_keys())
    legacy = signer.url(uuid.UUID(bobs), "playback", int(time.time()) + 60, f"console:{back_name}")
    played = await stack.client.get(legacy)
    assert played.status == 200 and len(await played.read()) == 44 + 16000
    password = "moved-to-front-office-" + tag
    assert await add_user(stack.pool, back_name, password, "supervisor", None, replace=True, teams=["front-office"])
    assert (await stack.client.get(url)).status == 403
    assert await ids_listed(stack, back) == {alices}  # teams are read at each request

    trail = await catalog.audit_trail(stack.pool, uuid.UUID(bobs))
    denied = [
        (e["actor"], e["detail"].get("request", e["detail"].get("reason"))) for e in trail if e["action"] == "denied"
    ]
    assert (f"user:front-{tag}@api", f"GET /api/recordings/{bobs}") in denied
    assert (f"user:front-{tag}@api", f"POST /api/recordings/{bobs}/url") in denied
    assert (f"user:front-{tag}@api", f"GET /api/recordings/{bobs}/transcript") in denied
    assert (f"user:{back_name}@api", "this recording is outside your teams (front-office)") in denied
    assert ("playback", f"user:{back_name}@api") in [(e["action"], e["actor"]) for e in trail]
    assert ("playback", f"user:{back_name}@unknown") in [(e["action"], e["actor"]) for e in trail]

    # The customer's timeline shows a transcript's words to admins only; others follow its transcript_url.
    rec = await catalog.get(stack.pool, uuid.UUID(bobs))
    assert rec is not None
    customer = rec.customer_id
    for token, sees_text in ((stack.token, True), (front, False)):
        resp = await stack.client.get(f"/api/customers/{customer}/timeline", headers=bearer(token))
        assert resp.status == 200, await resp.text()
        [event] = [
            e
            for e in (await resp.json())["events"]
            if e["type"] == "recording.transcribed" and e["data"]["recording_id"] == bobs
        ]
        assert event["data"]["transcript_url"] == f"/api/recordings/{bobs}/transcript"
        if sees_text:
            assert event["data"]["text"] == BOB_SAID
        else:
            assert "text" not in event["data"] and event["data"]["withheld"] == ["text"]


async def test_only_supervisors_have_teams_and_only_teams_agents_are_in(stack: Stack) -> None:
    password = "a-long-enough-password-" + uuid.uuid4().hex
    for role, agent, teams, problem in (
        ("agent", "alice", ["front-office"], "only a supervisor supervises teams"),
        ("supervisor", None, ["front-ofice"], "no agent is in it"),
        ("supervisor", None, ["bad team"], "team 'bad team'"),
    ):
        try:
            await add_user(stack.pool, f"u-{uuid.uuid4().hex[:6]}", password, role, agent, teams=teams)
        except UserError as exc:
            assert problem in str(exc)
        else:
            raise AssertionError(f"{role} with teams {teams} was accepted")
    assert await add_user(stack.pool, "sup-two", password, "supervisor", None, teams=["back-office", "front-office"])
    user = await get_user(stack.pool, "sup-two")
    assert user is not None and user.teams == ("back-office", "front-office")
    same = await add_user(
        stack.pool, "sup-two", password, "supervisor", None, replace=True, teams=["front-office", "back-office"]
    )
    assert same == "unchanged"


async def test_retention_redacts_the_transcript_on_the_timeline_and_webhooks_never_carry_it(
    stack: Stack, hook: Receiver
) -> None:
    await subscribe(stack, hook.url, ["recording.*"])
    expired = await make_recording(stack, agent_id="bob", queue="support", said=BOB_SAID, days_ago=40)
    held = await make_recording(stack, agent_id="alice", queue="sales", said=ALICE_SAID, days_ago=40)
    resp = await stack.client.put(
        f"/api/recordings/{held}/hold", json={"hold": True, "reason": "case 2026-7"}, headers=bearer(stack.token)
    )
    assert resp.status == 200
    sent = await hook.requests.expect(
        "webhook", within=5, body__type="recording.transcribed", body__data__recording_id=str(expired)
    )
    assert "text" not in sent["body"]["data"] and BOB_SAID.encode() not in sent["raw"]
    assert sent["body"]["data"]["withheld"] == ["text"]
    assert sent["body"]["data"]["transcript_url"] == f"/api/recordings/{expired}/transcript"
    assert await ids_listed(stack, stack.token, q="refund") == {str(expired), str(held)}

    assert await run_recordings_command(argparse.Namespace(dry_run=False), stack.settings) == 0
    await stack.hilo_events.expect("recording.deleted", within=5, data__recording_id=str(expired))

    events = {
        r["data"]["recording_id"]: r["data"]
        for r in await stack.pool.fetch("SELECT data FROM timeline_events WHERE type = 'recording.transcribed'")
    }
    gone: dict[str, Any] = events[str(expired)]
    assert gone["text"] is None and gone["redacted"] is True and gone["redaction_reason"] == "retention"
    assert datetime.fromisoformat(gone["redacted_at"]) > datetime.now(UTC) - timedelta(minutes=1)
    assert gone["recording_id"] == str(expired) and gone["language"] == "en"  # the rest of the fact stays
    assert events[str(held)]["text"] == ALICE_SAID and "redacted" not in events[str(held)]
    rows = await stack.pool.fetch(
        "SELECT type, data::text AS data FROM timeline_events WHERE data->>'recording_id' = $1", str(expired)
    )
    assert not [r["type"] for r in rows if "television" in r["data"]], "the words are nowhere on the timeline"
    assert await ids_listed(stack, stack.token, q="refund") == {str(held)}
    assert await ids_listed(stack, stack.token, q="television") == set()
    transcript = await transcripts.get(stack.pool, expired)
    assert transcript is not None and (transcript["state"], transcript["text"]) == ("deleted", None)
    [deleted] = [e for e in await catalog.audit_trail(stack.pool, expired) if e["action"] == "deleted"]
    assert deleted["detail"]["timeline_texts_redacted"] == 1
    assert deleted["actor"] == "system:retention@cli"  # the retention job, started from the command line
    held_by = [e["actor"] for e in await catalog.audit_trail(stack.pool, held) if e["action"] == "hold"]
    assert held_by == ["token:admin@api"]
    await hook.requests.expect(
        "webhook", within=5, body__type="recording.deleted", body__data__recording_id=str(expired)
    )

    # Everything else on the timeline stays append-only.
    for sql in (
        'UPDATE timeline_events SET data = data || \'{"text": null, "redacted": true}\''
        " WHERE data->>'recording_id' = $1",
        "DELETE FROM timeline_events WHERE data->>'recording_id' = $1",
    ):
        try:
            await stack.pool.execute(sql, str(held))
        except Exception as exc:  # asyncpg.RaiseError from the trigger
            assert "append-only" in str(exc)
        else:
            raise AssertionError(f"the timeline accepted: {sql}")
