"""Whose work someone may see and act on: the one rule of every route and feed that touches agents, queues,
interactions, calls, chats, recordings and figures.

- admin (a console admin, or the API token): everything;
- supervisor: the agents of the teams they supervise (`console_users.teams`, `hilo users add --team`; an
  agent's teams are `agents.teams`, from routing.yaml or the routing API) and the queues those agents serve.
  A supervisor without teams has nothing: no call, chat, pop, agent or figure (as for recordings), and a
  supervisor API token, which has no user and so no teams, neither;
- agent: themselves (their own agent id), and no queue.

Work (a call, a chat, an interaction, a recording, a contact in the figures) belongs to its agent: the one on
it, who took it or was offered it, as the place asking knows it; while no agent has it, to the queue it waits
or waited in. It is in someone's scope when one of its agents is theirs, or, with no agent, its queue is.
Work with neither (a caller still in the IVR, a flow's own recording) is an admin's only.

The scope is read at each request (a live feed: when it opens), so a change of a supervisor's teams, or of an
agent's teams or queues, takes effect at once. Lists are cut to the scope; a single thing out of it is refused
with 403 and a reason saying why (`refusal`), and the refusal is audited (`refuse`, hilo/actions.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hilo import actions
from hilo.web.openapi import ApiError
from hilo.web.sessions import Principal

if TYPE_CHECKING:
    import uuid

    from hilo.db import Db

# A supervisor's teams, the agents in any of them and the queues those agents serve, in one round trip.
_SUPERVISED = (
    "SELECT u.teams,"
    " ARRAY(SELECT a.id FROM agents a WHERE a.teams && u.teams ORDER BY a.id) AS agents,"
    " ARRAY(SELECT DISTINCT q FROM agents a, unnest(a.queues) q WHERE a.teams && u.teams ORDER BY q) AS queues"
    " FROM console_users u WHERE u.username = $1 AND u.role = 'supervisor'"
)
NO_TEAMS = "you supervise no team (a supervisor needs teams: hilo users add --team)"


def _many(values: str | Iterable[str | None] | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        return [values]
    return [v for v in values if v]


@dataclass(frozen=True)
class Scope:
    """What one person may see and act on. `agents` and `queues` are a supervisor's, read with the scope."""

    role: str = ""
    everything: bool = False
    agent_id: str | None = None  # an agent: themselves
    teams: tuple[str, ...] = ()  # a supervisor's
    agents: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()

    def has_agent(self, agent_id: str | None) -> bool:
        """May act on this agent (their state, their calls, their pops)."""
        if self.everything:
            return True
        return bool(agent_id) and (agent_id == self.agent_id or agent_id in self.agents)

    def has_queue(self, queue: str | None) -> bool:
        """May see this queue's figures and what waits in it, and move work into it."""
        return self.everything or (queue is not None and queue in self.queues)

    def has_work(
        self, agents: str | Iterable[str | None] | None, queues: str | Iterable[str | None] | None = None
    ) -> bool:
        """May see and act on work whose agents (any one of them) are `agents`, or with none, that waits or
        waited in `queues` (any one of them)."""
        if self.everything:
            return True
        named = _many(agents)
        if named:
            return any(self.has_agent(a) for a in named)
        return any(self.has_queue(q) for q in _many(queues))

    @property
    def teams_shown(self) -> frozenset[str] | None:
        """The teams a view (the wallboard) is cut to: None for all of them, none for no team."""
        return None if self.everything else frozenset(self.teams)

    def condition(self, param: int, agent: str = "r.agent_id", queue: str = "r.queue") -> tuple[str, list[Any]]:
        """The same rule in SQL, over rows whose agent and queue are the columns `agent` and `queue`: the
        condition and its arguments, numbered from $`param` (the ids and names are arguments, never SQL)."""
        if self.everything:
            return "true", []
        if self.agent_id is not None:
            return f"{agent} = ${param}", [self.agent_id]
        if not self.agents and not self.queues:
            return "false", []
        return (
            f"({agent} = ANY(${param}::text[]) OR ({agent} IS NULL AND {queue} = ANY(${param + 1}::text[])))",
            [sorted(self.agents), sorted(self.queues)],
        )

    def refusal(self, what: str) -> str:
        """Why `what` ("the call of agent bob", "this recording") is refused (403)."""
        if self.role == "agent":
            if self.agent_id is None:
                return f"{what}: this user is not linked to an agent"
            return f"{what} is not yours (an agent acts only on their own calls and chats)"
        if self.role == "supervisor":
            if self.teams:
                return f"{what} is outside your teams ({', '.join(self.teams)})"
            return f"{what} is not open to you: {NO_TEAMS}"
        return f"{what} is not open to the role {self.role!r}"


EVERYTHING = Scope("admin", everything=True)
NOTHING = Scope()


async def scope_of(db: Db, who: Principal) -> Scope:
    """What `who` may see and act on, as it is now: admin everything, an agent themselves, a supervisor the
    agents of their teams and these agents' queues."""
    if who.role == "admin":
        return EVERYTHING
    if who.role == "agent":
        return Scope("agent", agent_id=who.agent_id)
    if who.role == "supervisor" and who.username:
        row = await db.fetchrow(_SUPERVISED, who.username)
        if row is not None:
            return Scope(
                "supervisor",
                teams=tuple(sorted(row["teams"])),
                agents=frozenset(row["agents"]),
                queues=frozenset(row["queues"]),
            )
    return Scope(who.role)


async def refuse(
    db: Db,
    who: Principal,
    scope: Scope,
    *,
    action: str,
    target_kind: str,
    target_id: str,
    what: str,
    field: str | None = None,
    detail: dict[str, Any] | None = None,
) -> ApiError:
    """Audit the refusal of `action` on `what` (ok false, with the reason, and `detail`) and return the 403
    to answer."""
    reason = scope.refusal(what)
    await actions.audit(db, who, action, target_kind, target_id, ok=False, detail={"reason": reason, **(detail or {})})
    return ApiError(403, "forbidden", reason, field)


@dataclass(frozen=True)
class Work:
    """Whose an interaction is: every agent who took it or was offered it, and the queue it was queued in."""

    agents: tuple[str, ...]
    queue: str | None


async def interaction_work(db: Db, interaction_id: uuid.UUID) -> Work | None:
    """The agents and queue of an interaction, from its record and its timeline (each agent it was offered to
    got its screen-pop); None if there is no such interaction."""
    row = await db.fetchrow(
        "SELECT i.agent_id, i.queue,"
        " ARRAY(SELECT DISTINCT e.data ->> 'agent' FROM timeline_events e WHERE e.interaction_id = i.id"
        "       AND e.type = 'routing.offered' AND e.data ? 'agent') AS offered"
        " FROM interactions i WHERE i.id = $1",
        interaction_id,
    )
    if row is None:
        return None
    agents = sorted({a for a in [row["agent_id"], *row["offered"]] if a})
    return Work(tuple(agents), row["queue"])
