"""Live routing state in Redis, changed only through routing/decide.lua: each method is one script call,
that is one event with every decision it causes, atomic across all Hilo nodes sharing the Redis.

This layer knows nothing of PostgreSQL; `routing.engine.RoutingEngine` records what it decides. The keys
live under `<namespace>:routing:` (listed in decide.lua). The script builds key names itself, which is fine
on one Redis; a Redis Cluster would need hash tags so they share a slot."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, cast

import redis.asyncio as aioredis

from dialplans.models import CHANNELS, Agent, Queue
from routing.model import (
    PRESENCES,
    Outcome,
    RoutingError,
    check_interaction_id,
    encode_capacity,
    encode_levels,
    encode_steps,
)

SCRIPT = (resources.files("routing") / "decide.lua").read_text()


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RoutingState:
    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str,
        *,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.redis = redis
        self.prefix = f"{namespace}:routing"
        self.clock = clock
        self._script = redis.register_script(SCRIPT)

    async def run(self, command: str, *args: str | int, now: int | None = None) -> Outcome:
        raw = await self._script(keys=[], args=[command, self.prefix, self.clock() if now is None else now, *args])
        return Outcome.from_script(json.loads(raw))

    # Configuration --------------------------------------------------------------------------------

    async def configure(self, *, offer_ttl_s: float) -> None:
        """How long an offer may stay unanswered and unrefused before it is taken back (its call's node is
        presumed gone): longer than any ring timeout."""
        await self.run("configure", int(offer_ttl_s * 1000))

    async def put_queue(self, queue: Queue, *, default_max_wait_s: int) -> None:
        await self.run(
            "put_queue",
            queue.id,
            encode_levels(queue.skills),
            queue.priority,
            queue.aging_s * 1000,
            encode_steps(queue),
            queue.agent_order,
            (queue.max_wait_s or default_max_wait_s) * 1000,
        )

    async def drop_queue(self, queue_id: str) -> Outcome:
        return await self.run("drop_queue", queue_id)

    async def put_agent(self, agent: Agent, *, presence_if_new: str = "offline") -> Outcome:
        """Add the agent or change its queues, skills, capacity and endpoint; its live state stays."""
        if presence_if_new not in PRESENCES:
            raise RoutingError(f"presence must be one of {', '.join(PRESENCES)}")
        return await self.run(
            "put_agent",
            agent.id,
            ",".join(sorted(set(agent.queues))),
            encode_levels(agent.skills),
            encode_capacity({str(ch): n for ch, n in agent.capacity.items()}),
            agent.sip_endpoint,
            presence_if_new,
        )

    async def drop_agent(self, agent_id: str) -> Outcome:
        return await self.run("drop_agent", agent_id)

    # Events ---------------------------------------------------------------------------------------

    async def enqueue(
        self,
        interaction_id: str,
        queue: str,
        *,
        priority: int = 0,
        skills: dict[str, int] | None = None,
        channel: str = "voice",
        enqueued_at_ms: int | None = None,
        now: int | None = None,
        offer_to: str = "",
    ) -> Outcome:
        """`offer_to`: an agent who gets it at once if they can take it now (a transfer to that agent)."""
        if channel not in CHANNELS:
            raise RoutingError(f"channel {channel!r} is not one of {', '.join(CHANNELS)}")
        if not 0 <= priority <= 10:
            raise RoutingError(f"priority {priority} is outside 0-10")
        when = self.clock() if enqueued_at_ms is None else enqueued_at_ms
        return await self.run(
            "enqueue",
            check_interaction_id(interaction_id),
            queue,
            channel,
            priority,
            encode_levels(skills or {}),
            when,
            offer_to,
            now=now,
        )

    async def try_assign(self, interaction_id: str, *, now: int | None = None) -> Outcome:
        return await self.run("assign", check_interaction_id(interaction_id), now=now)

    async def next_for_agent(self, agent_id: str, *, now: int | None = None) -> Outcome:
        return await self.run("next", agent_id, now=now)

    async def answered(self, interaction_id: str, agent_id: str, *, now: int | None = None) -> Outcome:
        return await self.run("answered", check_interaction_id(interaction_id), agent_id, now=now)

    async def not_answered(
        self, interaction_id: str, agent_id: str, *, reason: str = "no-answer", now: int | None = None
    ) -> Outcome:
        return await self.run("not_answered", check_interaction_id(interaction_id), agent_id, reason, now=now)

    async def requeue(self, interaction_id: str, *, now: int | None = None) -> Outcome:
        return await self.run("requeue", check_interaction_id(interaction_id), now=now)

    async def release(self, interaction_id: str, *, wrapup_s: float = 0, now: int | None = None) -> Outcome:
        return await self.run("release", check_interaction_id(interaction_id), int(wrapup_s * 1000), now=now)

    async def remove(self, interaction_id: str, *, reason: str, now: int | None = None) -> Outcome:
        return await self.run("remove", check_interaction_id(interaction_id), reason, now=now)

    async def move(self, interaction_id: str, how: str, target: str, *, now: int | None = None) -> Outcome:
        """A waiting interaction to another queue (`how` "queue") or offered to one agent now ("agent")."""
        return await self.run("move", check_interaction_id(interaction_id), how, target, now=now)

    async def set_presence(
        self, agent_id: str, presence: str, *, reason: str | None = None, now: int | None = None
    ) -> Outcome:
        if presence not in PRESENCES:
            raise RoutingError(f"state must be one of {', '.join(PRESENCES)}")
        return await self.run("presence", agent_id, presence, reason or "", now=now)

    async def tick(self, *, now: int | None = None) -> Outcome:
        """Only what time brings: ended wrap-ups, due escalations, expired offers (and their decisions)."""
        return await self.run("tick", now=now)

    # Rebuilding -----------------------------------------------------------------------------------

    async def restore_offer(
        self,
        interaction_id: str,
        queue: str,
        channel: str,
        priority: int,
        skills: dict[str, int],
        enqueued_at_ms: int,
        agent_id: str,
        state: str,
        offered_at_ms: int,
        via: str,
    ) -> Outcome:
        return await self.run(
            "restore_offer",
            check_interaction_id(interaction_id),
            queue,
            channel,
            priority,
            encode_levels(skills),
            enqueued_at_ms,
            agent_id,
            state,
            offered_at_ms,
            via,
        )

    async def restore_wrapup(self, agent_id: str, until_ms: int) -> Outcome:
        return await self.run("restore_wrapup", agent_id, until_ms)

    async def clear(self) -> None:
        """Delete every routing key of this namespace."""
        batch: list[Any] = []
        async for key in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await self.redis.delete(*batch)
                batch = []
        if batch:
            await self.redis.delete(*batch)

    # Reading --------------------------------------------------------------------------------------

    async def agent(self, agent_id: str) -> dict[str, str]:
        raw = cast(dict[Any, Any], await self.redis.hgetall(f"{self.prefix}:agent:{agent_id}"))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def agents(self, agent_ids: list[str]) -> list[dict[str, str]]:
        """Several agents' hashes in one round trip (the wallboard reads them all at every rebuild)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for agent_id in agent_ids:
                pipe.hgetall(f"{self.prefix}:agent:{agent_id}")
            raw = cast(list[dict[Any, Any]], await pipe.execute())
        return [{_text(k): _text(v) for k, v in one.items()} for one in raw]

    async def agent_ids(self) -> list[str]:
        return sorted(_text(a) for a in cast(set[Any], await self.redis.smembers(f"{self.prefix}:agents")))

    async def interaction(self, interaction_id: str) -> dict[str, str]:
        raw = cast(dict[Any, Any], await self.redis.hgetall(f"{self.prefix}:int:{interaction_id}"))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def held(self) -> dict[str, dict[str, str]]:
        """Every interaction held now (waiting, offered or assigned), in two round trips: id -> state, agent
        (while offered or assigned), queue, channel."""
        fields = ("state", "agent", "queue", "channel")
        ids = sorted(_text(i) for i in cast(set[Any], await self.redis.smembers(f"{self.prefix}:interactions")))
        if not ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for iid in ids:
                pipe.hmget(f"{self.prefix}:int:{iid}", fields)
            rows = cast(list[list[Any]], await pipe.execute())
        held: dict[str, dict[str, str]] = {}
        for iid, values in zip(ids, rows, strict=True):
            found = {name: _text(v) for name, v in zip(fields, values, strict=True) if v is not None}
            if found.get("state"):  # ended between the two reads
                held[iid] = found
        return held

    async def waiting(self, queue: str) -> list[tuple[str, float]]:
        """Interactions waiting in a queue (overflowed ones included), best first: (id, score)."""
        found: dict[str, float] = {}
        for channel in CHANNELS:
            sigs = cast(set[Any], await self.redis.smembers(f"{self.prefix}:sigs:{queue}:{channel}"))
            for sig in sigs:
                key = f"{self.prefix}:wait:{queue}:{channel}:{_text(sig)}"
                entries = cast(list[tuple[Any, float]], await self.redis.zrange(key, 0, -1, withscores=True))
                for member, score in entries:
                    found[_text(member)] = float(score)
        return sorted(found.items(), key=lambda item: (item[1], item[0]))

    async def available(self, queue: str, channel: str = "voice") -> list[str]:
        """Agents who could be offered one more interaction of `queue` on `channel` now, longest idle first."""
        return [_text(a) for a in await self.redis.zrange(f"{self.prefix}:avail:{queue}:{channel}", 0, -1)]
