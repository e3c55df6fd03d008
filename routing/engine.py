"""The routing engine: who gets which interaction, decided atomically in Redis (routing/state.py, one Lua
script call per event) and written down in PostgreSQL (routing/store.py) before anyone is told.

How a caller of this engine works (e.g. a voice call, ivr/inbound.py):

    offer = await engine.enqueue(interaction_id, "support", priority=5)   # durable, then live
    while offer is None:
        offer = await engine.wait_for_offer(interaction_id, timeout=2)  # woken by any node's decision
    ... ring offer.endpoint ...
    await engine.answered(interaction_id, offer.agent_id)   # or not_answered(...): agent away, back in queue
    ... talk ...
    await engine.release(interaction_id, wrapup_s=10)       # agent in wrap-up, then free for the next one
    # or, if the interaction ends before an agent takes it: await engine.remove(interaction_id, "abandoned")

Decisions made by one event may concern other interactions (an agent freed takes the best waiting one,
wherever its call is handled): each is recorded and announced on Redis pub/sub, and `wait_for_offer` on
the node that handles that interaction wakes up. A tick (every `tick_s`) brings what time alone changes:
ended wrap-ups, due escalations, offers nobody settled.

The live state is trusted only if it was built during the present life of the Redis server (its run_id,
new at every start, is kept in the state's marker). Redis runs with `appendonly yes`: a restarted Redis
replays its file and brings back the keys of an earlier life, maybe a second or a week behind what happened
since. So at start and at every tick (that is, within a tick of any reconnection) an engine that finds no
marker, or the marker of another life, rebuilds the live state from PostgreSQL (one node does it, the
others wait for it); a reconnection to the same server life (a network blip) keeps the state, which Redis
never lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import redis.exceptions
from aiohttp import web

from dialplans.models import CHANNELS, Agent, Queue, RoutingConfig
from flows.hours import Calendars, UnknownCalendar
from hilo.degraded import DOWN, part_of
from hilo.tasks import cancel_until_done
from routing import estimate
from routing.estimate import WaitEstimate
from routing.model import (
    MANUAL_STATES,
    Assignment,
    Outcome,
    RoutingError,
    check_interaction_id,
    datetime_to_ms,
    ms_to_datetime,
)
from routing.state import RoutingState, wall_clock_ms
from routing.store import RoutingStore

log = logging.getLogger(__name__)

_SKILL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
REBUILD_CLAIM_MS = 60_000  # how long the node rebuilding after a Redis restart holds the others off at most


class NotQueued(RoutingError):
    """Routing does not hold this interaction (never queued, or already ended)."""


class QueueClosed(RoutingError):
    """The queue's hours calendar says it is closed."""


class AgentBusy(RoutingError):
    """The agent asked for cannot take an interaction now (ringing, busy, away, offline, wrap-up)."""


class InUse(RoutingError):
    """A queue or agent cannot go while something still depends on it."""


class RoutingEngine:
    def __init__(
        self,
        redis: aioredis.Redis,
        pool: asyncpg.Pool,
        namespace: str,
        *,
        default_max_wait_s: int = 300,
        offer_ttl_s: float = 120.0,
        initial_presence: str = "available",
        clock: Callable[[], int] = wall_clock_ms,
        calendars: Callable[[], Calendars] | None = None,
        tick_s: float = 1.0,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.state = RoutingState(redis, namespace, clock=clock)
        self.store = RoutingStore(pool)
        self.clock = clock
        self.default_max_wait_s = default_max_wait_s
        self.offer_ttl_s = offer_ttl_s
        self.initial_presence = initial_presence  # of agents routing has never seen (no history)
        self.calendars = calendars
        self.tick_s = tick_s
        self.queues: dict[str, Queue] = {}
        self.notify_channel = f"{self.state.prefix}:notify"
        self._marker = f"{self.state.prefix}:built"  # the Redis run_id the live state was built in
        # held by the one node rebuilding after a restart (outside the prefix: the rebuild clears that)
        self._rebuilding = f"{self.state.prefix}-rebuilding"
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self._pubsub: Any = None
        # After a rebuild: which of these interactions no longer have their call (set by whoever handles the
        # calls, ivr/inbound.py); those are ended rather than left waiting or with an agent.
        self.calls_gone: Callable[[list[str]], Awaitable[set[str]]] | None = None

    # Life cycle -----------------------------------------------------------------------------------

    async def start(self, seed: RoutingConfig | None = None) -> None:
        """Seed PostgreSQL with `seed` (routing.yaml: the queues and agents it defines are replaced), bring
        the live state in line (rebuilt from PostgreSQL unless Redis holds one built in its present life),
        and start listening and ticking."""
        if seed is not None:
            await self.store.put_queues(seed.queues)
            await self.store.put_agents(seed.agents)
        async with self._lock:
            checked = await self._check_live()
        if checked == "trusted":
            await self.load_config()
        elif checked == "elsewhere":  # another node is rebuilding it; this one's tick goes on once it is done
            self.queues = {q.id: q for q in await self.store.queues()}
        self._pubsub = self.redis.pubsub()
        await self._pubsub.subscribe(self.notify_channel)
        self._tasks = [
            asyncio.create_task(self._listen(), name="routing-listen"),
            asyncio.create_task(self._tick_loop(), name="routing-tick"),
        ]

    async def close(self) -> None:
        await cancel_until_done(self._tasks)
        self._tasks = []
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None

    async def load_config(self) -> None:
        """Bring Redis in line with the queues and agents in PostgreSQL; live states stay as they are."""
        async with self._lock:
            await self.state.configure(offer_ttl_s=self.offer_ttl_s)
            queues = await self.store.queues()
            self.queues = {q.id: q for q in queues}
            for queue in queues:
                await self.state.put_queue(queue, default_max_wait_s=self.default_max_wait_s)
            agents = await self.store.agents()
            for agent in agents:
                await self._record(await self.state.put_agent(agent, presence_if_new=self.initial_presence))
            known = {a.id for a in agents}
            for agent_id in await self.state.agent_ids():
                if agent_id not in known:
                    await self.state.drop_agent(agent_id)

    async def rebuild_from_postgres(self) -> dict[str, int]:
        """Make the live state again from the durable record, after Redis lost it: queues and agents from
        the configuration, each agent's last presence (and a wrap-up still running), the offers and
        assignments still open, and every interaction still waiting, in its place. Which calls still exist
        is Asterisk's side: `calls_gone` tells which have vanished, and those are ended."""
        async with self._lock:
            return await self._rebuild()

    async def _rebuild(self) -> dict[str, int]:
        """Under self._lock."""
        life = await self._server_life()
        await self.state.clear()
        await self.state.configure(offer_ttl_s=self.offer_ttl_s)
        queues = await self.store.queues()
        self.queues = {q.id: q for q in queues}
        for queue in queues:
            await self.state.put_queue(queue, default_max_wait_s=self.default_max_wait_s)
        agents = await self.store.agents()
        for agent in agents:  # offline until every interaction is back, so the first decisions are right
            await self.state.put_agent(agent, presence_if_new="offline")
        counts = {"queues": len(queues), "agents": len(agents), "offers": 0, "waiting": 0, "wrapups": 0}
        for it in await self.store.open_interactions():
            enqueued_ms = datetime_to_ms(it.enqueued_at)
            if it.agent_id is not None and it.offered_at is not None:
                outcome = await self.state.restore_offer(
                    it.interaction_id,
                    it.queue,
                    it.channel,
                    it.priority,
                    it.skills,
                    enqueued_ms,
                    it.agent_id,
                    it.state,
                    datetime_to_ms(it.offered_at),
                    it.via or it.queue,
                )
                counts["offers"] += outcome.status == "ok"
            else:
                outcome = await self.state.enqueue(
                    it.interaction_id,
                    it.queue,
                    priority=it.priority,
                    skills=it.skills,
                    channel=it.channel,
                    enqueued_at_ms=enqueued_ms,
                )
                await self._record(outcome)  # escalations that fell due meanwhile
                counts["waiting"] += outcome.status == "waiting"
        counts["gone"] = await self._end_vanished([it.interaction_id for it in await self.store.open_interactions()])
        last = await self.store.last_states()
        now = self.clock()
        for agent_id, seen in sorted(last.items()):
            until = datetime_to_ms(seen.wrapup_until) if seen.wrapup_until is not None else 0
            if until > now:
                counts["wrapups"] += (await self.state.restore_wrapup(agent_id, until)).status == "ok"
        for agent in agents:
            last_seen = last.get(agent.id)
            presence = last_seen.presence if last_seen else self.initial_presence
            reason = last_seen.reason if last_seen and presence == "away" else None
            # each agent now takes the best interaction waiting for it
            await self._record(await self.state.set_presence(agent.id, presence, reason=reason))
        await self.redis.set(self._marker, life)
        log.info("routing state rebuilt from PostgreSQL: %s", counts)
        return counts

    async def _server_life(self) -> str:
        """The Redis server's run_id: a new one at every start of the server. Empty where INFO is refused."""
        try:
            return str((await self.redis.info("server")).get("run_id", ""))
        except redis.exceptions.ResponseError:
            return ""

    async def _check_live(self) -> str:
        """Under self._lock. "trusted": Redis holds live state built in its present life. Otherwise the
        state is missing or came back from the append-only file of an earlier life (a restart): "rebuilt"
        here from PostgreSQL, or "elsewhere" when another node has taken the rebuild on (this one waits).
        Without INFO (a restricted Redis) the life cannot be told: the marker alone is believed."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.info("server")
            pipe.get(self._marker)
            info, marker = await pipe.execute(raise_on_error=False)
        life = "" if isinstance(info, Exception) else str(info.get("run_id", ""))
        if isinstance(marker, Exception):
            raise marker
        built_in = marker.decode() if isinstance(marker, bytes) else marker
        if built_in is not None and (built_in == life or not life):
            return "trusted"
        if not await self.redis.set(self._rebuilding, life or "?", nx=True, px=REBUILD_CLAIM_MS):
            return "elsewhere"
        try:
            if built_in is None:
                log.warning("routing state is missing from Redis: rebuilding it from PostgreSQL")
            else:
                log.warning(
                    "routing state in Redis is from an earlier server life (restored from its file, or a "
                    "restart): rebuilding it from PostgreSQL"
                )
            await self._rebuild()
        finally:
            await self.redis.delete(self._rebuilding)
        return "rebuilt"

    async def _end_vanished(self, interaction_ids: list[str]) -> int:
        """Redis lost the state, and maybe also the hang-ups that happened meanwhile: interactions whose
        calls Asterisk no longer has are ended (`call-gone`), before any agent is offered them."""
        if self.calls_gone is None or not interaction_ids:
            return 0
        try:
            gone = await self.calls_gone(interaction_ids)
        except Exception:  # cannot tell (Asterisk unreachable): keep them; their calls' nodes remove them
            log.exception("rebuild: could not check which calls still exist")
            return 0
        for iid in sorted(gone):
            log.warning("rebuild: interaction %s has no call any more: ended", iid)
            await self._record(await self.state.remove(iid, reason="call-gone"))
        return len(gone)

    async def reset(self, *, whole_namespace: bool = False) -> None:
        """Forget every live agent and interaction (tests); the queues stay configured. `whole_namespace`
        deletes every other key of the namespace too (sessions, sign-in limits, ...)."""
        async with self._lock:
            await self.state.clear()
            if whole_namespace:
                async for key in self.redis.scan_iter(match=f"{self.namespace}:*", count=1000):
                    await self.redis.delete(key)
            await self.state.configure(offer_ttl_s=self.offer_ttl_s)
            for queue in self.queues.values():
                await self.state.put_queue(queue, default_max_wait_s=self.default_max_wait_s)
            await self.redis.set(self._marker, await self._server_life())

    # Interactions ---------------------------------------------------------------------------------

    async def enqueue(
        self,
        interaction_id: str,
        queue: str,
        *,
        priority: int = 0,
        skills: dict[str, int] | None = None,
        channel: str = "voice",
        enqueued_at: datetime | None = None,
    ) -> Assignment | None:
        """Queue an interaction (recorded in PostgreSQL first) and try to place it at once: the offer made,
        or None while it waits. Queuing the same interaction again has no second effect (answers as
        try_assign). Raises RoutingError on an unknown queue, bad skills or channel, QueueClosed out of
        the queue's hours."""
        iid = check_interaction_id(interaction_id)
        config = await self._queue(queue)
        own = dict(skills or {})
        for name, level in own.items():
            if not _SKILL.match(name) or not isinstance(level, int) or not 1 <= level <= 10:
                raise RoutingError(f"skills.{name}: a skill is a name of letters, digits, _.- with a level 1-10")
        if channel not in CHANNELS:
            raise RoutingError(f"channel {channel!r} is not one of {', '.join(CHANNELS)}")
        if not 0 <= priority <= 10:
            raise RoutingError(f"priority {priority} is outside 0-10")
        when_ms = self.clock() if enqueued_at is None else datetime_to_ms(enqueued_at)
        self._check_open(config, when_ms)
        prior = await self.store.queued(iid, queue, channel, priority, own, ms_to_datetime(when_ms))
        if prior == "ended":
            raise NotQueued(f"interaction {iid} was already routed and has ended")
        outcome = await self._enqueue_live(iid, config, priority, own, channel, when_ms)
        if outcome.status == "duplicate":
            return await self.try_assign(iid)
        return outcome.offer_for(iid)

    async def _enqueue_live(
        self, iid: str, config: Queue, priority: int, skills: dict[str, int], channel: str, when_ms: int
    ) -> Outcome:
        for _ in range(2):
            outcome = await self._record(
                await self.state.enqueue(
                    iid, config.id, priority=priority, skills=skills, channel=channel, enqueued_at_ms=when_ms
                )
            )
            if outcome.status != "unknown-queue":
                return outcome
            # configured in PostgreSQL but not (yet) in Redis, e.g. added on another node a moment ago
            await self.state.put_queue(config, default_max_wait_s=self.default_max_wait_s)
        raise RoutingError(f"queue {config.id!r} could not be made live")

    async def try_assign(self, interaction_id: str) -> Assignment | None:
        """The offer for this interaction: the one it has (made by any node, `state` offered or assigned),
        or a new one if an agent is free for it now, or None while it waits. NotQueued if routing does not
        hold it (ended, removed, or its offer expired)."""
        iid = check_interaction_id(interaction_id)
        outcome = await self._record(await self.state.try_assign(iid))
        if outcome.status == "unknown":
            # Redis may have lost it a moment ago (restarted, rebuild not run yet): the record decides.
            if not await self._restore(iid):
                raise NotQueued(f"routing holds no interaction {iid}")
            outcome = await self._record(await self.state.try_assign(iid))
            if outcome.status == "unknown":
                return None  # its agent is not back in Redis yet: the rebuild brings it
        existing = outcome.result.get("offer")
        if isinstance(existing, dict):
            return Assignment.from_script(existing)
        return outcome.offer_for(iid)

    async def wait_for_offer(self, interaction_id: str, timeout: float) -> Assignment | None:
        """try_assign, and if nothing yet, wait up to `timeout` for any node to place it, then once more."""
        iid = check_interaction_id(interaction_id)
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(iid, set()).add(woken)
        try:
            offer = await self.try_assign(iid)
            if offer is not None:
                return offer
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken, max(timeout, 0.0))
            return await self.try_assign(iid)
        finally:
            waiters = self._waiters.get(iid)
            if waiters is not None:
                waiters.discard(woken)
                if not waiters:
                    del self._waiters[iid]

    async def answered(self, interaction_id: str, agent_id: str) -> bool:
        """The agent took the offer: it is assigned. False if it was not (any longer) offered to them."""
        outcome = await self._record(await self.state.answered(check_interaction_id(interaction_id), agent_id))
        return outcome.status in ("assigned", "duplicate")

    async def not_answered(self, interaction_id: str, agent_id: str, reason: str = "no-answer") -> Assignment | None:
        """The agent let the offer go (ring-no-answer, refused): the agent is set away with `reason`, the
        interaction is back in its place in the queue. Returns the next offer for it if one was made at once."""
        iid = check_interaction_id(interaction_id)
        outcome = await self._record(await self.state.not_answered(iid, agent_id, reason=reason))
        return outcome.offer_for(iid)

    async def requeue(self, interaction_id: str) -> bool:
        """An offer or assignment whose handler died (a callback attempt cut short): the interaction back in
        its place, its agent free again (not set away) and taking the best waiting one. False if it was not
        with an agent."""
        outcome = await self._record(await self.state.requeue(check_interaction_id(interaction_id)))
        return outcome.status in ("waiting", "offered")

    async def release(self, interaction_id: str, wrapup_s: float = 0) -> bool:
        """The agent is done with the interaction: wrap-up for `wrapup_s`, then free for the next. False if
        routing held nothing of it."""
        iid = check_interaction_id(interaction_id)
        outcome = await self._record(await self.state.release(iid, wrapup_s=wrapup_s))
        if outcome.status == "unknown":
            return await self.store.end_open(iid, "released", ms_to_datetime(self.clock()), "released")
        return True

    async def remove(self, interaction_id: str, reason: str) -> bool:
        """The interaction ended wherever it was (abandoned, timed out, transferred...): out of the queue,
        and an agent it was offered to is free again (no wrap-up). Ended everywhere: a record Redis no
        longer matches (lost, or a former removal whose record could not be written) is closed too. False
        if routing held nothing of it; calling it again has no second effect."""
        iid = check_interaction_id(interaction_id)
        outcome = await self._record(await self.state.remove(iid, reason=reason))
        if outcome.status == "unknown":
            return await self.store.end_open(iid, reason, ms_to_datetime(self.clock()))
        return True

    async def holds_offer(self, interaction_id: str, agent_id: str) -> bool:
        """Whether this offer still stands (asked just before the agent's phone rings): the interaction is
        with this agent now (offered, or already taken), not withdrawn, expired or moved meanwhile."""
        live = await self.state.interaction(check_interaction_id(interaction_id))
        return live.get("state") in ("offered", "assigned") and live.get("agent") == agent_id

    async def held(self) -> dict[str, dict[str, str]]:
        """Every interaction held in the live state (waiting, offered, assigned): id -> state, agent, queue,
        channel."""
        return await self.state.held()

    async def move(self, interaction_id: str, *, queue: str | None = None, agent: str | None = None) -> dict[str, Any]:
        """Move a waiting interaction (a supervisor's decision), atomically: to another `queue`, keeping its
        place in time and its own priority, or offered to one `agent` now. The node handling it is woken as
        for any offer. Returns the script's answer ({"status": "waiting"|"offered", ...}). NotQueued if it is
        not waiting (offered, talking, ended); RoutingError for an unknown queue or agent, or an agent who
        cannot take it now (not available, or no room for its channel). An offer made wakes the node
        handling the interaction as any offer does (`_record`)."""
        iid = check_interaction_id(interaction_id)
        if (queue is None) == (agent is None):
            raise RoutingError("move to a queue or to an agent (one of them)")
        if queue is not None:
            config = await self._queue(queue)
            self._check_open(config, self.clock())
        outcome = await self._record(
            await self.state.move(iid, "queue" if queue is not None else "agent", queue or agent or "")
        )
        status = outcome.result.get("status")
        if status in ("unknown", "not-waiting"):
            state = outcome.result.get("state") or "gone"
            raise NotQueued(f"interaction {iid} is not waiting in a queue (it is {state})")
        if status == "unknown-queue":
            raise RoutingError(f"queue {queue!r} is not live")
        if status == "unknown-agent":
            raise RoutingError(f"no agent {agent!r}")
        if status == "agent-busy":
            raise RoutingError(f"agent {agent} cannot take it now (state {outcome.result.get('state')})")
        return dict(outcome.result)

    async def position(self, interaction_id: str) -> int | None:
        """The interaction's place among those waiting in its queue (1 = the next one taken), in the
        engine's own order (score, then id); None while it is not waiting (offered, assigned, unknown)."""
        iid = check_interaction_id(interaction_id)
        it = await self.state.interaction(iid)
        if it.get("state") != "waiting":
            return None
        ranked = [i for i, _ in await self.state.waiting(it["queue"])]
        return ranked.index(iid) + 1 if iid in ranked else None

    async def wait_estimate(self, interaction_id: str) -> WaitEstimate | None:
        """Position and estimated wait (routing/estimate.py) of a waiting interaction; None if not waiting."""
        iid = check_interaction_id(interaction_id)
        position = await self.position(iid)
        if position is None:
            return None
        queue = (await self.state.interaction(iid)).get("queue", "")
        now = ms_to_datetime(self.clock())
        answers = await self.store.recent_answers(queue, now - estimate.WINDOW, estimate.RECENT_ANSWERS)
        return WaitEstimate(position, estimate.expected_wait_s(position, answers, now))

    async def reopen(self, interaction_id: str, reason: str) -> Assignment | None:
        """Put an interaction that routing ended with `reason` back in its queue at its first queued time and
        priority, so it keeps its place (a booked callback retried after the customer did not answer).
        Returns the offer if one was made at once. NotQueued if it had not ended so."""
        iid = check_interaction_id(interaction_id)
        it = await self.store.reopen(iid, reason)
        if it is None:
            raise NotQueued(f"interaction {iid} did not end with {reason!r}")
        config = await self._queue(it.queue)
        outcome = await self._enqueue_live(
            iid, config, it.priority, it.skills, it.channel, datetime_to_ms(it.enqueued_at)
        )
        return outcome.offer_for(iid)

    async def transfer(
        self,
        interaction_id: str,
        from_agent: str,
        *,
        to_queue: str | None = None,
        to_agent: str | None = None,
        wrapup_s: float = 0,
    ) -> Assignment | None:
        """An agent hands an interaction on: `from_agent` starts the wrap-up, and the interaction waits
        again from now in `to_queue` (or its own queue), offered at once to `to_agent` if given and able to
        take it then, else to the queue's best agent when one is free. Returns that offer, or None while it
        waits. RoutingError (nothing changed) if it is not with `from_agent` or the target is unknown;
        AgentBusy if `to_agent` cannot take it now."""
        iid = check_interaction_id(interaction_id)
        live = await self.state.interaction(iid)
        if live.get("agent") != from_agent or live.get("state") != "assigned":
            raise NotQueued(f"interaction {iid} is not with agent {from_agent}")
        config = await self._queue(to_queue or live["queue"])
        if to_agent is not None:
            target = await self.state.agent(to_agent)
            if not target:
                raise RoutingError(f"unknown agent {to_agent!r}")
            if to_agent == from_agent or target.get("state") != "available":
                raise AgentBusy(f"agent {to_agent} cannot take it now ({target.get('state')})")
        await self.release(iid, wrapup_s)
        it = await self.store.reopen(iid, "released", queue=config.id, enqueued_at=ms_to_datetime(self.clock()))
        if it is None:
            raise NotQueued(f"interaction {iid} could not be taken back into routing")
        outcome = await self._record(
            await self.state.enqueue(
                iid,
                config.id,
                priority=it.priority,
                skills=it.skills,
                channel=it.channel,
                enqueued_at_ms=datetime_to_ms(it.enqueued_at),
                offer_to=to_agent or "",
            )
        )
        return outcome.offer_for(iid)

    # Agents ---------------------------------------------------------------------------------------

    async def set_state(self, agent_id: str, state: str, reason: str | None = None) -> bool:
        """What a person sets: offline, available, or away (with a reason). While ringing, busy or in
        wrap-up the shown state stays so until the work ends. False for an unknown agent."""
        if state not in MANUAL_STATES:
            raise RoutingError(f"state must be one of {', '.join(MANUAL_STATES)}")
        outcome = await self._record(await self.state.set_presence(agent_id, state, reason=reason))
        return outcome.status == "ok"

    async def next_for_agent(self, agent_id: str) -> Assignment | None:
        """The decision for an agent who may take more work: the best waiting interaction, offered."""
        outcome = await self._record(await self.state.next_for_agent(agent_id))
        return outcome.offer_to(agent_id)

    async def agent(self, agent_id: str) -> dict[str, str]:
        """The live hash: state, since (ms), presence, reason, queues, skills, endpoint, cap:/load:<channel>,
        offer, wrapup_until, idle_since. Empty for an agent routing does not know."""
        return await self.state.agent(agent_id)

    async def agents(self, agent_ids: list[str]) -> list[dict[str, str]]:
        """`agent` of each, in one Redis round trip."""
        return await self.state.agents(agent_ids)

    async def tick(self) -> list[Assignment]:
        made: list[Assignment] = []
        for _ in range(20):  # each call handles a bounded batch
            outcome = await self._record(await self.state.tick())
            made += outcome.assignments
            if not outcome.events and not outcome.states:
                break
        return made

    # Configuration --------------------------------------------------------------------------------

    async def put_queue(self, queue: Queue) -> bool:
        """Create or replace a queue; True if new. Interactions already waiting keep the requirement and
        escalation steps they were queued with."""
        for step in queue.escalation:
            if step.overflow is not None and await self._queue_or_none(step.overflow) is None:
                raise RoutingError(f"escalation overflows into unknown queue {step.overflow!r}")
        (created,) = await self.store.put_queues([queue])
        await self.state.put_queue(queue, default_max_wait_s=self.default_max_wait_s)
        self.queues[queue.id] = queue
        await self._announce_config()
        return created

    async def delete_queue(self, queue_id: str) -> bool:
        if await self._queue_or_none(queue_id) is None:
            return False
        serving = [a.id for a in await self.store.agents() if queue_id in a.queues]
        if serving:
            raise InUse(f"agents still serve queue {queue_id}: {', '.join(serving)}")
        feeding = [q.id for q in await self.store.queues() if any(s.overflow == queue_id for s in q.escalation)]
        if feeding:
            raise InUse(f"queues overflow into {queue_id}: {', '.join(feeding)}")
        if (await self.state.drop_queue(queue_id)).status == "busy":
            raise InUse(f"interactions are waiting in queue {queue_id}")
        await self.store.delete_queue(queue_id)
        self.queues.pop(queue_id, None)
        await self._announce_config()
        return True

    async def put_agent(self, agent: Agent, presence_if_new: str = "offline") -> bool:
        """Create or change an agent (queues, skills, capacity, endpoint); its live state stays. True if new."""
        for queue in agent.queues:
            if await self._queue_or_none(queue) is None:
                raise RoutingError(f"agent {agent.id} serves unknown queue {queue!r}")
        try:
            (created,) = await self.store.put_agents([agent])
        except asyncpg.UniqueViolationError as exc:
            raise InUse(f"SIP endpoint {agent.sip_endpoint!r} belongs to another agent") from exc
        await self._record(await self.state.put_agent(agent, presence_if_new=presence_if_new))
        return created

    async def delete_agent(self, agent_id: str) -> bool:
        if await self.store.agent(agent_id) is None:
            return False
        if (await self.state.drop_agent(agent_id)).status == "busy":
            raise InUse(f"agent {agent_id} is on an interaction")
        if await self.store.agent_in_use(agent_id):
            raise InUse(f"agent {agent_id} has interactions on record: take them out of their queues instead")
        try:
            await self.store.delete_agent(agent_id)
        except asyncpg.ForeignKeyViolationError as exc:
            raise InUse(f"agent {agent_id} is referenced by stored records: take them out of their queues") from exc
        return True

    # Inside ---------------------------------------------------------------------------------------

    async def _record(self, outcome: Outcome) -> Outcome:
        """Durable first, then announced: the record in PostgreSQL, then every node's waiters woken."""
        await self.store.record(outcome)
        if outcome.assignments:
            async with self.redis.pipeline(transaction=False) as pipe:
                for offer in outcome.assignments:
                    pipe.publish(
                        self.notify_channel, json.dumps({"interaction": offer.interaction_id, "agent": offer.agent_id})
                    )
                await pipe.execute()
        return outcome

    async def _restore(self, interaction_id: str) -> bool:
        """Put one interaction back into Redis from the record; False if the record has it ended (or never)."""
        it = await self.store.open_interaction(interaction_id)
        if it is None:
            return False
        config = await self._queue_or_none(it.queue)
        if config is not None:
            await self.state.put_queue(config, default_max_wait_s=self.default_max_wait_s)
        enqueued_ms = datetime_to_ms(it.enqueued_at)
        if it.agent_id is not None and it.offered_at is not None:
            await self.state.restore_offer(
                it.interaction_id,
                it.queue,
                it.channel,
                it.priority,
                it.skills,
                enqueued_ms,
                it.agent_id,
                it.state,
                datetime_to_ms(it.offered_at),
                it.via or it.queue,
            )
        else:
            await self._record(
                await self.state.enqueue(
                    it.interaction_id,
                    it.queue,
                    priority=it.priority,
                    skills=it.skills,
                    channel=it.channel,
                    enqueued_at_ms=enqueued_ms,
                )
            )
        return True

    async def _queue_or_none(self, queue_id: str) -> Queue | None:
        found = self.queues.get(queue_id)
        if found is None:
            found = await self.store.queue(queue_id)
            if found is not None:
                self.queues[queue_id] = found
        return found

    async def _queue(self, queue_id: str) -> Queue:
        found = await self._queue_or_none(queue_id)
        if found is None:
            raise RoutingError(f"unknown queue {queue_id!r}")
        return found

    def _check_open(self, queue: Queue, when_ms: int) -> None:
        if queue.hours is None or self.calendars is None:
            return
        try:
            is_open = self.calendars().is_open(queue.hours, ms_to_datetime(when_ms))
        except UnknownCalendar:
            log.warning("queue %s: calendar %r is not in the live hours; taken as open", queue.id, queue.hours)
            return
        if not is_open:
            raise QueueClosed(f"queue {queue.id} is closed now (hours: {queue.hours})")

    async def _announce_config(self) -> None:
        await self.redis.publish(self.notify_channel, json.dumps({"config": True}))

    def _wake(self, interaction_id: str) -> None:
        for waiter in self._waiters.get(interaction_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    async def _listen(self) -> None:
        while True:
            try:
                async for message in self._pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    data = json.loads(message["data"])
                    if "interaction" in data:
                        self._wake(str(data["interaction"]))
                    elif data.get("config"):
                        self.queues = {q.id: q for q in await self.store.queues()}
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis gone for a moment: the tick covers what a missed wake-up would
                log.warning("routing notifications interrupted (%s); listening again", exc)
                await asyncio.sleep(1)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                async with self._lock:
                    if await self._check_live() == "trusted":
                        await self.tick()
            except asyncio.CancelledError:
                raise
            except DOWN as exc:  # the next tick tries again, and checks the state's life first
                log.warning("routing tick: %s does not answer (%s)", part_of(exc), type(exc).__name__)
            except Exception:
                log.exception("routing tick failed")


ROUTING = web.AppKey("routing", RoutingEngine)
