"""The per-contact KPI summary (contact_facts, migration 018) against the timeline it is derived from: a
randomized set of contacts written through Timeline gives the same contacts and the same report rows read
from the summary as grouped from the events at query time; a rebuild gives the rows the trigger kept; and
events of one interaction written concurrently all reach its row."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from crm_bridge import identity
from crm_bridge.timeline import Interaction, Timeline
from reports.config import load_kpi_config
from reports.facts import load_contacts, load_contacts_from_timeline, rebuild
from reports.service import Reports
from tests.stack.conftest import Stack

QUEUES = ("support", "sales")
CHANNELS = ("voice", "webchat", "whatsapp", "sms")


async def _random_contact(timeline: Timeline, rng: random.Random, customer: uuid.UUID, start: datetime) -> Interaction:
    """An interaction with a random selection of the events a contact is made of, some repeated, some
    written out of time order, some after the interaction.started they follow in time."""
    interaction = await timeline.start_interaction(customer, rng.choice(CHANNELS), "inbound", started_at=start)
    at = start
    events: list[tuple[str, dict[str, Any], datetime]] = [("interaction.started", {}, start)]

    def later(low: float, high: float) -> datetime:
        nonlocal at
        at = at + timedelta(seconds=rng.uniform(low, high))
        return at

    if rng.random() < 0.85:
        for _ in range(rng.choice((1, 1, 2))):  # a second routing.queued: the first one counts
            events.append(("routing.queued", {"queue": rng.choice(QUEUES)}, later(1, 30)))
        if rng.random() < 0.15:
            events.append(("callback.requested", {}, later(5, 20)))
            events.append((rng.choice(("callback.connected", "callback.failed")), {}, later(60, 600)))
        if rng.random() < 0.7:
            events.append(("agent.answered", {"agent": rng.choice(("ana", "bob", "eve"))}, later(1, 60)))
            for _ in range(rng.choice((0, 0, 1, 2))):
                events.append(("call.held", {}, later(5, 60)))
                if rng.random() < 0.8:
                    events.append(("call.unheld", {}, later(5, 60)))
            if rng.random() < 0.3:
                events.append(("agent.call_ended", {}, later(30, 300)))
    if rng.random() < 0.9:
        outcome = rng.choice(("completed", "abandoned", "transferred", "callback-requested"))
        events.append(("interaction.ended", {"outcome": outcome, "hangup_by": "caller"}, later(10, 300)))
        if rng.random() < 0.5:
            events.append(("agent.disposition", {"agent": "ana"}, later(0, 400)))
        for question, high in (("csat", 5), ("nps", 10), ("ces", 7)):
            if rng.random() < 0.3:
                events.append(("survey.answer", {"question": question, "score": rng.randint(0, high)}, later(5, 30)))
    events.append(("ivr.step", {"node": "menu"}, start + timedelta(seconds=2)))  # not a contact event
    if rng.random() < 0.3:  # an event written before interaction.started
        events.insert(0, events.pop(len(events) // 2))
    for type_, data, when in events:
        await timeline.record(interaction, type_, data, at=when)
    return interaction


async def _facts_rows(stack: Stack) -> list[dict[str, Any]]:
    return [dict(r) for r in await stack.pool.fetch("SELECT * FROM contact_facts ORDER BY interaction_id")]


def _by_id(contacts: list[Any]) -> list[Any]:
    return sorted(contacts, key=lambda c: c.interaction_id)


async def test_summary_and_timeline_agree_on_random_contacts(stack: Stack) -> None:
    assert stack.services.timeline is not None
    timeline = stack.services.timeline
    rng = random.Random()
    seed = rng.randrange(1_000_000)
    rng.seed(seed)
    customers = [
        (await identity.identify_or_create(stack.pool, "phone", f"+34 600 71 00 {n:02d}", "ES")).customer_id
        for n in range(8)
    ]
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=5)
    for _ in range(60):
        start = base + timedelta(seconds=rng.uniform(0, 4 * 86_400))
        await _random_contact(timeline, rng, rng.choice(customers), start)
    # A merged customer's contacts are the survivor's on both paths.
    await identity.merge(stack.pool, customers[0], customers[1], "test", "same person")

    start, end = base + timedelta(days=1), base + timedelta(days=3)
    summary = _by_id(await load_contacts(stack.pool, start, end))
    direct = _by_id(await load_contacts_from_timeline(stack.pool, start, end))
    assert summary, f"seed {seed}: no contacts in the period"
    assert summary == direct, f"seed {seed}"

    config = load_kpi_config(stack.settings.dialplans_dir, {"support": 20.0, "sales": 30.0})
    now = base + timedelta(days=4, hours=12)  # some repeat windows over, some still open
    for by in ("none", "channel", "queue", "agent"):
        rows = await Reports(stack.pool, config).rows(start, end, "day", by, now=now)
        expected = await Reports(stack.pool, config, from_timeline=True).rows(start, end, "day", by, now=now)
        assert rows == expected, f"seed {seed}, by {by}"
    totals = (await Reports(stack.pool, config).rows(start, end, "period", "none", now=now))[0].kpis
    assert totals.contacts == len(summary) and totals.fcr_contacts + totals.fcr_pending > 0, f"seed {seed}"


async def test_a_rebuild_gives_the_rows_the_trigger_kept(stack: Stack) -> None:
    assert stack.services.timeline is not None
    rng = random.Random()
    seed = rng.randrange(1_000_000)
    rng.seed(seed)
    customer = (await identity.identify_or_create(stack.pool, "phone", "+34 600 72 00 01", "ES")).customer_id
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    for n in range(25):
        await _random_contact(stack.services.timeline, rng, customer, base + timedelta(minutes=17 * n))
    kept = await _facts_rows(stack)
    assert len(kept) == 25, f"seed {seed}"
    assert await rebuild(stack.pool) == 25
    assert await _facts_rows(stack) == kept, f"seed {seed}"


async def test_events_of_one_contact_written_at_once_all_reach_its_row(stack: Stack) -> None:
    assert stack.services.timeline is not None
    timeline = stack.services.timeline
    customer = (await identity.identify_or_create(stack.pool, "phone", "+34 600 73 00 01", "ES")).customer_id
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    interaction = await timeline.start_interaction(customer, "voice", "inbound", started_at=start)
    holds = [start + timedelta(seconds=10 * n) for n in range(1, 13)]
    # Each on its own pooled connection, so the trigger runs in concurrent transactions.
    await asyncio.gather(
        timeline.record(interaction, "interaction.started", {}, at=start),
        timeline.record(interaction, "routing.queued", {"queue": "support"}, at=start + timedelta(seconds=1)),
        timeline.record(interaction, "agent.answered", {"agent": "ana"}, at=start + timedelta(seconds=5)),
        *(timeline.record(interaction, "call.held", {}, at=at) for at in holds),
    )
    row = await stack.pool.fetchrow("SELECT * FROM contact_facts WHERE interaction_id = $1", interaction.id)
    assert row is not None
    assert (row["queue"], row["agent"], sorted(row["held"])) == ("support", "ana", holds)
    view = await stack.pool.fetchrow(
        "SELECT * FROM contact_facts_from_timeline WHERE interaction_id = $1", interaction.id
    )
    assert view is not None and dict(row) == dict(view)
