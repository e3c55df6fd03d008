"""The reconciler's judgement (ivr/reconcile.py): which interactions are dead and why, which are alive or not
Hilo's to judge (a booked callback, a live chat, an interaction routed through the API), and when a dead one
is ended: at once once ended or closed longer than the grace ago, a call whose channel vanished only after
this node has seen it gone for the grace, and never while a call task of this node still handles it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

import fakeredis

from crm_bridge.timeline import Interaction, Timeline
from dialplans.models import Queue
from ivr.reconcile import (
    CONVERSATION_CLOSED,
    INTERACTION_ENDED,
    NO_LIVE_CHANNEL,
    Reconciler,
    Snapshot,
    Subject,
    cause,
    violations,
)
from routing.engine import RoutingEngine
from tests.unit.test_routing_decisions import Clock, agent
from tests.unit.test_routing_interleavings import MemoryStore

CUSTOMER = uuid.UUID(int=77)


def subject(n: int, **kw: Any) -> Subject:
    fields: dict[str, Any] = {
        "interaction_id": str(uuid.UUID(int=n)),
        "customer_id": CUSTOMER,
        "channel": "voice",
        "channel_ref": f"caller-{n}",
        "open": True,
        "settled": True,
    }
    return Subject(**{**fields, **kw})


def test_what_is_dead_and_why() -> None:
    alive = {"caller-1"}
    assert cause(subject(1), alive) is None  # its channel is there
    assert cause(subject(2), alive) == NO_LIVE_CHANNEL
    assert cause(subject(3, open=False), alive) == INTERACTION_ENDED
    assert (
        cause(subject(4, open=False, channel_ref="caller-1"), alive) == INTERACTION_ENDED
    )  # e.g. after a transfer out
    # a booked callback waits without a call of its own, its call ended: alive
    assert cause(subject(5, open=False, callback=True), alive) is None
    # not Hilo's to judge: no channel on record, no interaction of Hilo's (routed through the API)
    assert cause(subject(6, channel_ref=None), alive) is None
    assert cause(subject(7, customer_id=None, channel=None, channel_ref=None), alive) is None
    # text: its conversation decides; no conversation, nothing to judge by
    assert cause(subject(8, channel="webchat", channel_ref=None, conversation_open=True), alive) is None
    assert cause(subject(9, channel="sms", channel_ref=None, conversation_open=False), alive) == CONVERSATION_CLOSED
    assert cause(subject(10, channel="whatsapp", channel_ref=None, conversation_open=None), alive) is None


def test_violations_name_each_place_that_still_holds_a_dead_interaction() -> None:
    ghost = subject(1, live="offered", agent="ben", record="offered")
    fresh = subject(2, live="waiting", record="waiting", settled=False)  # its own task is still on it
    live_chat = subject(3, channel="webchat", channel_ref=None, conversation_open=True, live="assigned")
    leftover = subject(4, open=False, record="waiting")  # taken out of Redis, its record could not be written
    snap = Snapshot(
        {s.interaction_id: s for s in (ghost, fresh, live_chat, leftover)},
        frozenset(),
        ringing={"ben": ghost.interaction_id},
        agent_legs={f"hilo-agent-{ghost.interaction_id}-ab12": ghost.interaction_id},
    )
    found = [(v.interaction_id, v.rule, v.reason) for v in violations(snap)]
    g, lo = ghost.interaction_id, leftover.interaction_id
    assert found == [
        (g, "routing-holds", NO_LIVE_CHANNEL),
        (g, "record-holds", NO_LIVE_CHANNEL),
        (g, "open", NO_LIVE_CHANNEL),
        (lo, "record-holds", INTERACTION_ENDED),
        (g, "agent-offered", NO_LIVE_CHANNEL),
        (g, "agent-leg", NO_LIVE_CHANNEL),
    ]


class Closing(Timeline):
    def __init__(self) -> None:
        super().__init__(cast(Any, None), self._announce)
        self.closed: set[str] = set()
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    async def _announce(self, event: dict[str, Any]) -> None:
        return None

    async def record(
        self, interaction: Interaction, type_: str, data: dict[str, Any] | None = None, *, at: datetime | None = None
    ) -> dict[str, Any]:
        self.events.append((str(interaction.id), type_, data or {}))
        return {}

    async def end_interaction(
        self, interaction: Interaction, outcome: str, hangup_by: str, ended_at: datetime | None = None
    ) -> bool:
        if str(interaction.id) in self.closed:
            return False
        self.closed.add(str(interaction.id))
        return True


async def test_a_vanished_call_is_ended_once_seen_gone_for_the_grace_and_not_while_its_task_runs() -> None:
    clock = Clock()
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    engine = RoutingEngine(cast(Any, redis), cast(Any, None), "unit", clock=clock)
    engine.store = MemoryStore()
    await engine.state.configure(offer_ttl_s=60)
    queue = Queue(id="support", name="Support")
    engine.queues[queue.id] = queue
    await engine.state.put_queue(queue, default_max_wait_s=300)
    await engine.state.put_agent(agent("ben", ["support"]), presence_if_new="available")
    ghost, handled, ended = (str(uuid.UUID(int=n)) for n in (1, 2, 3))
    for iid in (ghost, handled, ended):
        await engine.enqueue(iid, "support")
    hung_up: list[str] = []

    async def hang_up(channel_id: str) -> None:
        hung_up.append(channel_id)

    now = [100.0]
    timeline = Closing()
    reconciler = Reconciler(
        pool=cast(Any, None),
        engine=engine,
        timeline=timeline,
        channels=cast(Any, None),
        hang_up=hang_up,
        app="hilo",
        handled=lambda: {"caller-2"},
        grace_s=10,
        clock=lambda: now[0],
    )
    held = await engine.held()
    leg = f"hilo-agent-{ghost}-ab12"
    snap = Snapshot(
        {
            ghost: subject(1, live=held[ghost]["state"], agent=held[ghost].get("agent"), record="offered"),
            handled: subject(2, live="waiting", record="waiting"),
            ended: subject(3, open=False, live="waiting", record="waiting"),
        },
        frozenset(),
        ringing={"ben": ghost},
        agent_legs={leg: ghost},
    )
    assert held[ghost] == {"state": "offered", "agent": "ben", "queue": "support", "channel": "voice"}
    # First sight: the ended one goes at once (ended longer than the grace ago); the vanished call waits.
    done = await reconciler.settle(snap, violations(snap))
    assert [(d.interaction_id, d.reason, d.ended) for d in done] == [(ended, INTERACTION_ENDED, ("routing",))]
    assert ghost in await engine.held() and hung_up == []
    now[0] += 9.9
    assert await reconciler.settle(snap, violations(snap)) == []
    now[0] += 0.1  # gone for the grace: ended everywhere, the agent freed, the leg that rings for it hung up
    done = await reconciler.settle(snap, violations(snap))
    assert [(d.interaction_id, d.reason, d.ended) for d in done] == [
        (ghost, NO_LIVE_CHANNEL, ("routing", "agent-leg", "interaction"))
    ]
    assert hung_up == [leg]
    assert set(await engine.held()) == {handled}  # a call task of this node still handles that one
    assert (await engine.agent("ben")).get("offer") == handled  # ben freed, and taking the next caller
    assert (
        ghost,
        "interaction.reconciled",
        {"reason": NO_LIVE_CHANNEL, "ended": ["routing", "agent-leg", "interaction"]},
    ) in timeline.events
    assert timeline.closed == {ghost}  # the ended one was closed already
    await redis.aclose()
