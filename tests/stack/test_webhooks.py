"""Outbound webhooks end to end: timeline events written to the real database reach a real HTTP receiver on
127.0.0.1, signed; failures are retried with backoff, then dead-lettered and replayable; two workers share
the work without sending anything twice or out of order."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from crm_bridge import identity, webhooks
from crm_bridge.timeline import Interaction
from crm_bridge.webhooks import DeliveryWorker, RetryPolicy
from tests.stack.conftest import Stack
from tests.stack.expect import EventStream, eventually
from tests.stack.faults import FaultReport

FAST = RetryPolicy(max_attempts=3, backoff_s=0.05, backoff_max_s=0.2, timeout_s=2.0)


class Receiver:
    """A webhook receiver on an ephemeral loopback port. `answers` are the statuses (or 'hang' to answer
    later than the sender's timeout) given to successive requests; 200 once they run out."""

    def __init__(self, answers: list[int | str] | None = None) -> None:
        self.answers = list(answers or [])
        self.requests = EventStream("receiver")
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self.server.make_url("/hook"))

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        answer = self.answers.pop(0) if self.answers else 200
        self.requests.add(
            {
                "type": "webhook",
                "headers": dict(request.headers),
                "raw": body,
                "body": json.loads(body),
                "answer": answer,
            }
        )
        if answer == "hang":
            await asyncio.sleep(FAST.timeout_s + 1)
            answer = 200
        assert isinstance(answer, int)
        return web.Response(status=answer)


@pytest.fixture
async def receiver() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    started: list[Receiver] = []

    async def start(answers: list[int | str] | None = None) -> Receiver:
        one = Receiver(answers)
        await one.server.start_server()
        started.append(one)
        return one

    yield start
    for one in started:
        await one.server.close()


@pytest.fixture(autouse=True)
async def fast_retries(stack: Stack) -> AsyncIterator[None]:
    worker = stack.services.webhooks
    assert worker is not None
    saved = worker.policy
    worker.policy = FAST
    yield
    worker.policy = saved


def admin(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.token}"}


async def subscribe(stack: Stack, url: str, event_types: list[str]) -> dict[str, Any]:
    resp = await stack.client.post("/api/webhooks", json={"url": url, "event_types": event_types}, headers=admin(stack))
    body: dict[str, Any] = await resp.json()
    assert resp.status == 201, body
    return body


async def interaction(stack: Stack, phone: str) -> Interaction:
    customer = await identity.identify_or_create(stack.pool, "phone", phone, "ES")
    assert stack.services.timeline is not None
    return await stack.services.timeline.start_interaction(customer.customer_id, "voice", "inbound")


async def record(stack: Stack, call: Interaction, type_: str, **data: Any) -> dict[str, Any]:
    assert stack.services.timeline is not None
    return await stack.services.timeline.record(call, type_, data)


async def delivery_states(stack: Stack, subscription_id: str) -> list[tuple[int, str, int]]:
    rows = await stack.pool.fetch(
        "SELECT event_id, state, attempts FROM webhook_deliveries WHERE subscription_id = $1 ORDER BY event_id",
        uuid.UUID(subscription_id),
    )
    return [(r["event_id"], r["state"], r["attempts"]) for r in rows]


async def delivery_figures(
    stack: Stack, fault_report: FaultReport, fault: str, accepted: int, hooks: Mapping[str, Receiver]
) -> None:
    """The receiver's fault in messages: `accepted` deliveries (events written x subscriptions wanting them);
    stored: each delivered or held as a dead letter to replay (not lost); duplicated: each acknowledged (200)
    more than once by a receiver. (A send the sender gave up on, past its timeout, may reach the receiver again
    with the same Hilo-Webhook-Id: that is how a receiver drops it, and it is not counted here.)"""
    stored = await stack.pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE subscription_id = ANY($1::uuid[])"
        " AND state IN ('delivered', 'dead')",
        [uuid.UUID(s) for s in hooks],
    )
    duplicated = 0
    for hook in hooks.values():
        acknowledged = [e["body"]["id"] for e in hook.requests.events if e["answer"] == 200]
        duplicated += len(acknowledged) - len(set(acknowledged))
    fault_report.fault(fault).messages(accepted=accepted, stored=stored, duplicated=duplicated)


def independent_signature(secret: str, timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


async def test_a_timeline_event_reaches_the_receiver_signed(
    stack: Stack, receiver: Callable[..., Awaitable[Receiver]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hook = await receiver()
    sub = await subscribe(stack, hook.url, ["ivr.*"])
    call = await interaction(stack, "+34 600 70 00 01")
    said = await record(stack, call, "ivr.input", digit="2")
    await record(stack, call, "agent.answered", agent="bob")  # not wanted by this subscription
    outcome = await record(stack, call, "ivr.outcome", queue="support")

    first, second = await hook.requests.expect_in_order(
        [("webhook", {"body__id": said["id"]}), ("webhook", {"body__id": outcome["id"]})], within=5
    )
    assert first["body"] == said and first["body"]["data"] == {"digit": "2"}
    for got in (first, second):
        headers = got["headers"]
        assert headers["Content-Type"] == "application/json"
        assert headers["Hilo-Signature"] == independent_signature(sub["secret"], headers["Hilo-Timestamp"], got["raw"])
        assert webhooks.verify(sub["secret"], headers, got["raw"])
        assert not webhooks.verify(sub["secret"], headers, got["raw"].replace(b'"voice"', b'"sms"'))
    ids = {
        r["event_id"]: str(r["id"])
        for r in await stack.pool.fetch(
            "SELECT id, event_id FROM webhook_deliveries WHERE subscription_id = $1", uuid.UUID(sub["id"])
        )
    }
    assert ids == {said["id"]: first["headers"]["Hilo-Webhook-Id"], outcome["id"]: second["headers"]["Hilo-Webhook-Id"]}
    states = await eventually(
        lambda: _all_in(stack, sub["id"], "delivered"), within=5, what="deliveries marked delivered"
    )
    assert [(e, s, a) for e, s, a in states] == [(said["id"], "delivered", 1), (outcome["id"], "delivered", 1)]
    assert len(hook.requests.events) == 2
    assert sub["secret"] not in caplog.text


async def _all_in(stack: Stack, subscription_id: str, state: str) -> list[tuple[int, str, int]] | None:
    states = await delivery_states(stack, subscription_id)
    return states if states and all(s == state for _, s, _ in states) else None


@pytest.mark.fault
async def test_a_failing_receiver_gets_it_on_the_third_attempt_and_order_is_kept(
    stack: Stack, receiver: Callable[..., Awaitable[Receiver]], fault_report: FaultReport
) -> None:
    hook = await receiver([500, 503])
    sub = await subscribe(stack, hook.url, ["*"])
    call = await interaction(stack, "+34 600 70 00 02")
    first = await record(stack, call, "test.first")
    later = await record(stack, call, "test.second")

    got = await hook.requests.expect_in_order(
        [("webhook", {"body__id": first["id"], "answer": a}) for a in (500, 503, 200)]
        + [("webhook", {"body__id": later["id"], "answer": 200})],
        within=5,
    )
    # the second event waited behind the first, which was retried with one id and fresh timestamps
    assert [e["body"]["id"] for e in hook.requests.events] == [first["id"]] * 3 + [later["id"]]
    assert len({e["headers"]["Hilo-Webhook-Id"] for e in got[:3]}) == 1
    for e in got:
        assert webhooks.verify(sub["secret"], e["headers"], e["raw"])
    states = await eventually(lambda: _all_in(stack, sub["id"], "delivered"), within=5, what="delivered")
    assert states == [(first["id"], "delivered", 3), (later["id"], "delivered", 1)]
    row = await stack.pool.fetchrow(
        "SELECT last_status, last_error FROM webhook_deliveries WHERE event_id = $1", first["id"]
    )
    assert row is not None and (row["last_status"], row["last_error"]) == (200, None)
    await delivery_figures(stack, fault_report, "webhook receiver failing (500, 503)", 2, {sub["id"]: hook})


@pytest.mark.fault
async def test_a_receiver_slower_than_the_timeout_is_retried(
    stack: Stack, receiver: Callable[..., Awaitable[Receiver]], fault_report: FaultReport
) -> None:
    worker = stack.services.webhooks
    assert worker is not None
    worker.policy = RetryPolicy(max_attempts=3, backoff_s=0.05, backoff_max_s=0.2, timeout_s=0.5)
    hook = await receiver(["hang"])
    sub = await subscribe(stack, hook.url, ["test.*"])
    call = await interaction(stack, "+34 600 70 00 03")
    event = await record(stack, call, "test.slow")
    await hook.requests.expect_in_order(
        [
            ("webhook", {"body__id": event["id"], "answer": "hang"}),
            ("webhook", {"body__id": event["id"], "answer": 200}),
        ],
        within=5,
    )
    states = await eventually(lambda: _all_in(stack, sub["id"], "delivered"), within=5, what="delivered")
    assert states == [(event["id"], "delivered", 2)]
    await delivery_figures(stack, fault_report, "webhook receiver slower than the timeout", 1, {sub["id"]: hook})


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there now: connections are refused


@pytest.mark.fault
async def test_a_down_receiver_dead_letters_and_replay_delivers(
    stack: Stack, receiver: Callable[..., Awaitable[Receiver]], fault_report: FaultReport
) -> None:
    sub = await subscribe(stack, f"http://127.0.0.1:{_closed_port()}/hook", ["test.*"])
    call = await interaction(stack, "+34 600 70 00 04")
    lost = await record(stack, call, "test.lost")
    also_lost = await record(stack, call, "test.also_lost")

    async def dead() -> list[dict[str, Any]] | None:
        resp = await stack.client.get("/api/webhooks/dead-letters", headers=admin(stack))
        found: list[dict[str, Any]] = (await resp.json())["dead_letters"]
        return found if len(found) == 2 else None

    letters = await eventually(dead, within=10, what="both deliveries dead-lettered")
    by_event = {d["event_id"]: d for d in letters}
    assert set(by_event) == {lost["id"], also_lost["id"]}
    for letter in letters:
        assert (letter["state"], letter["attempts"], letter["subscription_id"]) == ("dead", 3, sub["id"])
        assert letter["last_status"] is None and "Connect" in letter["last_error"]
    assert by_event[lost["id"]]["event_type"] == "test.lost"
    # the first was given up before the second was tried: order holds through dead-lettering
    assert by_event[lost["id"]]["dead_at"] <= by_event[also_lost["id"]]["dead_at"]

    hook = await receiver()
    resp = await stack.client.patch(f"/api/webhooks/{sub['id']}", json={"url": hook.url}, headers=admin(stack))
    assert resp.status == 200
    letter = by_event[lost["id"]]
    resp = await stack.client.post(f"/api/webhooks/dead-letters/{letter['id']}/replay", headers=admin(stack))
    replayed = await resp.json()
    assert resp.status == 202 and (replayed["state"], replayed["attempts"], replayed["replays"]) == ("pending", 0, 1)
    got = await hook.requests.expect("webhook", within=5, body__id=lost["id"])
    assert got["headers"]["Hilo-Webhook-Id"] == letter["id"]
    assert webhooks.verify(sub["secret"], got["headers"], got["raw"])
    await eventually(
        lambda: stack.pool.fetchval(
            "SELECT state = 'delivered' FROM webhook_deliveries WHERE id = $1", uuid.UUID(letter["id"])
        ),
        within=5,
        what="replayed delivery marked delivered",
    )
    remaining = (await (await stack.client.get("/api/webhooks/dead-letters", headers=admin(stack))).json())[
        "dead_letters"
    ]
    assert [d["event_id"] for d in remaining] == [also_lost["id"]]
    # a replay of something not dead has no effect
    resp = await stack.client.post(f"/api/webhooks/dead-letters/{letter['id']}/replay", headers=admin(stack))
    assert resp.status == 409 and (await resp.json())["field"] == "delivery_id"
    resp = await stack.client.post(f"/api/webhooks/dead-letters/{uuid.uuid4()}/replay", headers=admin(stack))
    assert resp.status == 404
    assert len(hook.requests.events) == 1
    await delivery_figures(stack, fault_report, "webhook receiver down", 2, {sub["id"]: hook})


@pytest.mark.fault
async def test_two_workers_share_the_work_without_duplicates_or_disorder(
    stack: Stack, receiver: Callable[..., Awaitable[Receiver]], fault_report: FaultReport
) -> None:
    """A second worker, as another Hilo node would run, on the same database."""
    hooks = [await receiver([500]), await receiver(), await receiver([503, 500])]
    subs = [await subscribe(stack, hook.url, ["test.*"]) for hook in hooks]
    other_node = DeliveryWorker(stack.pool, stack.settings.database_url.get_secret_value(), FAST, concurrency=2)
    await other_node.start()
    try:
        calls = [await interaction(stack, f"+34 600 70 01 0{n}") for n in range(3)]
        written = []
        for n in range(8):
            written.append(await record(stack, calls[n % 3], "test.burst", n=n))
        ids = [e["id"] for e in written]
        for hook in hooks:
            await hook.requests.expect("webhook", within=10, body__id=ids[-1], answer=200)
        for hook, sub in zip(hooks, subs, strict=True):
            delivered = [e["body"]["id"] for e in hook.requests.events if e["answer"] == 200]
            assert delivered == ids, "each event delivered once, in order"
            states = await eventually(partial(_all_in, stack, sub["id"], "delivered"), within=5, what="delivered")
            assert len(states) == len(ids)
        by_sub = {sub["id"]: hook for sub, hook in zip(subs, hooks, strict=True)}
        await delivery_figures(
            stack, fault_report, "webhooks: two nodes, failing receivers", len(ids) * len(subs), by_sub
        )
    finally:
        await other_node.close()


async def test_subscription_admin(stack: Stack, receiver: Callable[..., Awaitable[Receiver]]) -> None:
    hook = await receiver()
    created = await subscribe(stack, hook.url, ["ivr.*", "agent.answered", "ivr.*"])
    assert created["event_types"] == ["ivr.*", "agent.answered"] and created["active"] is True
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    url = f"/api/webhooks/{created['id']}"
    one = await (await stack.client.get(url, headers=admin(stack))).json()
    assert "secret" not in one and one["url"] == hook.url
    listed = await (await stack.client.get("/api/webhooks", headers=admin(stack))).json()
    assert [w["id"] for w in listed["webhooks"]] == [created["id"]] and "secret" not in listed["webhooks"][0]
    assert created["secret"] not in json.dumps(listed)

    # paused: no delivery is even queued for it
    resp = await stack.client.patch(url, json={"active": False}, headers=admin(stack))
    assert resp.status == 200 and (await resp.json())["active"] is False
    call = await interaction(stack, "+34 600 70 00 05")
    await record(stack, call, "ivr.input", digit="1")
    assert await stack.pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
    resp = await stack.client.patch(url, json={"active": True, "event_types": ["*"]}, headers=admin(stack))
    assert (await resp.json())["event_types"] == ["*"]
    event = await record(stack, call, "anything.at_all")
    await hook.requests.expect("webhook", within=5, body__id=event["id"])

    for body, field in [
        ({"url": "ftp://example.org/x", "event_types": ["*"]}, "url"),
        ({"url": "http:///nohost", "event_types": ["*"]}, "url"),
        ({"url": hook.url, "event_types": []}, "event_types"),
        ({"url": hook.url, "event_types": ["IVR Input"]}, "event_types.0"),
        ({"url": hook.url, "event_types": ["*"], "secret": "mine"}, "secret"),
        ({"event_types": ["*"]}, "url"),
    ]:
        resp = await stack.client.post("/api/webhooks", json=body, headers=admin(stack))
        assert resp.status == 400 and (await resp.json())["field"] == field, body
    patches: list[tuple[dict[str, Any], str | None]] = [({"active": None}, "active"), ({}, None), ({"url": "x"}, "url")]
    for body, named in patches:
        resp = await stack.client.patch(url, json=body, headers=admin(stack))
        assert resp.status == 400 and (await resp.json())["field"] == named, body
    resp = await stack.client.get("/api/webhooks/dead-letters", params={"limit": "0"}, headers=admin(stack))
    assert resp.status == 400 and (await resp.json())["field"] == "limit"

    resp = await stack.client.delete(url, headers=admin(stack))
    assert resp.status == 204
    assert (await stack.client.get(url, headers=admin(stack))).status == 404
    assert (await stack.client.delete(url, headers=admin(stack))).status == 404
    assert await stack.pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 0


@pytest.mark.fault
async def test_worker_stops_cleanly_with_a_send_in_flight(
    stack: Stack, receiver: Callable[..., Awaitable[Receiver]], fault_report: FaultReport
) -> None:
    """A node stopping mid-send leaves the delivery pending; another node sends it once the lease ends."""
    hook = await receiver(["hang"])
    sub = await subscribe(stack, hook.url, ["test.*"])
    quick = RetryPolicy(max_attempts=3, backoff_s=0.05, backoff_max_s=0.2, timeout_s=0.5)
    node = DeliveryWorker(stack.pool, stack.settings.database_url.get_secret_value(), quick)
    # the app's own worker (the other node) stays out of it until this node stopped: no free sending slots
    app_worker = stack.services.webhooks
    assert app_worker is not None
    app_worker.concurrency, saved = 0, app_worker.concurrency
    try:
        await node.start()
        call = await interaction(stack, "+34 600 70 00 06")
        event = await record(stack, call, "test.inflight")
        await hook.requests.expect("webhook", within=5, body__id=event["id"], answer="hang")
        await node.close()
        assert await delivery_states(stack, sub["id"]) == [(event["id"], "pending", 1)]
    finally:
        app_worker.concurrency = saved
        app_worker.wake()
        with contextlib.suppress(Exception):
            await node.close()
    # the lease (timeout * 2 + 5 s) runs out, then the app's worker takes it over
    await hook.requests.expect("webhook", within=quick.lease_s + 5, body__id=event["id"], answer=200)
    states = await eventually(lambda: _all_in(stack, sub["id"], "delivered"), within=5, what="delivered")
    assert states == [(event["id"], "delivered", 2)]
    await delivery_figures(stack, fault_report, "webhook node stopped mid-send", 1, {sub["id"]: hook})


async def test_the_worker_sleeps_while_a_line_waits_for_its_retry(stack: Stack) -> None:
    """Events queued behind a head that is backing off are not due: the worker waits for the retry time
    (or its poll) rather than spinning."""
    worker = stack.services.webhooks
    assert worker is not None
    worker.policy = RetryPolicy(max_attempts=5, backoff_s=60, backoff_max_s=60, timeout_s=2.0)
    sub = await subscribe(stack, f"http://127.0.0.1:{_closed_port()}/hook", ["test.*"])
    call = await interaction(stack, "+34 600 70 00 07")
    head = await record(stack, call, "test.head")
    behind = await record(stack, call, "test.behind")

    async def first_attempt_failed() -> bool:
        return bool(
            await stack.pool.fetchval(
                "SELECT last_error IS NOT NULL AND leased_until IS NULL FROM webhook_deliveries WHERE event_id = $1",
                head["id"],
            )
        )

    await eventually(first_attempt_failed, within=5, what="the head's first attempt failed")
    assert await delivery_states(stack, sub["id"]) == [(head["id"], "pending", 1), (behind["id"], "pending", 0)]
    assert await worker.seconds_to_next_due() == worker.poll_s  # next retry is 30-60 s away
