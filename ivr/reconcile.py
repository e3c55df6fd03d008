"""No ghost, ever: whatever routing holds, and whatever interaction is open, has a caller or a customer
behind it. A call ends through its own task (ivr/inbound.py), which takes it out of routing and closes its
interaction; when one of those steps fails (PostgreSQL starved at a peak, a node gone), the reconciler ends
what is left.

The invariants, as `violations` checks them over one `Snapshot` of Asterisk, PostgreSQL and Redis:

1. every interaction routing holds (waiting, offered or assigned, in Redis or in its PostgreSQL record) is
   alive: a call whose channel Asterisk still has, or a conversation still open (SMS, WhatsApp, web chat);
2. every interaction that has ended is ended everywhere: neither Redis nor the routing record holds it;
3. no agent rings for an interaction that is not alive: no agent's offer in Redis, no agent leg in Asterisk;
4. no interaction stays open once its call is gone (the wallboard counts open ones as waiting or talking).

A booked callback waits in routing with no call of its own, on purpose: it is alive while the booking is
pending, dialling or connected. An interaction Hilo cannot judge is left alone: routed through the API with
no interaction of Hilo's, a voice interaction without a channel, a text one without a conversation.

`Reconciler` runs a pass every `interval_s` and at every ARI (re)connection: one read of Redis, one list of
Asterisk's channels, one query. It ends only what is provably dead, safe with several Hilo nodes sharing
the stack: an interaction that ended, or whose conversation closed, more than `grace_s` ago; or a call whose
channel Asterisk does not know (channel ids are never reused), that started more than `grace_s` ago, that
this node has seen dead for `grace_s` already (the node handling it gets that long to end it itself, with
its true outcome), and that no call task of this node still handles. Each one is ended everywhere (out of
routing, its agent leg hung up, the interaction closed as `dropped` by the system), with
`interaction.reconciled` {reason, ended} on its timeline, logged at WARNING and counted
(`hilo_reconciled_total` by reason)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge

from crm_bridge.timeline import Interaction, Timeline
from routing.engine import RoutingEngine

log = logging.getLogger(__name__)

HELD = frozenset({"waiting", "offered", "assigned"})
# Why an interaction is dead (the reason on its timeline and in routing's record).
NO_LIVE_CHANNEL = "no-live-channel"
INTERACTION_ENDED = "interaction-ended"
CONVERSATION_CLOSED = "conversation-closed"
OUTCOME = "dropped"  # the outcome of an interaction the reconciler closes, as for a call Asterisk lost

# An agent's leg is named after the interaction it rings for (ivr/agent_leg.py): <app>-agent-<id>-<random>.
_AGENT_LEG = re.compile(r"-agent-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-[0-9a-f]+$")

Channels = Callable[[], Awaitable[list[dict[str, Any]]]]
HangUp = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Subject:
    """One interaction as each side sees it."""

    interaction_id: str
    customer_id: uuid.UUID | None  # None: no interaction of Hilo's (queued through the API by another system)
    channel: str | None  # voice, sms, whatsapp, webchat
    channel_ref: str | None  # the caller's Asterisk channel
    open: bool  # the interaction has not ended
    settled: bool  # ended, closed or (still open) started longer ago than the grace
    callback: bool = False  # a booked callback, pending, dialling or connected
    conversation_open: bool | None = None  # text: its conversation is open; None: no conversation
    record: str | None = None  # routing's PostgreSQL record: waiting|offered|assigned (None: not held)
    live: str | None = None  # routing's Redis state: waiting|offered|assigned (None: not held)
    agent: str | None = None  # the agent it is offered or assigned to in Redis

    @property
    def held(self) -> bool:
        return self.live in HELD or self.record in HELD


@dataclass(frozen=True)
class Snapshot:
    subjects: dict[str, Subject]
    channels: frozenset[str]  # every channel id Asterisk has now
    ringing: dict[str, str] = field(default_factory=dict)  # agent -> the interaction offered to them (Redis)
    agent_legs: dict[str, str] = field(default_factory=dict)  # agent leg channel id -> its interaction


@dataclass(frozen=True)
class Violation:
    interaction_id: str
    rule: str  # routing-holds | record-holds | open | agent-offered | agent-leg
    reason: str  # why the interaction is dead: no-live-channel | interaction-ended | conversation-closed
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.interaction_id}: {self.rule} ({self.reason}{', ' + self.detail if self.detail else ''})"


def cause(subject: Subject, channels: Collection[str]) -> str | None:
    """Why this interaction is dead, or None while it is alive or not Hilo's to judge."""
    if subject.customer_id is None or subject.callback:
        return None
    if not subject.open:
        return INTERACTION_ENDED
    if subject.channel == "voice":
        if subject.channel_ref is None or subject.channel_ref in channels:
            return None
        return NO_LIVE_CHANNEL
    if subject.conversation_open is False:
        return CONVERSATION_CLOSED
    return None


def violations(snapshot: Snapshot) -> list[Violation]:
    """Every breach of the invariants (module docstring) among the settled interactions: those fresher than
    the snapshot's grace are still being set up or taken down by their own task."""
    found: list[Violation] = []
    dead: dict[str, str] = {}
    for iid, s in sorted(snapshot.subjects.items()):
        reason = cause(s, snapshot.channels)
        if reason is None or not s.settled:
            continue
        dead[iid] = reason
        if s.live in HELD:
            found.append(Violation(iid, "routing-holds", reason, f"{s.live} in Redis"))
        if s.record in HELD:
            found.append(Violation(iid, "record-holds", reason, f"{s.record} in PostgreSQL"))
        if s.open:
            found.append(Violation(iid, "open", reason))
    for agent, iid in sorted(snapshot.ringing.items()):
        if iid in dead:
            found.append(Violation(iid, "agent-offered", dead[iid], agent))
    for leg, iid in sorted(snapshot.agent_legs.items()):
        if iid in dead:
            found.append(Violation(iid, "agent-leg", dead[iid], leg))
    return found


@dataclass(frozen=True)
class ReconcileMetrics:
    reconciled: Counter  # labels: reason
    violations: Gauge  # found by the last pass, before it ended them


_SUBJECTS = """
WITH ids (id) AS (
    SELECT id FROM interactions WHERE ended_at IS NULL
    UNION SELECT interaction_id FROM routing_interactions WHERE state <> 'ended'
    UNION SELECT unnest($1::uuid[])
)
SELECT ids.id, i.customer_id, i.channel, i.channel_ref, i.ended_at IS NULL AS open,
       coalesce(i.ended_at, c.closed_at, i.started_at) < now() - make_interval(secs => $2) AS settled,
       EXISTS (SELECT 1 FROM callbacks b WHERE b.interaction_id = ids.id
               AND b.state IN ('pending', 'dialing', 'done')) AS callback,
       CASE WHEN c.id IS NULL THEN NULL ELSE c.closed_at IS NULL END AS conversation_open,
       nullif(r.state, 'ended') AS record
FROM ids
LEFT JOIN interactions i ON i.id = ids.id
LEFT JOIN routing_interactions r ON r.interaction_id = ids.id
LEFT JOIN conversations c ON c.interaction_id = ids.id
"""


async def take_snapshot(
    pool: asyncpg.Pool,
    engine: RoutingEngine,
    channels: Channels,
    *,
    app: str,
    grace_s: float,
    extra: Collection[str] = (),
) -> Snapshot:
    """Redis first, then Asterisk, then PostgreSQL: an interaction is judged on a channel list taken after
    whatever routing held of it, and a call that began after the list is younger than the grace."""
    held = await engine.held()
    agent_ids = await engine.state.agent_ids()
    ringing = {
        a: live["offer"] for a, live in zip(agent_ids, await engine.agents(agent_ids), strict=True) if live.get("offer")
    }
    listed = await channels()
    alive = frozenset(str(c["id"]) for c in listed)
    prefix = f"{app}-agent-"
    legs = {cid: m.group(1) for cid in alive if cid.startswith(prefix) and (m := _AGENT_LEG.search(cid))}
    ids = sorted({*held, *ringing.values(), *legs.values(), *extra})
    rows = await pool.fetch(_SUBJECTS, [uuid.UUID(i) for i in ids], float(grace_s))
    subjects: dict[str, Subject] = {}
    for r in rows:
        iid = str(r["id"])
        live = held.get(iid, {})
        subjects[iid] = Subject(
            interaction_id=iid,
            customer_id=r["customer_id"],
            channel=r["channel"],
            channel_ref=r["channel_ref"],
            open=bool(r["open"]),
            settled=bool(r["settled"]),
            callback=bool(r["callback"]),
            conversation_open=r["conversation_open"],
            record=r["record"],
            live=live.get("state"),
            agent=live.get("agent"),
        )
    return Snapshot(subjects, alive, ringing, legs)


@dataclass(frozen=True)
class Reconciled:
    interaction_id: str
    reason: str
    ended: tuple[str, ...]  # what was ended: routing, interaction, agent-leg


class Reconciler:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        engine: RoutingEngine,
        timeline: Timeline,
        channels: Channels,
        hang_up: HangUp,
        app: str,
        handled: Callable[[], Collection[str]] = lambda: (),
        writes_pending: Callable[[], bool] = lambda: False,
        metrics: ReconcileMetrics | None = None,
        interval_s: float = 5.0,
        grace_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.engine = engine
        self.timeline = timeline
        self.channels = channels  # Asterisk's channels (ARI GET /channels)
        self.hang_up = hang_up
        self.app = app  # the Stasis app: its agent legs are <app>-agent-<interaction>-<random>
        self.handled = handled  # channel ids a call task of this node still handles
        # This node's timeline writes not in PostgreSQL yet (its spool): a call's own end may be among them, so
        # no interaction is closed until they are (what routing holds is ended all the same).
        self.writes_pending = writes_pending
        self.metrics = metrics
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.clock = clock
        self.seen_dead: dict[str, float] = {}  # interaction -> when this node first saw its channel gone
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    async def snapshot(self, grace_s: float | None = None) -> Snapshot:
        grace = self.grace_s if grace_s is None else grace_s
        return await take_snapshot(self.pool, self.engine, self.channels, app=self.app, grace_s=grace)

    async def check(self, grace_s: float = 0.0) -> list[Violation]:
        """The invariants now (by default with no grace: for tests and benchmarks, once calls have settled)."""
        return violations(await self.snapshot(grace_s))

    async def gone(self, interaction_ids: list[str]) -> set[str]:
        """Of these interactions, those that are dead now, without grace: for routing's rebuild after Redis
        lost its state (RoutingEngine.calls_gone), whose list predates the channel list."""
        snap = await take_snapshot(
            self.pool, self.engine, self.channels, app=self.app, grace_s=0.0, extra=interaction_ids
        )
        wanted = set(interaction_ids)
        return {i for i, s in snap.subjects.items() if i in wanted and cause(s, snap.channels) is not None}

    async def run_once(self) -> list[Reconciled]:
        async with self._lock:  # the loop and a caller (a test, a resync) never end the same thing twice at once
            snap = await self.snapshot()
            found = violations(snap)
            if self.metrics is not None:
                self.metrics.violations.set(len(found))
            return await self.settle(snap, found)

    async def settle(self, snap: Snapshot, found: list[Violation]) -> list[Reconciled]:
        """End every interaction `found` dead that is provably so (module docstring)."""
        now = self.clock()
        dead = {v.interaction_id: v.reason for v in found}
        self.seen_dead = {i: self.seen_dead.get(i, now) for i, reason in dead.items() if reason == NO_LIVE_CHANNEL}
        handled = set(self.handled())
        done: list[Reconciled] = []
        for iid, reason in sorted(dead.items()):
            s = snap.subjects[iid]
            if reason == NO_LIVE_CHANNEL and (now - self.seen_dead[iid] < self.grace_s or s.channel_ref in handled):
                continue
            try:
                ended = await self._end(s, reason, [leg for leg, i in snap.agent_legs.items() if i == iid])
            except Exception:  # the next pass tries again
                log.exception("could not reconcile interaction %s (%s)", iid, reason)
                continue
            self.seen_dead.pop(iid, None)
            if ended:
                done.append(Reconciled(iid, reason, ended))
        return done

    async def _end(self, s: Subject, reason: str, legs: list[str]) -> tuple[str, ...]:
        ended: list[str] = []
        if (s.held or s.agent is not None) and await self.engine.remove(s.interaction_id, reason):
            ended.append("routing")
        for leg in legs:
            with contextlib.suppress(Exception):  # gone already
                await self.hang_up(leg)
                ended.append("agent-leg")
        assert s.customer_id is not None and s.channel is not None  # cause() judges only Hilo's interactions
        interaction = Interaction(uuid.UUID(s.interaction_id), s.customer_id, s.channel)
        if s.open and not self.writes_pending() and await self.timeline.end_interaction(interaction, OUTCOME, "system"):
            ended.append("interaction")
        if ended:
            await self.timeline.record(interaction, "interaction.reconciled", {"reason": reason, "ended": ended})
            if self.metrics is not None:
                self.metrics.reconciled.labels(reason=reason).inc()
            log.warning("interaction %s reconciled (%s): ended %s", s.interaction_id, reason, ", ".join(ended))
        return tuple(ended)

    # The loop -------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="reconciler")

    def wake(self) -> None:
        """Run a pass now (e.g. after the ARI socket reconnected: hang-ups may have been missed)."""
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Asterisk or a store unreachable for a moment: the next pass
                log.warning("reconciliation pass failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
