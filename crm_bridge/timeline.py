"""Interactions and the append-only timeline. A fact is stored in PostgreSQL first, then handed to the
notifier, so nothing published can be missing from the store: `Timeline.record` does both.

`open_interaction` and `append` are the only writes of a new interaction and of a timeline event. They take
the pool or a connection, so a feature that writes a fact together with rows of its own does it in its own
transaction, and publishes the event itself once that has committed.

A slow store never holds up a call: with a spool, the `Timeline` writes of a call (its start, events,
updates, end, and the late link to its customer) wait on PostgreSQL at most `budget_s`, then go to the node's
durable spool (hilo/spool.py) and are written, in order and once each, when the store answers again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry

from crm_bridge import identity
from hilo import audit
from hilo.db import connection
from hilo.degraded import STORE_DOWN, Degradations
from hilo.spool import Spool, SpoolFull

if TYPE_CHECKING:
    from hilo.db import Conn

log = logging.getLogger(__name__)

Publish = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Interaction:
    id: uuid.UUID
    customer_id: uuid.UUID
    channel: str
    context: dict[str, Any] = field(default_factory=dict)


def event_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "at": row["at"].isoformat(),
        "channel": row["channel"],
        "customer_id": str(row["customer_id"]),
        "interaction_id": str(row["interaction_id"]) if row["interaction_id"] else None,
        "data": row["data"],
    }


# Event data that is not shared beyond the store (webhooks, and timeline readers other than admins), by type:
# a transcript's words. A webhook receiver could never be made to forget them when the recording is deleted,
# and a supervisor reading a customer's timeline may be outside the recording's teams. They get the event
# with `withheld` naming what was left out, and fetch it where access is checked (the event's
# `transcript_url`, GET /api/recordings/{id}/transcript), gone once the recording is deleted.
WITHHELD: dict[str, tuple[str, ...]] = {"recording.transcribed": ("text",)}


def shareable(event: dict[str, Any]) -> dict[str, Any]:
    """The event without its WITHHELD data (a redacted event's null text is left as it is)."""
    keys = [k for k in WITHHELD.get(event["type"], ()) if event["data"].get(k) is not None]
    if not keys:
        return event
    data = {k: v for k, v in event["data"].items() if k not in keys}
    return {**event, "data": {**data, "withheld": keys}}


class InteractionDetails(TypedDict, total=False):
    """What a new interaction may also be given (each None by default)."""

    dialed: str | None
    channel_ref: str | None  # the Asterisk channel id of the customer's leg
    context: dict[str, Any] | None
    started_at: datetime | None  # for facts that happened earlier (a provider's own timestamp, a history import)


async def open_interaction(
    db: asyncpg.Pool | Conn,
    customer_id: uuid.UUID,
    channel: str,
    direction: str,
    *,
    interaction_id: uuid.UUID | None = None,
    new_customer: bool = False,
    **details: Unpack[InteractionDetails],
) -> uuid.UUID:
    """A new interaction (in the IVR state); its id. `interaction_id`: the id Hilo gave it (opening it again
    has no second effect). `new_customer`: its customer is made with it (a caller not identified yet)."""
    async with connection(db) as conn:
        # within the caller's transaction (the opening events with it), no savepoint: two round trips less
        atomic = new_customer and not conn.is_in_transaction()
        async with conn.transaction() if atomic else contextlib.nullcontext():
            made = await _open(conn, customer_id, channel, direction, interaction_id, new_customer, details)
    result = interaction_id or made
    assert result is not None
    return result


async def _open(
    conn: Conn,
    customer_id: uuid.UUID,
    channel: str,
    direction: str,
    interaction_id: uuid.UUID | None,
    new_customer: bool,
    details: InteractionDetails,
) -> uuid.UUID | None:
    if new_customer:
        await conn.execute("INSERT INTO customers (id) VALUES ($1) ON CONFLICT (id) DO NOTHING", customer_id)
    made: uuid.UUID | None = await conn.fetchval(
        "INSERT INTO interactions"
        " (id, customer_id, channel, direction, state, dialed, channel_ref, context, started_at)"
        " VALUES (coalesce($1, gen_random_uuid()), $2, $3, $4, 'ivr', $5, $6, $7, coalesce($8, now()))"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        interaction_id,
        customer_id,
        channel,
        direction,
        details.get("dialed"),
        details.get("channel_ref"),
        details.get("context") or {},
        details.get("started_at"),
    )
    return made


# An event's customer and channel default to the interaction's (its customer as it is now, after any merge).
# `uid` is the event's own id: writing it again (a replay from the spool) has no second effect.
_APPEND = """
INSERT INTO timeline_events (customer_id, interaction_id, type, channel, data, at, uid)
VALUES (coalesce($1, (SELECT customer_id FROM interactions WHERE id = $2)), $2, $3,
        coalesce($4, (SELECT channel FROM interactions WHERE id = $2)), $5, coalesce($6, clock_timestamp()), $7)
ON CONFLICT (uid) DO NOTHING
RETURNING *"""


async def append(
    db: asyncpg.Pool | Conn,
    interaction_id: uuid.UUID,
    customer_id: uuid.UUID | None,
    channel: str | None,
    type_: str,
    data: dict[str, Any],
    *,
    at: datetime | None = None,
    uid: uuid.UUID | None = None,
) -> dict[str, Any]:
    """Write one event on the timeline; the event as it is published (`event_json`). Publishing is the
    caller's, once the event is committed. `customer_id` or `channel` None: the interaction's. `at` is for
    facts that happened earlier; by default the fact happens now. `uid`: the event's own id, given when the
    fact was accepted; an event already written with it is not written again (and is returned as it is)."""
    uid = uid or uuid.uuid4()
    async with connection(db) as conn:
        row = await conn.fetchrow(_APPEND, customer_id, interaction_id, type_, channel, data, at, uid)
        if row is None:
            row = await conn.fetchrow("SELECT * FROM timeline_events WHERE uid = $1", uid)
    assert row is not None
    return event_json(row)


# Who links a call's interaction to its caller when identification answered after the call began.
LATE_IDENTIFICATION_ACTOR = audit.system("identification")


class Timeline:
    """Interactions and their events, as the calls write them. With a spool (hilo/spool.py), no write waits
    on PostgreSQL longer than `budget_s`: one that does not answer in time (or cannot reach it) is kept in
    the node's spool, and every write after it joins the spool too (the order of one interaction's facts is
    kept), until the replay has written them all. A write is durable when it returns either way; events are
    published once they are in PostgreSQL (at once, or when replayed)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        publish: Publish,
        *,
        spool: Spool | None = None,
        budget_s: float = 1.0,
        degradations: Degradations | None = None,
    ) -> None:
        self.pool = pool
        self.publish = publish
        self.spool = spool
        self.budget_s = budget_s
        self.degradations = degradations or Degradations(CollectorRegistry())
        self._replay: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Replay the spool (records left by an earlier run first) for as long as the timeline is open."""
        if self.spool is not None and self._replay is None:
            self._replay = asyncio.create_task(self.spool.run(self._replay_one, transient=STORE_DOWN), name="spool")

    async def close(self) -> None:
        if self._replay is not None:
            self._replay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay
            self._replay = None

    async def start_interaction(
        self,
        customer_id: uuid.UUID,
        channel: str,
        direction: str,
        *,
        interaction_id: uuid.UUID | None = None,
        new_customer: bool = False,
        events: Sequence[tuple[str, dict[str, Any]]] = (),
        **details: Unpack[InteractionDetails],
    ) -> Interaction:
        """`interaction_id`: given by the caller, so nothing waits on the store to have one (a new one if
        None). `new_customer`: the customer is made with the interaction (a caller not identified yet).
        `events` (type, data): the interaction's first events, written in the same transaction (one commit
        and one connection for the lot, not one each: a call's opening costs one round of the store)."""
        iid = interaction_id or uuid.uuid4()
        context = dict(details.get("context") or {})
        interaction = Interaction(iid, customer_id, channel, context)
        await self._write(
            {
                "op": "start",
                "id": str(iid),
                "customer_id": str(customer_id),
                "new_customer": new_customer,
                "channel": channel,
                "direction": direction,
                "dialed": details.get("dialed"),
                "channel_ref": details.get("channel_ref"),
                "context": context,
                "started_at": _iso(details.get("started_at")),
                "events": [self._event(interaction, type_, data, None) for type_, data in events],
            }
        )
        return interaction

    async def record(
        self, interaction: Interaction, type_: str, data: dict[str, Any] | None = None, *, at: datetime | None = None
    ) -> dict[str, Any]:
        """`at` is for facts that happened earlier (a provider's own timestamp, a history import); by
        default the fact happens now. The event as published (its `id` is None while it is in the spool)."""
        record = self._event(interaction, type_, data or {}, at)
        written = await self._write(record)
        return written[0] if written else _unwritten_event(record)

    async def update(self, interaction: Interaction, **fields: Any) -> None:
        """Set columns of the interaction (state, queue, agent_id, answered_at, ...) and merge its context."""
        allowed = {"state", "queue", "agent_id", "answered_at"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown interaction fields: {sorted(unknown)}")
        if "answered_at" in fields:
            fields["answered_at"] = _iso(fields["answered_at"])
        await self._write(
            {
                "op": "update",
                "interaction_id": str(interaction.id),
                "context": dict(interaction.context),
                "fields": fields,
            }
        )

    async def end_interaction(
        self, interaction: Interaction, outcome: str, hangup_by: str, ended_at: datetime | None = None
    ) -> bool:
        """End it once: returns False if it had already ended (a duplicate hang-up has one effect). One that
        went to the spool is taken as ended now (True)."""
        event = self._event(interaction, "interaction.ended", {"outcome": outcome, "hangup_by": hangup_by}, ended_at)
        record = {
            "op": "end",
            "interaction_id": str(interaction.id),
            "outcome": outcome,
            "hangup_by": hangup_by,
            "context": dict(interaction.context),
            "event": event,
        }
        written = await self._write(record)
        return written is None or bool(written)

    async def identified_late(
        self, interaction: Interaction, customer_id: uuid.UUID, data: dict[str, Any]
    ) -> dict[str, Any]:
        """The caller of an interaction opened for a customer not identified yet (`new_customer`) is known now:
        that stand-in customer is merged into `customer_id` (audited, can be undone: crm_bridge/identity.py),
        so the interaction and its events are the customer's, and `customer.identified` is recorded."""
        provisional = interaction.customer_id
        interaction.customer_id = customer_id  # the events from now on are the customer's
        event = self._event(interaction, "customer.identified", data, None)
        written = await self._write({"op": "link", "provisional": str(provisional), "event": event})
        return written[0] if written else _unwritten_event(event)

    async def written(self, timeout: float) -> bool:
        """Wait until everything accepted so far is in PostgreSQL (the spool replayed); False if `timeout`
        passed first."""
        if self.spool is None or not len(self.spool):
            return True
        last = self.spool.last()
        return last is None or await self.spool.written(last, timeout)

    # -- writing -----------------------------------------------------------------------------------
    def _event(
        self, interaction: Interaction, type_: str, data: dict[str, Any], at: datetime | None
    ) -> dict[str, Any]:
        return {
            "op": "event",
            "uid": str(uuid.uuid4()),
            "interaction_id": str(interaction.id),
            "customer_id": str(interaction.customer_id),
            "channel": interaction.channel,
            "type": type_,
            "data": data,
            "at": _iso(at),
        }

    async def _write(self, record: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Write one record: the events it wrote (published), or None when it went to the spool (then its
        fact keeps the moment it was accepted as its time, not the moment it is replayed)."""
        accepted = datetime.now(UTC)
        if self.spool is None:
            return await self._publish(await self._apply(self.pool, record))
        records = [record]
        if not len(self.spool):
            try:
                events = await asyncio.wait_for(self._apply(self.pool, record), self.budget_s)
            except STORE_DOWN as exc:
                what = f"timeline.{record['op']}"
                self.degradations.note("store", what, type(exc).__name__)
                records.append(_degraded_event(record, what))  # the call's timeline tells of it
            else:
                return await self._publish(events)
        for each in records:
            _stamp(each, accepted)
            try:
                await self.spool.append(each)
            except (SpoolFull, OSError) as exc:  # the fact is lost; the call goes on
                self.degradations.note("spool", "full" if isinstance(exc, SpoolFull) else "failed", str(exc))
                log.error("timeline %s of interaction %s lost: %s", each["op"], _interaction_of(each), exc)
        return None

    async def _publish(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Handed over together, in order: the notifier sends them in one round trip (hilo/notifier.py).
        await asyncio.gather(*(self.publish(event) for event in events))
        return events

    async def _replay_one(self, record: dict[str, Any]) -> None:
        await self._publish(await self._apply(self.pool, record))

    async def _apply(self, pool: asyncpg.Pool, record: dict[str, Any]) -> list[dict[str, Any]]:
        """Write one record, atomically; the events it wrote. Idempotent: every record can be applied again
        (a replay after a crash, a write that timed out but had committed) with one effect."""
        op = record["op"]
        atomic = op in ("end", "link") or (op == "start" and bool(record.get("events")))
        async with pool.acquire() as conn, conn.transaction() if atomic else contextlib.nullcontext():
            if op == "start":
                await open_interaction(
                    conn,
                    uuid.UUID(record["customer_id"]),
                    record["channel"],
                    record["direction"],
                    interaction_id=uuid.UUID(record["id"]),
                    new_customer=record["new_customer"],
                    dialed=record["dialed"],
                    channel_ref=record["channel_ref"],
                    context=record["context"],
                    started_at=_when(record["started_at"]),
                )
                return [await _append_record(conn, event) for event in record.get("events", ())]
            if op == "event":
                return [await _append_record(conn, record)]
            if op == "update":
                fields = dict(record["fields"])
                if fields.get("answered_at") is not None:
                    fields["answered_at"] = _when(fields["answered_at"])
                sets = [f"{name} = ${i}" for i, name in enumerate(fields, start=3)]
                await conn.execute(
                    f"UPDATE interactions SET context = context || $2, {', '.join(sets) or 'id = id'}"  # noqa: S608 (names checked in update)
                    " WHERE id = $1",
                    uuid.UUID(record["interaction_id"]),
                    record["context"],
                    *fields.values(),
                )
                return []
            if op == "end":
                event = record["event"]
                ended = await conn.fetchval(
                    "UPDATE interactions SET state = 'ended', outcome = $2, hangup_by = $3,"
                    " ended_at = coalesce($4, now()), context = context || $5"
                    " WHERE id = $1 AND ended_at IS NULL RETURNING true",
                    uuid.UUID(record["interaction_id"]),
                    record["outcome"],
                    record["hangup_by"],
                    _when(event["at"]),
                    record["context"],
                )
                if not ended:
                    return []
                return [await _append_record(conn, event)]
            if op == "link":
                await _link(conn, uuid.UUID(record["provisional"]), uuid.UUID(record["event"]["customer_id"]))
                return [await _append_record(conn, record["event"])]
        raise ValueError(f"unknown timeline record {op!r}")

    async def customer_timeline(self, customer_id: uuid.UUID, limit: int = 500) -> list[dict[str, Any]]:
        """The customer's events and those of every customer merged into it (directly or through a chain
        of merges): a merge never rewrites events, it points the merged customer at the survivor."""
        rows = await self.pool.fetch(
            "WITH RECURSIVE family (id) AS ("
            " SELECT $1::uuid UNION SELECT c.id FROM customers c JOIN family f ON c.merged_into = f.id)"
            " SELECT * FROM timeline_events WHERE customer_id IN (SELECT id FROM family) ORDER BY at, id LIMIT $2",
            customer_id,
            limit,
        )
        return [event_json(r) for r in rows]

    async def page(
        self, customer_id: uuid.UUID, before: int | None = None, limit: int = 500
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One page of the customer's timeline (merged customers included), oldest first: the `limit`
        newest events older than event `before` (or the newest of all), and the `before` of the next older
        page (None on the oldest). LookupError if `before` is not an event of this timeline."""
        async with self.pool.acquire() as conn:
            cursor = None
            if before is not None:
                cursor = await conn.fetchrow(_PAGE_CURSOR, customer_id, before)
                if cursor is None:
                    raise LookupError(f"event {before} is not on this customer's timeline")
            rows = await conn.fetch(
                _PAGE,
                customer_id,
                cursor["at"] if cursor else None,
                cursor["id"] if cursor else None,
                limit + 1,
            )
        newest_first = [event_json(r) for r in rows[:limit]]
        next_before = newest_first[-1]["id"] if len(rows) > limit else None
        return newest_first[::-1], next_before


# Both over the family of $1: the customer and every customer merged into it, directly or in a chain.
_PAGE_CURSOR = """
WITH RECURSIVE family (id) AS (SELECT $1::uuid UNION SELECT c.id FROM customers c JOIN family f ON c.merged_into = f.id)
SELECT at, id FROM timeline_events WHERE id = $2 AND customer_id IN (SELECT id FROM family)
"""
_PAGE = """
WITH RECURSIVE family (id) AS (SELECT $1::uuid UNION SELECT c.id FROM customers c JOIN family f ON c.merged_into = f.id)
SELECT * FROM timeline_events WHERE customer_id IN (SELECT id FROM family)
  AND ($2::timestamptz IS NULL OR (at, id) < ($2, $3::bigint))
ORDER BY at DESC, id DESC LIMIT $4
"""


async def _append_record(conn: Conn, event: dict[str, Any]) -> dict[str, Any]:
    return await append(
        conn,
        uuid.UUID(event["interaction_id"]),
        uuid.UUID(event["customer_id"]) if event["customer_id"] else None,
        event["channel"],
        event["type"],
        event["data"],
        at=_when(event["at"]),
        uid=uuid.UUID(event["uid"]),
    )


async def _link(conn: Conn, provisional: uuid.UUID, customer_id: uuid.UUID) -> None:
    """Merge the stand-in customer of a call identified late into the customer (once: a replay finds it
    merged already)."""
    merged_into = await conn.fetchval("SELECT merged_into FROM customers WHERE id = $1", provisional)
    if merged_into is not None:
        return
    survivor = (await identity.survivor_of(conn, customer_id)).customer_id
    if survivor == provisional:
        return
    await identity.merge_in(
        conn, survivor, provisional, LATE_IDENTIFICATION_ACTOR, "the caller was identified after the call began"
    )


def _degraded_event(record: dict[str, Any], what: str) -> dict[str, Any]:
    """`call.degraded` for a record of the call that went to the spool (after it: its interaction first)."""
    source = record if record["op"] == "start" else record.get("event") or {}
    return {
        "op": "event",
        "uid": str(uuid.uuid4()),
        "interaction_id": _interaction_of(record),
        "customer_id": source.get("customer_id"),  # None: the interaction's
        "channel": source.get("channel"),
        "type": "call.degraded",
        "data": {"part": "store", "what": what},
        "at": None,
    }


def _unwritten_event(event: dict[str, Any]) -> dict[str, Any]:
    """An event accepted into the spool, as it will be published (without the id the store gives it)."""
    return {
        "id": None,
        "type": event["type"],
        "at": event["at"],
        "channel": event["channel"],
        "customer_id": event["customer_id"],
        "interaction_id": event["interaction_id"],
        "data": event["data"],
    }


def _stamp(record: dict[str, Any], accepted: datetime) -> None:
    """A record going to the spool keeps the moment it was accepted as the time of its fact."""
    at = _iso(accepted)
    if record["op"] == "start":
        if record["started_at"] is None:
            record["started_at"] = at
        for event in record.get("events", ()):
            if event["at"] is None:
                event["at"] = at
    event = record if record["op"] == "event" else record.get("event")
    if event is not None and event["at"] is None:
        event["at"] = at


def _interaction_of(record: dict[str, Any]) -> str:
    return str(record.get("interaction_id") or record.get("id") or (record.get("event") or {}).get("interaction_id"))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


TIMELINE = web.AppKey("timeline", Timeline)
