"""Agent states as the console, the agents API and the wallboard read and set them: a view of the routing
engine's live state (routing/engine.py), which decides who gets what."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from dialplans.models import Agent
from routing.model import AGENT_STATES, MANUAL_STATES

if TYPE_CHECKING:
    from routing.engine import RoutingEngine

__all__ = ["AGENT_STATES", "MANUAL_STATES", "AgentBoard"]


class AgentBoard:
    def __init__(self, engine: RoutingEngine) -> None:
        self.engine = engine

    async def agent(self, agent_id: str) -> dict[str, str]:
        """state (offline, available, ringing, busy, wrapup, away), since (ms), presence, reason, queues,
        endpoint, ...; empty for an unknown agent."""
        return await self.engine.agent(agent_id)

    async def agents(self, agent_ids: list[str]) -> list[dict[str, str]]:
        """`agent` of each (in one round trip), in the order given."""
        return await self.engine.agents(agent_ids)

    async def set_state(self, agent_id: str, state: str, reason: str | None = None) -> bool:
        """A state a person sets (MANUAL_STATES); ValueError for any other. False for an unknown agent."""
        if state not in AGENT_STATES:
            raise ValueError(f"unknown agent state {state!r}; one of {', '.join(AGENT_STATES)}")
        return await self.engine.set_state(agent_id, state, reason)

    async def load(self, agents: list[Agent], initial_state: str = "available") -> None:
        """Make routing know these agents; agents already known keep their live state."""
        for agent in agents:
            await self.engine.put_agent(agent, presence_if_new=initial_state)

    async def clear(self) -> None:
        """Delete every key of this namespace (used by tests and by `hilo` resets): live agents and
        interactions, sessions, sign-in limits, ...; routing's queues stay configured."""
        await self.engine.reset(whole_namespace=True)


BOARD = web.AppKey("board", AgentBoard)  # the agents' live states, for pages and the API
