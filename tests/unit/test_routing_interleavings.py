"""Callers hanging up at any moment while routing decides: random interleavings of a call's steps (queued,
offered, rung, answered, not answered, transferred, hung up, noticed by the call's task) with what time and
other events decide meanwhile (ticks: escalations into an overflow queue, offers expiring; agents changing
state), and with PostgreSQL failing writes at random (a pool starved at a peak).

The routing engine and its script run for real (routing/engine.py, routing/decide.lua in fakeredis); the
durable record is an in-memory `MemoryStore` with routing/store.py's effects; each call's task does what
ivr/inbound.py does at each step. After every step, the invariants of ivr/reconcile.py hold for every call
whose task has finished, as long as no write failed; when some did, they hold again after one pass of the
reconciler. At the end, once every caller has left and the reconciler has run, routing holds nothing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import fakeredis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from crm_bridge.timeline import Interaction, Timeline
from dialplans.models import Escalation, Queue
from ivr.reconcile import Reconciler, Snapshot, take_snapshot, violations
from routing.engine import RoutingEngine
from routing.model import Assignment, Outcome, RoutingError, ms_to_datetime
from routing.store import OpenInteraction, RoutingStore
from tests.unit.test_routing_decisions import Clock, agent

CALLS = 3
AGENTS = ("ann", "ben", "cy")


class Starved(Exception):
    """The pool had no connection in time."""


class MemoryStore(RoutingStore):
    """routing/store.py's record of interactions and offers, in memory. Write number `fail_at` of a step (from
    0; None: none) fails, writing nothing, as a transaction that never got a connection."""

    def __init__(self) -> None:
        super().__init__(cast(Any, None))
        self.rows: dict[str, dict[str, Any]] = {}
        self.offers: dict[str, dict[str, Any]] = {}  # interaction -> its open offer
        self.fail_at: int | None = None
        self.writes = 0  # in this step
        self.failed = 0  # writes that failed so far

    def step(self, fail_at: int | None) -> None:
        self.fail_at, self.writes = fail_at, 0

    def _write(self) -> None:
        self.writes += 1
        if self.writes - 1 == self.fail_at:
            self.failed += 1
            raise Starved("no connection in time")

    async def queued(
        self,
        interaction_id: str,
        queue: str,
        channel: str,
        priority: int,
        skills: dict[str, int],
        enqueued_at: datetime,
    ) -> str | None:
        self._write()
        if interaction_id in self.rows:
            return str(self.rows[interaction_id]["state"])
        self.rows[interaction_id] = {
            "queue": queue,
            "channel": channel,
            "priority": priority,
            "skills": skills,
            "enqueued_at": enqueued_at,
            "state": "waiting",
            "end_reason": None,
        }
        return None

    async def record(self, outcome: Outcome) -> None:
        if not outcome.events and not outcome.states:
            return
        self._write()
        for event in outcome.events:
            iid, kind = str(event["interaction"]), event["kind"]
            row = self.rows.get(iid)
            if row is None:  # as an UPDATE of no row
                continue
            if kind == "offered":
                self.offers[iid] = {"agent": event["agent"], "via": event["via"], "at": event["at"], "answered": False}
                row["state"] = "offered"
            elif kind == "answered":
                if iid in self.offers:  # an offer whose own record failed is not on record
                    self.offers[iid]["answered"] = True
                row["state"] = "assigned"
            elif kind in ("not_answered", "requeued"):
                self.offers.pop(iid, None)
                row["state"] = "waiting"
            elif kind in ("released", "removed", "expired"):
                self.offers.pop(iid, None)
                if row["state"] != "ended":
                    row["state"] = "ended"
                    row["end_reason"] = event.get("reason") or {"released": "released", "expired": "offer-expired"}.get(
                        kind, kind
                    )
            elif kind == "moved":
                row["queue"], row["priority"] = event["queue"], int(event["priority"])

    async def open_interaction(self, interaction_id: str) -> OpenInteraction | None:
        row = self.rows.get(interaction_id)
        if row is None or row["state"] == "ended":
            return None
        offer = self.offers.get(interaction_id)
        return OpenInteraction(
            interaction_id=interaction_id,
            queue=row["queue"],
            channel=row["channel"],
            priority=row["priority"],
            skills=row["skills"],
            enqueued_at=row["enqueued_at"],
            state=("assigned" if offer["answered"] else "offered") if offer else "waiting",
            agent_id=offer["agent"] if offer else None,
            via=offer["via"] if offer else None,
            offered_at=ms_to_datetime(offer["at"]) if offer else None,
        )

    async def reopen(
        self, interaction_id: str, reason: str, *, queue: str | None = None, enqueued_at: datetime | None = None
    ) -> OpenInteraction | None:
        self._write()
        row = self.rows.get(interaction_id)
        if row is None or row["state"] != "ended" or row["end_reason"] != reason:
            return None
        row.update(state="waiting", end_reason=None, queue=queue or row["queue"])
        if enqueued_at is not None:
            row["enqueued_at"] = enqueued_at
        return await self.open_interaction(interaction_id)

    async def end_open(self, interaction_id: str, reason: str, at: datetime, offer_outcome: str = "withdrawn") -> bool:
        self._write()
        closed = self.offers.pop(interaction_id, None) is not None
        row = self.rows.get(interaction_id)
        if row is not None and row["state"] != "ended":
            row.update(state="ended", end_reason=reason)
            return True
        return closed

    def held(self, interaction_id: str) -> str | None:
        row = self.rows.get(interaction_id)
        return None if row is None or row["state"] == "ended" else str(row["state"])


@dataclass
class Call:
    """One caller and what its task (ivr/inbound.py) knows."""

    n: int
    iid: str
    customer: uuid.UUID
    queue: str
    alive: bool = True  # the caller's channel exists in Asterisk
    step: str = "ivr"  # ivr | waiting | ringing | talking | done (the task has finished)
    open: bool = True  # the interaction has not ended (interactions.ended_at IS NULL)
    offer: Assignment | None = None  # in the task's hands, not rung yet
    agent: str | None = None  # ringing or talking

    @property
    def channel_ref(self) -> str:
        return f"unit-caller-{self.n}"


class MemoryTimeline(Timeline):
    """Closing an interaction and writing its events, through the same starved pool as routing's record."""

    def __init__(self, world: World) -> None:
        super().__init__(cast(Any, None), self._announce)
        self.world = world
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    async def _announce(self, event: dict[str, Any]) -> None:
        return None

    async def record(
        self, interaction: Interaction, type_: str, data: dict[str, Any] | None = None, *, at: datetime | None = None
    ) -> dict[str, Any]:
        self.world.store._write()
        self.events.append((str(interaction.id), type_, data or {}))
        return {}

    async def end_interaction(
        self, interaction: Interaction, outcome: str, hangup_by: str, ended_at: datetime | None = None
    ) -> bool:
        self.world.store._write()
        call = self.world.by_iid[str(interaction.id)]
        if not call.open:
            return False
        call.open = False
        self.events.append((call.iid, "interaction.ended", {"outcome": outcome}))
        return True


class MemoryPool:
    """Answers the reconciler's one query (ivr/reconcile.py `_SUBJECTS`) from the world: a call's interaction
    is settled once its task has finished (fresher ones are still being taken down by their task)."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def fetch(self, query: str, ids: list[uuid.UUID], grace_s: float) -> list[dict[str, Any]]:
        w = self.world
        wanted = (
            {str(i) for i in ids} | {c.iid for c in w.calls if c.open} | {i for i in w.store.rows if w.store.held(i)}
        )
        rows = []
        for iid in sorted(wanted):
            call = w.by_iid.get(iid)
            rows.append(
                {
                    "id": uuid.UUID(iid),
                    "customer_id": call.customer if call else None,
                    "channel": "voice" if call else None,
                    "channel_ref": call.channel_ref if call else None,
                    "open": call.open if call else True,
                    "settled": call is not None and call.step == "done",
                    "callback": False,
                    "conversation_open": None,
                    "record": w.store.held(iid),
                }
            )
        return rows


@dataclass
class World:
    engine: RoutingEngine
    store: MemoryStore
    clock: Clock
    calls: list[Call] = field(default_factory=list)
    by_iid: dict[str, Call] = field(default_factory=dict)
    reconciler: Reconciler | None = None
    dirty: bool = False  # a write failed since the reconciler last ran in full

    async def channels(self) -> list[dict[str, Any]]:
        return [{"id": c.channel_ref} for c in self.calls if c.alive]

    async def hang_up_leg(self, channel_id: str) -> None:
        raise AssertionError(f"this model has no agent legs in Asterisk: {channel_id}")

    async def snapshot(self) -> Snapshot:
        return await take_snapshot(cast(Any, MemoryPool(self)), self.engine, self.channels, app="unit", grace_s=0.0)

    # What the call's task does (ivr/inbound.py), a step at a time -------------------------------------

    async def leave(self, call: Call, reason: str) -> None:
        """`_leave_queue`: out of routing; a failure is logged and left to the reconciler."""
        try:
            await self.engine.remove(call.iid, reason)
        except Starved:
            pass
        await self.finish(call)

    async def finish(self, call: Call) -> None:
        """`_finish`: the caller hung up on (if still there), the interaction closed (or left to the reconciler)."""
        call.step, call.alive, call.offer, call.agent = "done", False, None, None
        try:
            await self.reconciler_timeline.end_interaction(
                Interaction(uuid.UUID(call.iid), call.customer, "voice"), "abandoned", "caller"
            )
        except Starved:
            pass

    @property
    def reconciler_timeline(self) -> MemoryTimeline:
        assert self.reconciler is not None
        return cast(MemoryTimeline, self.reconciler.timeline)

    async def act(self, kind: str, call: Call, agent_id: str, amount: int) -> None:
        engine = self.engine
        if kind == "queue" and call.step == "ivr":
            if not call.alive:
                return await self.finish(call)
            try:
                call.offer = await engine.enqueue(call.iid, call.queue)
                call.step = "waiting"
            except Starved:  # its record may have failed after Redis queued it: out again
                await self.leave(call, "failed")
        elif kind == "poll" and call.step == "waiting" and call.offer is None and call.alive:
            try:
                call.offer = await engine.try_assign(call.iid)
            except RoutingError:  # routing no longer holds it: the call fails
                await self.leave(call, "failed")
            except Starved:  # the wait asks again later
                pass
        elif kind == "ring" and call.step == "waiting" and call.offer is not None:
            if not call.alive:  # checked right before ringing
                return await self.leave(call, "abandoned")
            if await engine.holds_offer(call.iid, call.offer.agent_id):
                call.step, call.agent = "ringing", call.offer.agent_id
            call.offer = None
        elif kind == "answer" and call.step == "ringing":
            assert call.agent is not None
            if not call.alive:  # the caller left as it rang, or as the agent answered
                return await self.leave(call, "abandoned")
            try:
                await engine.answered(call.iid, call.agent)
                call.step = "talking"
            except Starved:  # `_talk` fails: the agent's leg hung up, the agent released, the call out of routing
                await self.release(call)
                await self.leave(call, "failed")
        elif kind == "no_answer" and call.step == "ringing":
            assert call.agent is not None
            if not call.alive:
                return await self.leave(call, "abandoned")
            try:
                call.offer = await engine.not_answered(call.iid, call.agent)
                call.step, call.agent = "waiting", None
            except Starved:
                await self.leave(call, "failed")
        elif kind == "transfer" and call.step == "talking" and call.alive:
            assert call.agent is not None
            to_queue = ("support", "sales")[amount % 2]
            try:
                call.offer = await engine.transfer(call.iid, call.agent, to_queue=to_queue)
                call.step, call.agent, call.queue = "waiting", None, to_queue
            except (RoutingError, Starved):  # refused: the agent keeps the call
                pass
        elif kind == "hangup" and call.step != "done":
            call.alive = False
        elif kind == "agent_hangs_up" and call.step == "talking":
            await self.release(call)
            await self.finish(call)
        elif kind == "notice" and call.step != "done" and not call.alive:
            if call.step == "talking":
                await self.release(call)
                await self.finish(call)
            elif call.step == "ivr":
                await self.finish(call)
            else:
                await self.leave(call, "abandoned")

    async def release(self, call: Call) -> None:
        try:
            await self.engine.release(call.iid)
        except Starved:
            pass


STEPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "queue",
                "poll",
                "ring",
                "answer",
                "no_answer",
                "transfer",
                "hangup",
                "notice",
                "agent_hangs_up",
                "tick",
                "presence",
                "reconcile",
            ]
        ),
        st.integers(0, CALLS - 1),
        st.sampled_from(AGENTS),
        st.integers(0, 100),
        st.sampled_from([None, None, None, 0, 1]),  # the step's write that fails (the pool starved), if any
    ),
    min_size=5,
    max_size=80,
)


async def new_world() -> World:
    clock = Clock()
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    engine = RoutingEngine(cast(Any, redis), cast(Any, None), "unit", clock=clock, offer_ttl_s=30)
    store = MemoryStore()
    engine.store = store
    await engine.state.configure(offer_ttl_s=30)
    for queue in (
        Queue(id="support", name="Support", escalation=[Escalation(after_s=2, overflow="sales")]),
        Queue(id="sales", name="Sales"),
    ):
        engine.queues[queue.id] = queue
        await engine.state.put_queue(queue, default_max_wait_s=300)
    await engine.state.put_agent(agent("ann", ["sales"]), presence_if_new="available")
    await engine.state.put_agent(agent("ben", ["support"]), presence_if_new="available")
    await engine.state.put_agent(agent("cy", ["support", "sales"]), presence_if_new="away")
    world = World(engine, store, clock)
    for n in range(CALLS):
        call = Call(n, str(uuid.UUID(int=n + 1)), uuid.UUID(int=1000 + n), ("support", "sales")[n % 2])
        world.calls.append(call)
        world.by_iid[call.iid] = call
    world.reconciler = Reconciler(
        pool=cast(Any, MemoryPool(world)),
        engine=engine,
        timeline=MemoryTimeline(world),
        channels=world.channels,
        hang_up=world.hang_up_leg,
        app="unit",
        handled=lambda: {c.channel_ref for c in world.calls if c.step != "done"},
        grace_s=0.0,
    )
    return world


async def check_structure(world: World) -> None:
    """Always, whatever failed: each agent's load is what routing holds with them, one offer at a time."""
    held = await world.engine.held()
    for agent_id in AGENTS:
        live = await world.engine.agent(agent_id)
        mine = {i: h for i, h in held.items() if h.get("agent") == agent_id}
        assert int(live.get("load:voice", "0")) == len(mine), (agent_id, live, mine)
        offered = [i for i, h in mine.items() if h["state"] == "offered"]
        assert len(offered) <= 1 and live.get("offer") == (offered[0] if offered else None), (agent_id, live, mine)


async def check_invariants(world: World, why: str) -> None:
    found = violations(await world.snapshot())
    assert not found, f"{why}: " + "; ".join(map(str, found))
    if not world.store.failed:  # nothing failed: the record says what Redis says
        held = await world.engine.held()
        for call in world.calls:
            assert world.store.held(call.iid) == held.get(call.iid, {}).get("state"), (call, held)


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(steps=STEPS)
# The peak's interleavings, always tried: (1) the caller leaves while offered and taking them out of routing
# cannot be written (routing said `offered` with the interaction ended); (2) the caller leaves as the agent
# answers; (3) an agent's blind transfer, then the caller leaves and the write fails; (4) queued while its
# offer's record fails.
@example(steps=[("queue", 0, "ann", 0, None), ("hangup", 0, "ann", 0, None), ("notice", 0, "ann", 0, 0),
                ("reconcile", 0, "ann", 0, None)])  # fmt: skip
@example(steps=[("queue", 0, "ann", 0, None), ("ring", 0, "ann", 0, None), ("hangup", 0, "ann", 0, None),
                ("answer", 0, "ann", 0, None), ("tick", 0, "ann", 1, None)])  # fmt: skip
@example(steps=[("queue", 0, "ann", 0, None), ("ring", 0, "ann", 0, None), ("answer", 0, "ann", 0, None),
                ("transfer", 0, "ann", 1, None), ("hangup", 0, "ann", 0, None), ("notice", 0, "ann", 0, 0),
                ("reconcile", 0, "ann", 0, None)])  # fmt: skip
@example(steps=[("queue", 0, "ann", 0, 1), ("queue", 2, "ann", 0, None), ("reconcile", 0, "ann", 0, None)])
async def test_no_ghost_whatever_the_order_of_hang_ups_and_decisions(
    steps: list[tuple[str, int, str, int, int | None]],
) -> None:
    world = await new_world()
    assert world.reconciler is not None
    done: list[str] = []
    for kind, n, agent_id, amount, fail_at in steps:
        call = world.calls[n]
        before = world.store.failed
        world.store.step(fail_at)
        if kind == "tick":
            world.clock.advance((0.5, 2, 5, 40)[amount % 4])  # 40 s: past the offer's time to live
            try:
                await world.engine.tick()
            except Starved:
                pass
        elif kind == "presence":
            try:
                await world.engine.set_state(agent_id, ("available", "away")[amount % 2], "test")
            except Starved:
                pass
        elif kind == "reconcile":
            await world.reconciler.run_once()
            if world.store.failed == before:  # a pass that could write everything it needed
                world.dirty = False
        else:
            await world.act(kind, call, agent_id, amount)
        world.store.step(None)
        world.dirty |= world.store.failed != before
        done.append(f"{kind}({n},{agent_id},{amount}{'' if fail_at is None else f', write {fail_at} fails'})")
        await check_structure(world)
        if not world.dirty:
            await check_invariants(world, " ".join(done))

    # Everyone leaves; the tasks notice; one pass of the reconciler with the store back: nothing is left.
    for call in world.calls:
        await world.act("hangup", call, "", 0)
        await world.act("notice", call, "", 0)
    await world.reconciler.run_once()
    await check_structure(world)
    found = violations(await world.snapshot())
    assert not found, "; ".join(map(str, found))
    assert await world.engine.held() == {}
    assert [i for i in world.store.rows if world.store.held(i)] == []
    assert not any(c.open for c in world.calls)
    for agent_id in AGENTS:
        live = await world.engine.agent(agent_id)
        assert live["state"] in ("available", "away"), (agent_id, live)
