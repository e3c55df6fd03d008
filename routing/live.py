"""Live agent state in Redis, changed only by Lua scripts so that every decision is atomic: two Hilo nodes
claiming at the same moment can never hand one agent two calls.

Keys (prefix = namespace):
  <ns>:agent:<id>               hash: state, since, queues (comma list), endpoint, interaction
  <ns>:queue:<queue>:available  sorted set of available agents, score = available-since (ms): the lowest
                                score is the longest-idle agent, who gets the next call.
The scripts build agent and queue keys from the prefix, which is fine on one Redis; a Redis Cluster would
need hash tags so they share a slot."""

from __future__ import annotations

import time
from typing import Any, cast

import redis.asyncio as aioredis

from dialplans.models import Agent

_CLAIM = """
local prefix, interaction, now = ARGV[1], ARGV[2], ARGV[3]
for _, agent in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = prefix .. ':agent:' .. agent
  if redis.call('HGET', key, 'state') == 'available' then
    redis.call('HSET', key, 'state', 'ringing', 'since', now, 'interaction', interaction)
    local queues = redis.call('HGET', key, 'queues') or ''
    for queue in string.gmatch(queues, '[^,]+') do
      redis.call('ZREM', prefix .. ':queue:' .. queue .. ':available', agent)
    end
    return agent
  end
  redis.call('ZREM', KEYS[1], agent)  -- stale entry: the agent is not available any more
end
return false
"""

_SET_STATE = """
local prefix, agent, state, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = prefix .. ':agent:' .. agent
if redis.call('EXISTS', key) == 0 then return false end
redis.call('HSET', key, 'state', state, 'since', now)
if state ~= 'ringing' and state ~= 'busy' then redis.call('HDEL', key, 'interaction') end
local queues = redis.call('HGET', key, 'queues') or ''
for queue in string.gmatch(queues, '[^,]+') do
  local zkey = prefix .. ':queue:' .. queue .. ':available'
  if state == 'available' then redis.call('ZADD', zkey, now, agent) else redis.call('ZREM', zkey, agent) end
end
return true
"""

AGENT_STATES = ("offline", "available", "ringing", "busy", "wrapup", "away")
# What an agent or supervisor may set by hand; ringing/busy/wrapup belong to the call flow.
MANUAL_STATES = ("offline", "available", "away")


def _now_ms() -> int:
    return int(time.time() * 1000)


class AgentBoard:
    def __init__(self, redis: aioredis.Redis, namespace: str) -> None:
        self.redis = redis
        self.prefix = namespace
        self._claim = redis.register_script(_CLAIM)
        self._set_state = redis.register_script(_SET_STATE)

    def agent_key(self, agent_id: str) -> str:
        return f"{self.prefix}:agent:{agent_id}"

    def queue_key(self, queue: str) -> str:
        return f"{self.prefix}:queue:{queue}:available"

    async def load(self, agents: list[Agent], initial_state: str = "available") -> None:
        """Make Redis know every configured agent; agents already known keep their live state."""
        for agent in agents:
            key = self.agent_key(agent.id)
            await self.redis.hset(key, mapping={"queues": ",".join(agent.queues), "endpoint": agent.sip_endpoint})
            if await self.redis.hsetnx(key, "state", "offline"):
                await self.set_state(agent.id, initial_state)

    async def claim(self, queue: str, interaction_id: str) -> str | None:
        """Atomically reserve the longest-idle available agent of `queue` for the interaction."""
        agent = await self._claim(keys=[self.queue_key(queue)], args=[self.prefix, interaction_id, _now_ms()])
        if agent is None:
            return None
        return agent.decode() if isinstance(agent, bytes) else str(agent)

    async def set_state(self, agent_id: str, state: str) -> bool:
        if state not in AGENT_STATES:
            raise ValueError(f"unknown agent state {state!r}; one of {', '.join(AGENT_STATES)}")
        done = await self._set_state(keys=[], args=[self.prefix, agent_id, state, _now_ms()])
        return bool(done)

    async def agent(self, agent_id: str) -> dict[str, str]:
        raw = cast(dict[Any, Any], await self.redis.hgetall(self.agent_key(agent_id)))
        return {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }

    async def clear(self) -> None:
        """Delete every key of this namespace (used by tests and by `hilo` resets)."""
        async for key in self.redis.scan_iter(match=f"{self.prefix}:*"):
            await self.redis.delete(key)
