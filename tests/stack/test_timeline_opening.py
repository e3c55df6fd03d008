"""A call's interaction opens with its first events in one transaction: one commit and one connection of the
store for what the greeting waits on, not one each; written again (a replay of the spool) it has one effect;
spooled, each of its events keeps the moment it was accepted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from crm_bridge.timeline import Timeline
from hilo.spool import Spool
from tests.stack.conftest import Stack

OPENING: list[tuple[str, dict[str, Any]]] = [
    ("interaction.started", {"dialed": "100", "channel_ref": "c-1"}),
    ("customer.identified", {"new": True}),
]


async def _end(stack: Stack, interaction_id: uuid.UUID) -> None:
    """The timeline is append-only: the test's interaction is ended, not deleted (no open call is left)."""
    await stack.pool.execute(
        "UPDATE interactions SET state = 'ended', outcome = 'abandoned', hangup_by = 'caller', ended_at = now()"
        " WHERE id = $1 AND ended_at IS NULL",
        interaction_id,
    )


async def test_an_interaction_and_its_opening_events_are_one_transaction_written_once(stack: Stack) -> None:
    published: list[dict[str, Any]] = []

    async def publish(event: dict[str, Any]) -> None:
        published.append(event)

    timeline = Timeline(stack.pool, publish)
    customer, iid = uuid.uuid4(), uuid.uuid4()
    try:
        interaction = await timeline.start_interaction(
            customer, "voice", "inbound", interaction_id=iid, new_customer=True, events=OPENING, dialed="100"
        )
        assert [e["type"] for e in published] == ["interaction.started", "customer.identified"]
        assert all(e["id"] is not None and e["interaction_id"] == str(interaction.id) for e in published)
        # Same transaction id: the customer, the interaction and both events were committed together.
        xids = await stack.pool.fetch(
            "SELECT xmin::text AS x FROM customers WHERE id = $1 UNION ALL"
            " SELECT xmin::text FROM interactions WHERE id = $2 UNION ALL"
            " SELECT xmin::text FROM timeline_events WHERE interaction_id = $2",
            customer,
            interaction.id,
        )
        assert len(xids) == 4 and len({r["x"] for r in xids}) == 1
        # Written again (a replay after a crash): no second interaction, no second event.
        record = {
            "op": "start",
            "id": str(interaction.id),
            "customer_id": str(customer),
            "new_customer": True,
            "channel": "voice",
            "direction": "inbound",
            "dialed": "100",
            "channel_ref": None,
            "context": {},
            "started_at": None,
            "events": [
                {**timeline._event(interaction, t, d, None), "uid": e["uid"]}
                for (t, d), e in zip(OPENING, await _uids(stack, interaction.id), strict=True)
            ],
        }
        again = await timeline._apply(stack.pool, record)
        assert [e["type"] for e in again] == ["interaction.started", "customer.identified"]
        written = "SELECT count(*) FROM timeline_events WHERE interaction_id = $1"
        assert await stack.pool.fetchval(written, interaction.id) == 2
    finally:
        await _end(stack, iid)


async def _uids(stack: Stack, interaction_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await stack.pool.fetch(
        "SELECT uid::text AS uid FROM timeline_events WHERE interaction_id = $1 ORDER BY id", interaction_id
    )
    return [dict(r) for r in rows]


async def test_opening_events_spooled_keep_the_moment_they_were_accepted(stack: Stack, tmp_path: Path) -> None:
    published: list[dict[str, Any]] = []

    async def publish(event: dict[str, Any]) -> None:
        published.append(event)

    path = tmp_path / "node.spool"
    unreachable = await asyncpg.create_pool("postgresql://hilo@127.0.0.1:9/hilo", min_size=0, max_size=1)
    spool = Spool(path, 1_000_000)
    spool.open()
    timeline = Timeline(unreachable, publish, spool=spool, budget_s=0.5)
    customer, iid = uuid.uuid4(), uuid.uuid4()
    before = datetime.now(UTC)
    try:
        interaction = await timeline.start_interaction(
            customer, "voice", "inbound", interaction_id=iid, new_customer=True, events=OPENING
        )
    finally:
        spool.close()
        await unreachable.close()
    assert published == []
    again = Spool(path, 1_000_000)
    assert again.open() == 2  # the start with its events, and what it was like (call.degraded)
    replayed = Timeline(stack.pool, publish, spool=again, budget_s=0.5)
    await replayed.start()
    try:
        assert await replayed.written(15)
        events = await stack.pool.fetch(
            "SELECT type, at FROM timeline_events WHERE interaction_id = $1 ORDER BY id", interaction.id
        )
        assert [e["type"] for e in events] == ["interaction.started", "customer.identified", "call.degraded"]
        started_at = await stack.pool.fetchval("SELECT started_at FROM interactions WHERE id = $1", interaction.id)
        assert before <= started_at == events[0]["at"] == events[1]["at"] <= events[2]["at"]
    finally:
        await replayed.close()
        again.close()
        await _end(stack, iid)
