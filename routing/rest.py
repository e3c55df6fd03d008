"""The routing admin API: queues and agents (admin changes them, admin and supervisor read them), with
their live state, an agent's state history, a queue's service level, and what routing did with one
interaction. Declared on this module's route table, served and described in the one API (hilo.web.api).
A supervisor reads within their scope (routing/scope.py): the lists are cut to their teams' agents and
queues, and one agent, queue or interaction outside them is 403, audited.

A queue or agent is sent whole, as in routing.yaml (`PUT` creates or replaces); changes take effect at once
on every node. routing.yaml seeds the configuration at each start: the ids it defines are set back to what
it says, others stay as the API left them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from dialplans.models import CHANNELS, Agent, Name, Queue, load_phones, unprovisioned
from hilo.web.auth import ADMIN, STAFF, principal
from hilo.web.keys import POOL, SETTINGS
from hilo.web.openapi import ApiError, Reply, Routes, bad_request, conflict, not_found
from hilo.yamlconf import ConfigError
from routing.engine import ROUTING, InUse, RoutingEngine
from routing.model import RoutingError, ms_to_datetime
from routing.scope import Scope, refuse, scope_of

ROUTES = Routes()


def _engine(request: web.Request) -> RoutingEngine:
    engine = request.app.get(ROUTING)
    if engine is None:
        raise ApiError(503, "unavailable", "routing is not running on this server")
    return engine


# Models ---------------------------------------------------------------------------------------------


class RoutingQueuePath(BaseModel):
    queue_id: Name


class RoutingAgentPath(BaseModel):
    agent_id: Name


class RoutingInteractionPath(BaseModel):
    interaction_id: uuid.UUID


class AgentHistoryQuery(BaseModel):
    limit: int = Field(default=100, ge=1, le=1000)


class ServiceLevelQuery(BaseModel):
    hours: int = Field(default=24, ge=1, le=24 * 31, description="the period measured: the last N hours")


class QueueLive(BaseModel):
    waiting: int
    longest_wait_s: float | None = Field(description="how long the interaction waiting longest has waited")
    available_agents: dict[str, int] = Field(description="per channel: agents who could take one more now")


class ServiceLevel(BaseModel):
    since: datetime
    answered: int
    answered_in_target: int = Field(description="answered within the queue's sla.within_s of being queued")
    abandoned: int = Field(description="ended before any agent answered")
    percent: float | None = Field(description="answered in target / (answered + abandoned); null if none")
    target_percent: float
    within_s: int


class RoutingQueueOut(BaseModel):
    queue: Queue
    live: QueueLive
    service_level: ServiceLevel | None = None


class RoutingQueueList(BaseModel):
    queues: list[RoutingQueueOut]


class AgentLive(BaseModel):
    state: str = Field(description="offline, available, ringing, busy, wrapup or away")
    presence: str = Field(description="what the person set: offline, available or away")
    reason: str | None
    since: datetime | None
    load: dict[str, int] = Field(description="interactions being handled, per channel")
    offer: str | None = Field(description="the interaction being offered to the agent now")
    wrapup_until: datetime | None


class RoutingAgentOut(BaseModel):
    agent: Agent
    live: AgentLive


class RoutingAgentList(BaseModel):
    agents: list[RoutingAgentOut]


class AgentStateOut(BaseModel):
    state: str
    presence: str
    reason: str | None
    interaction_id: uuid.UUID | None
    wrapup_until: datetime | None
    at: datetime


class AgentHistoryOut(BaseModel):
    agent_id: str
    states: list[AgentStateOut] = Field(description="newest first")


class OfferOut(BaseModel):
    agent_id: str
    queue: str
    channel: str
    offered_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    outcome: str | None


class RoutingInteractionOut(BaseModel):
    interaction_id: uuid.UUID
    queue: str
    channel: str
    priority: int
    skills: dict[str, int]
    enqueued_at: datetime
    state: str
    agent_id: str | None
    queues: list[str]
    places: str | None
    ended_at: datetime | None
    end_reason: str | None
    offers: list[OfferOut]


# Helpers --------------------------------------------------------------------------------------------


def _agent_live(raw: dict[str, str]) -> AgentLive:
    def when(field: str) -> datetime | None:
        return ms_to_datetime(int(raw[field])) if raw.get(field) else None

    return AgentLive(
        state=raw.get("state", "offline"),
        presence=raw.get("presence", "offline"),
        reason=raw.get("reason") or None,
        since=when("since"),
        load={ch: int(raw.get(f"load:{ch}", "0")) for ch in CHANNELS if int(raw.get(f"cap:{ch}", "0")) > 0},
        offer=raw.get("offer") or None,
        wrapup_until=when("wrapup_until"),
    )


async def _queue_live(engine: RoutingEngine, queue_id: str) -> QueueLive:
    waiting = await engine.state.waiting(queue_id)
    longest = None
    if waiting:
        enqueued = [int((await engine.state.interaction(i)).get("enqueued_at", "0") or 0) for i, _ in waiting]
        longest = max(0.0, (engine.clock() - min(enqueued)) / 1000)
    return QueueLive(
        waiting=len(waiting),
        longest_wait_s=longest,
        available_agents={ch: len(await engine.state.available(queue_id, ch)) for ch in CHANNELS},
    )


async def _scope(request: web.Request) -> Scope:
    return await scope_of(request.app[POOL], principal(request))


async def _refused(request: web.Request, scope: Scope, kind: str, target: str, what: str, field: str) -> ApiError:
    """403 for reading something outside the asker's scope, audited."""
    pool, who = request.app[POOL], principal(request)
    read = {"agent_id": "agent", "queue_id": "queue", "interaction_id": "routing"}[field]
    return await refuse(
        pool,
        who,
        scope,
        action="read",
        target_kind=kind,
        target_id=target,
        what=what,
        field=field,
        detail={"read": read},
    )


OUTSIDE = "outside your teams (a supervisor reads their teams' agents and queues; audited)"


def _routing_error(exc: RoutingError, field: str | None) -> ApiError:
    if isinstance(exc, InUse):
        return conflict(str(exc), field)
    return bad_request(str(exc), field)


# Queues ---------------------------------------------------------------------------------------------


@ROUTES.route(
    "GET",
    "/api/routing/queues",
    summary="Queues with their live state (a supervisor's: the queues their teams' agents serve)",
    tag="routing",
    roles=STAFF,
    ok={200: RoutingQueueList},
)
async def list_routing_queues(request: web.Request) -> RoutingQueueList:
    engine, scope = _engine(request), await _scope(request)
    queues = [q for q in await engine.store.queues() if scope.has_queue(q.id)]
    return RoutingQueueList(queues=[RoutingQueueOut(queue=q, live=await _queue_live(engine, q.id)) for q in queues])


@ROUTES.route(
    "GET",
    "/api/routing/queues/{queue_id}",
    summary="A queue, its live state and its service level over a period",
    tag="routing",
    roles=STAFF,
    ok={200: RoutingQueueOut},
    errors={403: OUTSIDE, 404: "no such queue"},
)
async def get_routing_queue(request: web.Request, path: RoutingQueuePath, query: ServiceLevelQuery) -> RoutingQueueOut:
    engine = _engine(request)
    queue = await engine.store.queue(path.queue_id)
    if queue is None:
        raise not_found(f"no queue {path.queue_id!r}", "queue_id")
    scope = await _scope(request)
    if not scope.has_queue(queue.id):
        raise await _refused(request, scope, "queue", queue.id, f"queue {queue.id}", "queue_id")
    since = datetime.now(UTC) - timedelta(hours=query.hours)
    answered, in_target, abandoned = await engine.store.service_level(queue.id, since, queue.sla.within_s)
    measured = answered + abandoned
    level = ServiceLevel(
        since=since,
        answered=answered,
        answered_in_target=in_target,
        abandoned=abandoned,
        percent=round(100 * in_target / measured, 2) if measured else None,
        target_percent=queue.sla.percent,
        within_s=queue.sla.within_s,
    )
    return RoutingQueueOut(queue=queue, live=await _queue_live(engine, queue.id), service_level=level)


@ROUTES.route(
    "PUT",
    "/api/routing/queues/{queue_id}",
    summary="Create or replace a queue",
    tag="routing",
    roles=ADMIN,
    ok={200: RoutingQueueOut, 201: RoutingQueueOut},
    errors={400: "the queue is not valid (field named)"},
)
async def put_routing_queue(request: web.Request, path: RoutingQueuePath, body: Queue) -> Reply:
    """Interactions already waiting keep the requirement and escalation steps they were queued with."""
    if body.id != path.queue_id:
        raise bad_request(f"the body's id {body.id!r} is not the path's {path.queue_id!r}", "id")
    engine = _engine(request)
    try:
        created = await engine.put_queue(body)
    except RoutingError as exc:
        raise _routing_error(exc, "escalation") from exc
    return Reply(201 if created else 200, RoutingQueueOut(queue=body, live=await _queue_live(engine, body.id)))


@ROUTES.route(
    "DELETE",
    "/api/routing/queues/{queue_id}",
    summary="Delete a queue nobody serves, feeds or waits in",
    tag="routing",
    roles=ADMIN,
    ok={204: None},
    errors={404: "no such queue", 409: "agents serve it, a queue overflows into it, or interactions wait in it"},
)
async def delete_routing_queue(request: web.Request, path: RoutingQueuePath) -> Reply:
    try:
        deleted = await _engine(request).delete_queue(path.queue_id)
    except RoutingError as exc:
        raise _routing_error(exc, "queue_id") from exc
    if not deleted:
        raise not_found(f"no queue {path.queue_id!r}", "queue_id")
    return Reply(204)


# Agents ---------------------------------------------------------------------------------------------


@ROUTES.route(
    "GET",
    "/api/routing/agents",
    summary="Agents: skills, teams, capacity and live state (a supervisor's: the agents of their teams)",
    tag="routing",
    roles=STAFF,
    ok={200: RoutingAgentList},
)
async def list_routing_agents(request: web.Request) -> RoutingAgentList:
    engine, scope = _engine(request), await _scope(request)
    agents = [a for a in await engine.store.agents() if scope.has_agent(a.id)]
    return RoutingAgentList(
        agents=[RoutingAgentOut(agent=a, live=_agent_live(await engine.agent(a.id))) for a in agents]
    )


@ROUTES.route(
    "GET",
    "/api/routing/agents/{agent_id}",
    summary="An agent and its live state",
    tag="routing",
    roles=STAFF,
    ok={200: RoutingAgentOut},
    errors={403: OUTSIDE, 404: "no such agent"},
)
async def get_routing_agent(request: web.Request, path: RoutingAgentPath) -> RoutingAgentOut:
    engine = _engine(request)
    agent = await engine.store.agent(path.agent_id)
    if agent is None:
        raise not_found(f"no agent {path.agent_id!r}", "agent_id")
    scope = await _scope(request)
    if not scope.has_agent(agent.id):
        raise await _refused(request, scope, "agent", agent.id, f"agent {agent.id}", "agent_id")
    return RoutingAgentOut(agent=agent, live=_agent_live(await engine.agent(agent.id)))


@ROUTES.route(
    "PUT",
    "/api/routing/agents/{agent_id}",
    summary="Create or change an agent (a new one starts offline)",
    tag="routing",
    roles=ADMIN,
    ok={200: RoutingAgentOut, 201: RoutingAgentOut},
    errors={
        400: "the agent is not valid (field named), e.g. its SIP endpoint is not a phone Hilo provisions",
        409: "its SIP endpoint belongs to another agent",
        503: "the provisioned phones (dialplans/phones.yaml) cannot be read",
    },
)
async def put_routing_agent(request: web.Request, path: RoutingAgentPath, body: Agent) -> Reply:
    """The live state stays: an agent on a call keeps it while its queues or skills change. `sip_endpoint`
    must be one of the phones of dialplans/phones.yaml: it is what Asterisk dials to offer the agent a call."""
    if body.id != path.agent_id:
        raise bad_request(f"the body's id {body.id!r} is not the path's {path.agent_id!r}", "id")
    try:
        provisioned = load_phones(request.app[SETTINGS].dialplans_dir).endpoints()
    except (ConfigError, OSError) as exc:  # the file Asterisk's phones are rendered from
        raise ApiError(503, "unavailable", f"the provisioned phones cannot be read: {exc}") from exc
    if body.sip_endpoint not in provisioned:
        raise bad_request(unprovisioned(body.sip_endpoint, provisioned), "sip_endpoint")
    engine = _engine(request)
    try:
        created = await engine.put_agent(body)
    except RoutingError as exc:
        raise _routing_error(exc, "sip_endpoint" if isinstance(exc, InUse) else "queues") from exc
    live = _agent_live(await engine.agent(body.id))
    return Reply(201 if created else 200, RoutingAgentOut(agent=body, live=live))


@ROUTES.route(
    "DELETE",
    "/api/routing/agents/{agent_id}",
    summary="Delete an agent that never took an interaction",
    tag="routing",
    roles=ADMIN,
    ok={204: None},
    errors={404: "no such agent", 409: "on an interaction now, or has interactions on record"},
)
async def delete_routing_agent(request: web.Request, path: RoutingAgentPath) -> Reply:
    try:
        deleted = await _engine(request).delete_agent(path.agent_id)
    except RoutingError as exc:
        raise _routing_error(exc, "agent_id") from exc
    if not deleted:
        raise not_found(f"no agent {path.agent_id!r}", "agent_id")
    return Reply(204)


@ROUTES.route(
    "GET",
    "/api/routing/agents/{agent_id}/history",
    summary="An agent's states, with time stamps, newest first",
    tag="routing",
    roles=STAFF,
    ok={200: AgentHistoryOut},
    errors={403: OUTSIDE, 404: "no such agent"},
)
async def routing_agent_history(
    request: web.Request, path: RoutingAgentPath, query: AgentHistoryQuery
) -> AgentHistoryOut:
    engine = _engine(request)
    if await engine.store.agent(path.agent_id) is None:
        raise not_found(f"no agent {path.agent_id!r}", "agent_id")
    scope = await _scope(request)
    if not scope.has_agent(path.agent_id):
        raise await _refused(request, scope, "agent", path.agent_id, f"agent {path.agent_id}", "agent_id")
    rows = await engine.store.history(path.agent_id, query.limit)
    return AgentHistoryOut(agent_id=path.agent_id, states=[AgentStateOut(**r) for r in rows])


# Interactions ---------------------------------------------------------------------------------------


@ROUTES.route(
    "GET",
    "/api/routing/interactions/{interaction_id}",
    summary="What routing did with an interaction: queues, escalations, offers and their outcomes",
    tag="routing",
    roles=STAFF,
    ok={200: RoutingInteractionOut},
    errors={
        403: "offered to or taken by no agent of your teams, nor queued in their queues (audited)",
        404: "routing never had this interaction",
    },
)
async def get_routing_interaction(request: web.Request, path: RoutingInteractionPath) -> RoutingInteractionOut:
    iid = str(path.interaction_id)
    found = await _engine(request).store.interaction(iid)
    if found is None:
        raise not_found(f"routing never had interaction {path.interaction_id}", "interaction_id")
    row, offers = found
    scope = await _scope(request)
    if not scope.has_work([row["agent_id"], *(o["agent_id"] for o in offers)], [row["queue"], *row["queues"]]):
        raise await _refused(request, scope, "interaction", iid, "this interaction", "interaction_id")
    data: dict[str, Any] = {k: v for k, v in row.items() if k in RoutingInteractionOut.model_fields}
    return RoutingInteractionOut(**data, offers=[OfferOut(**o) for o in offers])
