"""The agents over the API: the list with live states, and setting a state by hand (described on this module's
route table, so the one document covers them; the handlers validate their own input). Both are limited to the
asker's scope (routing/scope.py): a supervisor lists and sets the agents of their teams, an admin all."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from console import desk, wallboard
from hilo.actions import audit
from hilo.web.auth import STAFF, principal, requires
from hilo.web.keys import POOL
from hilo.web.openapi import Routes, error_response
from routing.live import BOARD, MANUAL_STATES
from routing.scope import refuse, scope_of

ROUTES = Routes()


def _bad_request(reason: str, field: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=web.json_response({"error": "bad_request", "field": field, "reason": reason}).text,
        content_type="application/json",
    )


@requires(*STAFF)
async def list_agents(request: web.Request) -> web.Response:
    pool, board = request.app[POOL], request.app[BOARD]
    scope = await scope_of(pool, principal(request))
    rows = await pool.fetch("SELECT id, name, sip_endpoint, queues FROM agents ORDER BY id")
    agents = []
    for row in rows:
        if not scope.has_agent(row["id"]):
            continue
        live = await board.agent(row["id"])
        since = live.get("since")  # Redis holds it as text: the document declares an integer
        agents.append({**dict(row), "state": live.get("state", "offline"), "since_ms": int(since) if since else None})
    return web.json_response({"agents": agents})


@requires(*STAFF)
async def set_agent_state(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError as exc:
        raise _bad_request('body must be JSON like {"state": "available"}', "body") from exc
    state = body.get("state") if isinstance(body, dict) else None
    if state not in MANUAL_STATES:
        raise _bad_request(f"state must be one of {', '.join(MANUAL_STATES)}", "state")
    agent_id = request.match_info["agent_id"]
    pool, who, detail = request.app[POOL], principal(request), {"state": state}
    scope = await scope_of(pool, who)
    # An agent out of scope is refused; one that does not exist is 404 (below) for everyone.
    if not scope.has_agent(agent_id) and await pool.fetchval("SELECT true FROM agents WHERE id = $1", agent_id):
        refused = await refuse(
            pool,
            who,
            scope,
            action="agent-state",
            target_kind="agent",
            target_id=agent_id,
            what=f"agent {agent_id}",
            field="agent_id",
            detail=detail,
        )
        return refused.response()
    done = await request.app[BOARD].set_state(agent_id, state)
    await audit(pool, who, "agent-state", "agent", agent_id, ok=done, detail=detail)
    if not done:
        return error_response(404, "not_found", f"no agent {agent_id!r}")
    return web.json_response({"agent": agent_id, "state": state})


# The description of the two routes above, so the one document covers every /api/ route -------------


class AgentOut(BaseModel):
    id: str
    name: str
    sip_endpoint: str
    queues: list[str]
    state: str = Field(description="live state: available, busy, away, wrapup, offline, ...")
    since_ms: int | None


class AgentList(BaseModel):
    agents: list[AgentOut]


class AgentPath(BaseModel):
    agent_id: str


class AgentStateIn(BaseModel):
    state: Literal[MANUAL_STATES]  # type: ignore[valid-type]


class AgentStateOut(BaseModel):
    agent: str
    state: str


ROUTES.describe(
    "GET",
    "/api/agents",
    summary="Agents with their live state (a supervisor's: the agents of their teams)",
    tag="agents",
    roles=STAFF,
    ok={200: AgentList},
)
ROUTES.describe(
    "POST",
    "/api/agents/{agent_id}/state",
    summary="Set an agent's state by hand",
    tag="agents",
    roles=STAFF,
    ok={200: AgentStateOut},
    errors={
        400: "state is not one a person may set",
        403: "the agent is outside your teams (audited)",
        404: "no such agent",
    },
    path_model=AgentPath,
    body=AgentStateIn,
)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/agents", list_agents)
    app.router.add_post("/api/agents/{agent_id}/state", set_agent_state)
    desk.add_routes(app)  # the agent console: page, sign-in, screen-pop WebSocket, wrap-up
    wallboard.add_routes(app)  # the supervisor's wallboard and reports pages (after desk: shares its sockets)
