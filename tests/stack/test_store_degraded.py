"""A slow or missing customer store never costs a call: a call placed while identification is stalled is
still routed, and is identified when the store answers; timeline writes that cannot reach PostgreSQL are kept
in the node's spool and written once each when it is back; background work cannot starve the calls."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.exceptions

from crm_bridge.timeline import Timeline
from hilo.spool import Spool
from tests.stack.conftest import Stack
from tests.stack.faults import FaultReport, calls_up_during, kept_by_callers, timeline_missing
from tests.stack.test_calls import KNOWN_CALLER, place
from tests.stack.test_screenpop import console_feed, sign_in

pytestmark = pytest.mark.fault
# What a call answered by an agent has on its timeline, whatever happened on the way.
ANSWERED = ("interaction.started", "routing.queued", "agent.answered", "interaction.ended")


async def one_call_figures(
    stack: Stack,
    fault_report: FaultReport,
    fault: str,
    window: tuple[datetime, datetime],
    mark: int,
    interaction: str,
    *happened: str,
) -> None:
    """The calls up while the fault lasted (`window`): kept if their callers ended them; the test's call's
    timeline against what it produced."""
    in_flight = await calls_up_during(stack.pool, *window)
    assert interaction in in_flight, (interaction, in_flight)
    figures = fault_report.fault(fault).calls(
        in_flight=len(in_flight), kept=await kept_by_callers(stack.pool, in_flight)
    )
    required = {interaction: (*ANSWERED, *happened)}
    figures.timeline(*await timeline_missing(stack.pool, stack.hilo_events.events[mark:], required))


@contextlib.asynccontextmanager
async def stalled(stack: Stack, table: str) -> AsyncIterator[None]:
    """Every query on `table` waits (another session holds it in ACCESS EXCLUSIVE mode) until the block ends."""
    blocker = await asyncpg.connect(stack.settings.database_url.get_secret_value())
    try:
        async with blocker.transaction():
            await blocker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            yield
            # leaving the block commits the empty transaction, which releases the lock
    finally:
        await blocker.close()


async def test_a_call_placed_while_identification_is_stalled_is_routed_then_identified(
    stack: Stack, fault_report: FaultReport
) -> None:
    mark = stack.hilo_events.mark()
    ana = await ana_id(stack)
    bob = await sign_in(stack, "bob", "agent", "bob")
    async with console_feed(stack, bob) as agent:
        async with stalled(stack, "identities"):  # the identification query waits behind the lock
            began = datetime.now(UTC)
            call, started = await place(stack, KNOWN_CALLER, "2")
            interaction = started["interaction_id"]
            await stack.hilo_events.expect(
                "call.degraded", within=5, interaction_id=interaction, data__part="store", data__what="identify"
            )
            # Routed while the store still does not answer: as a caller not identified yet (greeted as new).
            await stack.hilo_events.expect_in_order(
                [
                    ("ivr.say", {"interaction_id": interaction, "data__node": "greet"}),
                    ("routing.queued", {"interaction_id": interaction, "data__queue": "support"}),
                ],
                within=20,
            )
            assert not [
                e
                for e in stack.hilo_events.events[stack.hilo_events.baseline :]
                if e["type"] == "customer.identified" and e["interaction_id"] == interaction
            ]
            stalled_window = (began, datetime.now(UTC))
        # The store answers: the caller is identified, the interaction is Ana's, and bob's pop says so.
        identified = await stack.hilo_events.expect(
            "customer.identified", within=15, interaction_id=interaction, data__late=True
        )
        assert identified["customer_id"] == str(ana)
        assert identified["data"] == {"by": "caller_number", "new": False, "late": True}
        await stack.hilo_events.expect("agent.answered", within=30, interaction_id=interaction, data__agent="bob")
        pop = await agent.messages.expect(
            "screenpop", within=15, interaction_id=interaction, customer__name="Ana García"
        )
        assert pop["customer"]["identified_by"] == "caller_number" and pop["customer"]["identifying"] is False
        await stack.observer.hangup(call.caller_leg)
        ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    assert ended["data"] == {"outcome": "completed", "hangup_by": "caller"}
    assert ended["customer_id"] == str(ana)
    row = await stack.pool.fetchrow("SELECT customer_id, agent_id FROM interactions WHERE id = $1::uuid", interaction)
    assert row is not None and (row["customer_id"], row["agent_id"]) == (ana, "bob")
    # The stand-in customer of the first seconds is merged into Ana (audited, can be undone); her timeline
    # has the whole call.
    merge = await stack.pool.fetchrow(
        "SELECT merged_by, interaction_ids FROM customer_merges WHERE survivor_id = $1", ana
    )
    assert merge is not None
    assert (merge["merged_by"], merge["interaction_ids"]) == ("system:identification@system", [uuid.UUID(interaction)])
    types = [
        e["type"]
        for e in await _timeline(stack, ana)
        if e["interaction_id"] == interaction and e["type"] in ("interaction.started", "customer.identified")
    ]
    assert types == ["interaction.started", "customer.identified"]
    metrics = await (await stack.client.get("/metrics")).text()
    assert 'hilo_degraded_total{part="store",what="identify"}' in metrics
    await one_call_figures(
        stack,
        fault_report,
        "PostgreSQL identification stalled",
        stalled_window,
        mark,
        interaction,
        "call.degraded",
        "customer.identified",
    )


async def test_timeline_writes_while_the_store_is_unreachable_are_spooled_and_written_once(
    stack: Stack, tmp_path: Path, fault_report: FaultReport
) -> None:
    ana = await ana_id(stack)
    published: list[dict[str, Any]] = []

    async def publish(event: dict[str, Any]) -> None:
        published.append(event)

    path = tmp_path / "node.spool"
    # A PostgreSQL nobody listens for: every write fails at once (connection refused).
    unreachable = await asyncpg.create_pool("postgresql://hilo@127.0.0.1:9/hilo", min_size=0, max_size=1)
    spool = Spool(path, 1_000_000)
    spool.open()
    timeline = Timeline(unreachable, publish, spool=spool, budget_s=0.5)
    await timeline.start()
    before = datetime.now(UTC)
    try:
        interaction = await timeline.start_interaction(
            ana, "voice", "inbound", interaction_id=uuid.uuid4(), dialed="100", context={"dialed": "100"}
        )
        spooled = await timeline.record(interaction, "ivr.flow_started", {"flow": "demo"})
        await timeline.update(interaction, state="queued", queue="support")
        assert await timeline.end_interaction(interaction, "abandoned", "caller")
    finally:
        await timeline.close()  # the node stops (or dies) with the writes still in its spool
        spool.close()
        await unreachable.close()
    assert spooled["id"] is None and published == []
    assert await stack.pool.fetchval("SELECT count(*) FROM interactions WHERE id = $1", interaction.id) == 0

    # The node starts again with PostgreSQL back: the spool is replayed in order.
    again = Spool(path, 1_000_000)
    assert again.open() == 5  # the start, what it was like (call.degraded), the event, the update, the end
    records = [e.record for e in again.pending()]
    replayed_at = datetime.now(UTC)
    replayed = Timeline(stack.pool, publish, spool=again, budget_s=0.5)
    await replayed.start()
    try:
        assert await replayed.written(15)
        # Writing again what is already written (a crash before the spool was told) has no second effect:
        # the interaction by its id, events by their own uid, the end once. (An update is only ever applied
        # again right after itself, the spool's offset sees to that, where it changes nothing.)
        for record in records:
            if record["op"] != "update":
                await replayed._apply(stack.pool, record)
    finally:
        await replayed.close()
        again.close()
    row = await stack.pool.fetchrow("SELECT * FROM interactions WHERE id = $1", interaction.id)
    assert row is not None
    assert (row["state"], row["queue"], row["outcome"], row["hangup_by"]) == ("ended", "support", "abandoned", "caller")
    events = await stack.pool.fetch(
        "SELECT type, at, data FROM timeline_events WHERE interaction_id = $1 ORDER BY id", interaction.id
    )
    assert [e["type"] for e in events] == ["call.degraded", "ivr.flow_started", "interaction.ended"]
    assert events[0]["data"] == {"part": "store", "what": "timeline.start"}
    events = events[1:]
    # Each fact keeps the moment it was accepted, not the moment it was replayed.
    assert before <= row["started_at"] <= events[0]["at"] <= events[1]["at"] == row["ended_at"] < replayed_at
    assert [e["type"] for e in published] == ["call.degraded", "ivr.flow_started", "interaction.ended"]
    assert path.stat().st_size == 0
    # No call here (the timeline is driven directly): the events accepted while the store was away against
    # the rows written once it was back.
    accepted = {str(interaction.id): ("call.degraded", "ivr.flow_started", "interaction.ended")}
    fault_report.fault("PostgreSQL unreachable: timeline spooled").timeline(
        *await timeline_missing(stack.pool, published, accepted)
    )


async def test_background_work_holding_all_its_connections_does_not_starve_a_call(
    stack: Stack, fault_report: FaultReport
) -> None:
    mark = stack.hilo_events.mark()
    background = stack.services.background_pool
    assert background is not None and background is not stack.pool
    assert stack.services.webhooks is not None and stack.services.webhooks.pool is background
    assert stack.services.messaging is not None and stack.services.messaging.outbox.pool is background
    held = [await background.acquire() for _ in range(background.get_max_size())]
    began = datetime.now(UTC)
    try:
        call, started = await place(stack, KNOWN_CALLER, "2")
        interaction = started["interaction_id"]
        await stack.hilo_events.expect("agent.answered", within=30, interaction_id=interaction, data__agent="bob")
        await stack.observer.hangup(call.caller_leg)
        await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    finally:
        window = (began, datetime.now(UTC))
        for conn in held:
            await background.release(conn)
    await one_call_figures(stack, fault_report, "background pool exhausted", window, mark, interaction)


async def test_a_call_waits_with_music_while_routing_does_not_answer_and_is_routed_when_it_does(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, fault_report: FaultReport
) -> None:
    mark = stack.hilo_events.mark()
    engine = stack.services.routing
    assert engine is not None
    real_enqueue, real_wait = engine.enqueue, engine.wait_for_offer
    failures = {"enqueue": 2, "wait": 2}  # Redis restarting: the first questions get no answer

    async def enqueue(*args: Any, **kwargs: Any) -> Any:
        if failures["enqueue"]:
            failures["enqueue"] -= 1
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return await real_enqueue(*args, **kwargs)

    async def wait_for_offer(*args: Any, **kwargs: Any) -> Any:
        if failures["wait"]:
            failures["wait"] -= 1
            raise redis.exceptions.TimeoutError("Timeout reading from 127.0.0.1:6379")
        return await real_wait(*args, **kwargs)

    monkeypatch.setattr(engine, "enqueue", enqueue)
    monkeypatch.setattr(engine, "wait_for_offer", wait_for_offer)
    began = datetime.now(UTC)
    # Nobody can take it at first: the caller waits (where routing is asked for an offer) before bob is free.
    assert stack.services.board is not None
    await stack.services.board.set_state("bob", "away", reason="test")
    call, started = await place(stack, KNOWN_CALLER, "2")
    interaction = started["interaction_id"]
    await stack.hilo_events.expect(
        "call.degraded", within=15, interaction_id=interaction, data__part="redis", data__what="enqueue"
    )
    await stack.hilo_events.expect("routing.queued", within=15, interaction_id=interaction)
    await stack.hilo_events.expect(
        "call.degraded", within=15, interaction_id=interaction, data__part="redis", data__what="wait"
    )
    await stack.services.board.set_state("bob", "available")
    await stack.hilo_events.expect("agent.answered", within=30, interaction_id=interaction, data__agent="bob")
    assert failures == {"enqueue": 0, "wait": 0}
    window = (began, datetime.now(UTC))  # routing answers again
    seen = [e["type"] for e in stack.hilo_events.events[stack.hilo_events.baseline :]]
    assert "routing.refused" not in seen  # never turned away for it
    await stack.observer.hangup(call.caller_leg)
    ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    assert ended["data"] == {"outcome": "completed", "hangup_by": "caller"}
    await one_call_figures(stack, fault_report, "routing not answering", window, mark, interaction, "call.degraded")


async def ana_id(stack: Stack) -> uuid.UUID:
    found: uuid.UUID = await stack.pool.fetchval(
        "SELECT customer_id FROM identities WHERE kind = 'phone' AND value = $1", KNOWN_CALLER
    )
    return found


async def _timeline(stack: Stack, customer_id: uuid.UUID) -> list[dict[str, Any]]:
    resp = await stack.client.get(
        f"/api/customers/{customer_id}/timeline", headers={"Authorization": f"Bearer {stack.token}"}
    )
    assert resp.status == 200
    events: list[dict[str, Any]] = (await resp.json())["events"]
    return events
