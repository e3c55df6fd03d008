"""Acting on live work over the API: an agent (or a supervisor) puts a call on hold and back; a supervisor
listens to, whispers into or barges into a call from their phone, and moves a waiting interaction to another
queue or agent. Each is limited to the asker's scope (routing/scope.py): an agent acts on their own calls, a
supervisor on those of their teams' agents and what waits in their teams' queues, an admin on all. Every
attempt is audited (hilo/actions.py), done or refused, out of scope too.

Calls are acted on by the Hilo node handling them (ivr/live_calls.py): a request reaching another node gets
409 `not_here`, except hold and unhold among the workers of one machine (`hilo serve --workers N`), which the
worker owning the call carries out (ivr/call_owners.py).
Declared on this module's route table, served in the one API (hilo.web.api)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field, model_validator

from asterisk.ari import AriError
from crm_bridge.timeline import TIMELINE, Interaction
from hilo.actions import audit, recent
from hilo.audit import FORM_DESCRIPTION, actor
from hilo.web.auth import EVERYONE, STAFF, principal
from hilo.web.keys import POOL
from hilo.web.openapi import ApiError, Input, Reply, Routes, conflict, not_found
from ivr.call_owners import CallOwners, OwnerFailed
from ivr.inbound import CALLS, InboundCalls
from ivr.live_calls import LiveCalls, NotLive
from ivr.supervision import PHONE, Mode, Supervision, SupervisionError
from routing.engine import ROUTING, NotQueued
from routing.model import RoutingError
from routing.scope import Scope, refuse, scope_of

ROUTES = Routes()


def calls_here(request: web.Request) -> InboundCalls:
    """The calls this node handles (a call is acted on by the node handling it); 503 when it takes none."""
    calls = request.app.get(CALLS)
    if calls is None:
        raise ApiError(503, "unavailable", "calls are not handled by this server")
    return calls


async def _audit(request: web.Request, action: str, kind: str, target: str, ok: bool, **detail: Any) -> None:
    pool = request.app[POOL]
    await audit(pool, principal(request), action, kind, target, ok=ok, detail=detail)


async def asker_scope(request: web.Request) -> Scope:
    """Whose work the one asking may act on (routing/scope.py), read now."""
    return await scope_of(request.app[POOL], principal(request))


async def refused(
    request: web.Request, scope: Scope, action: str, kind: str, target: str, what: str, field: str, /, **detail: Any
) -> ApiError:
    """The 403 for `what` out of the asker's scope, audited (ok false, with the reason)."""
    return await refuse(
        request.app[POOL],
        principal(request),
        scope,
        action=action,
        target_kind=kind,
        target_id=target,
        what=what,
        field=field,
        detail=detail,
    )


def live_agent(calls: InboundCalls, interaction_id: str) -> str | None:
    """The agent on a call handled here; None when it is not (over, or on another node)."""
    try:
        return calls.live.get(interaction_id).agent_id
    except NotLive:
        return None


OUT_OF_SCOPE = "outside your scope: an agent acts on their own calls, a supervisor on their teams' agents' (audited)"


class InteractionPath(Input):
    interaction_id: uuid.UUID


class HoldOut(BaseModel):
    interaction_id: uuid.UUID
    held: bool = Field(description="whether the caller is on hold now")
    changed: bool = Field(description="false: it already was so (nothing changed)")


async def _hold(request: web.Request, path: InteractionPath, hold: bool) -> HoldOut:
    calls, who, iid = calls_here(request), principal(request), str(path.interaction_id)
    action = "hold" if hold else "unhold"
    acting: LiveCalls | CallOwners = calls.live
    try:
        agent = calls.live.get(iid).agent_id
    except NotLive as here:
        try:
            if calls.owners is None:
                raise
            agent, acting = await calls.owners.agent(iid), calls.owners  # another worker owns the call
        except NotLive as exc:  # here, or on no worker (the owners' answer says which)
            await _audit(request, action, "interaction", iid, False, reason="not_here")
            raise conflict(str(exc), "interaction_id") from here
    scope = await asker_scope(request)
    if not scope.has_agent(agent):
        raise await refused(request, scope, action, "interaction", iid, "this call", "interaction_id", agent=agent)
    try:
        changed = await (acting.hold if hold else acting.unhold)(iid, actor(who))
    except (NotLive, AriError, OwnerFailed) as exc:
        await _audit(request, action, "interaction", iid, False, reason=str(exc)[:300])
        raise conflict(f"the call could not be changed: {exc}", "interaction_id") from exc
    await _audit(request, action, "interaction", iid, True, agent=agent, changed=changed)
    return HoldOut(interaction_id=path.interaction_id, held=hold, changed=changed)


@ROUTES.route(
    "POST",
    "/api/calls/{interaction_id}/hold",
    summary="Put the caller on hold (music); the agent stays on the line",
    tag="calls",
    roles=EVERYONE,
    ok={200: HoldOut},
    errors={403: OUT_OF_SCOPE, 409: "no such call with an agent on this server now"},
)
async def hold_call(request: web.Request, path: InteractionPath) -> HoldOut:
    """`call.held` on the timeline (hold time in the KPIs); holding a held call changes nothing."""
    return await _hold(request, path, True)


@ROUTES.route(
    "POST",
    "/api/calls/{interaction_id}/unhold",
    summary="Take the caller off hold, back to the agent",
    tag="calls",
    roles=EVERYONE,
    ok={200: HoldOut},
    errors={403: OUT_OF_SCOPE, 409: "no such call with an agent on this server now"},
)
async def unhold_call(request: web.Request, path: InteractionPath) -> HoldOut:
    """`call.unheld` on the timeline."""
    return await _hold(request, path, False)


# Supervision ----------------------------------------------------------------------------------------


class SupervisionIn(Input):
    mode: Literal["listen", "whisper", "barge"] = Field(
        description="listen: hear both, say nothing; whisper: the agent hears you, the caller does not;"
        " barge: all three talk"
    )
    phone: str = Field(
        pattern=PHONE.pattern,
        description="the supervisor's phone Hilo rings: PJSIP/<endpoint>, or a simulated one,"
        " Local/<extension>@hilo-phone-sim",
    )


class ModeIn(Input):
    mode: Literal["listen", "whisper", "barge"]


class SupervisionPath(Input):
    supervision_id: uuid.UUID


class SupervisionOut(BaseModel):
    id: uuid.UUID
    interaction_id: uuid.UUID
    supervisor: str
    phone: str
    mode: str
    active: bool


class SupervisionList(BaseModel):
    supervisions: list[SupervisionOut]


def _out(sup: Supervision) -> SupervisionOut:
    return SupervisionOut.model_validate(sup.as_dict())


@ROUTES.route(
    "POST",
    "/api/calls/{interaction_id}/supervision",
    summary="Listen to, whisper into or barge into a call from the supervisor's phone",
    tag="calls",
    roles=STAFF,
    ok={201: SupervisionOut},
    errors={
        403: "the call's agent is outside your teams (audited)",
        409: "no such call with an agent on this server now",
        502: "the phone did not answer",
    },
)
async def start_supervision(request: web.Request, path: InteractionPath, body: SupervisionIn) -> Reply:
    """Hilo rings `phone`; once answered it is connected in `mode` (answered when it is). It ends when the
    supervisor hangs up, DELETEs it, or the call ends. Only on a call of an agent of your teams."""
    calls, who, iid = calls_here(request), principal(request), str(path.interaction_id)
    mode: Mode = body.mode
    try:
        agent = calls.live.get(iid).agent_id
        scope = await asker_scope(request)
        if not scope.has_agent(agent):
            raise await refused(
                request, scope, mode, "interaction", iid, "this call", "interaction_id", agent=agent, phone=body.phone
            )
        sup = await calls.supervisions.start(iid, mode, body.phone, actor(who))
    except NotLive as exc:
        await _audit(request, mode, "interaction", iid, False, phone=body.phone, reason="not_here")
        raise conflict(str(exc), "interaction_id") from exc
    except SupervisionError as exc:
        await _audit(request, mode, "interaction", iid, False, phone=body.phone, reason=str(exc)[:300])
        raise ApiError(502, "phone", str(exc), "phone") from exc
    await _audit(request, mode, "interaction", iid, True, phone=body.phone, supervision=sup.id)
    return Reply(201, _out(sup))


@ROUTES.route(
    "GET",
    "/api/supervisions",
    summary="Supervisions in progress on this server (a supervisor's: on their teams' calls)",
    tag="calls",
    roles=STAFF,
    ok={200: SupervisionList},
)
async def list_supervisions(request: web.Request) -> SupervisionList:
    calls, scope = calls_here(request), await asker_scope(request)
    active = [s for s in calls.supervisions.active.values() if not s.ended.is_set()]
    return SupervisionList(
        supervisions=[_out(s) for s in active if scope.has_agent(live_agent(calls, s.interaction_id))]
    )


async def _supervision(request: web.Request, action: str, sid: str) -> Supervision:
    """A supervision in progress here that the asker may act on: 404 (audited) if there is none, 403 (audited)
    if its call's agent is outside their scope."""
    calls = calls_here(request)
    try:
        sup = calls.supervisions.get(sid)
    except LookupError as exc:
        await _audit(request, action, "supervision", sid, False, reason="unknown: none in progress on this server")
        raise not_found(str(exc), "supervision_id") from exc
    agent = live_agent(calls, sup.interaction_id)
    scope = await asker_scope(request)
    if agent is not None and not scope.has_agent(agent):
        raise await refused(
            request,
            scope,
            action,
            "supervision",
            sid,
            "this supervision's call",
            "supervision_id",
            agent=agent,
            interaction=sup.interaction_id,
        )
    return sup


@ROUTES.route(
    "PATCH",
    "/api/supervisions/{supervision_id}",
    summary="Change a supervision's mode (listen, whisper, barge); the phone stays connected",
    tag="calls",
    roles=STAFF,
    ok={200: SupervisionOut},
    errors={
        403: "its call's agent is outside your teams (audited)",
        404: "no such supervision in progress here (audited)",
        409: "the call is over",
    },
)
async def change_supervision(request: web.Request, path: SupervisionPath, body: ModeIn) -> SupervisionOut:
    calls, sid = calls_here(request), str(path.supervision_id)
    mode: Mode = body.mode
    await _supervision(request, mode, sid)
    try:
        sup = await calls.supervisions.change(sid, mode)
    except NotLive as exc:
        await _audit(request, mode, "supervision", sid, False, reason="call over")
        raise conflict(str(exc), "supervision_id") from exc
    except LookupError as exc:  # it ended meanwhile
        await _audit(request, mode, "supervision", sid, False, reason="unknown: none in progress on this server")
        raise not_found(str(exc), "supervision_id") from exc
    except (SupervisionError, AriError) as exc:
        await _audit(request, mode, "supervision", sid, False, reason=str(exc)[:300])
        raise conflict(f"the mode could not be changed: {exc}", "mode") from exc
    await _audit(request, mode, "supervision", sid, True, interaction=sup.interaction_id)
    return _out(sup)


@ROUTES.route(
    "DELETE",
    "/api/supervisions/{supervision_id}",
    summary="End a supervision (the supervisor's phone is hung up)",
    tag="calls",
    roles=STAFF,
    ok={200: SupervisionOut},
    errors={
        403: "its call's agent is outside your teams (audited)",
        404: "no such supervision in progress here (audited)",
    },
)
async def end_supervision(request: web.Request, path: SupervisionPath) -> SupervisionOut:
    sid = str(path.supervision_id)
    await _supervision(request, "supervision-end", sid)
    try:
        sup = await calls_here(request).supervisions.end(sid)
    except LookupError as exc:  # it ended meanwhile
        await _audit(request, "supervision-end", "supervision", sid, False, reason="unknown: already ended")
        raise not_found(str(exc), "supervision_id") from exc
    await _audit(request, "supervision-end", "supervision", sid, True, interaction=sup.interaction_id)
    return _out(sup)


# Moving a waiting interaction ------------------------------------------------------------------------


class MoveIn(Input):
    queue: str | None = Field(default=None, min_length=1, max_length=64, description="the queue it waits in next")
    agent: str | None = Field(default=None, min_length=1, max_length=64, description="the agent it is offered to")

    @model_validator(mode="after")
    def one_target(self) -> MoveIn:
        if (self.queue is None) == (self.agent is None):
            raise ValueError("give either queue or agent")
        return self


class MoveOut(BaseModel):
    interaction_id: uuid.UUID
    status: str = Field(description="waiting (in the new queue) or offered (an agent's phone rings)")
    queue: str | None = None
    agent: str | None = None


@ROUTES.route(
    "POST",
    "/api/routing/interactions/{interaction_id}/move",
    summary="Move a waiting interaction to another queue (keeping its place in time) or to an agent",
    tag="routing",
    roles=STAFF,
    ok={200: MoveOut},
    errors={
        403: "it waits in a queue outside your teams, or the target queue or agent is (audited)",
        404: "routing holds no such interaction",
        409: "not waiting (offered, talking, ended), or the agent cannot take it now",
    },
)
async def move_interaction(request: web.Request, path: InteractionPath, body: MoveIn) -> MoveOut:
    """One atomic routing decision (routing/decide.lua `move`); `routing.moved` on the timeline. A supervisor
    moves what waits in their teams' queues, to their teams' queues or agents."""
    iid = str(path.interaction_id)
    engine, timeline, pool = request.app.get(ROUTING), request.app.get(TIMELINE), request.app[POOL]
    if engine is None or timeline is None:
        raise ApiError(503, "unavailable", "routing is not running on this server")
    target = {"queue": body.queue} if body.queue is not None else {"agent": body.agent}
    row = await pool.fetchrow(
        "SELECT customer_id, channel, context FROM interactions WHERE id = $1", path.interaction_id
    )
    if row is None:
        raise not_found(f"no interaction {iid}", "interaction_id")
    scope = await asker_scope(request)
    if not scope.everything:
        live = await engine.state.interaction(iid)  # empty when routing does not hold it: the move says so (409)
        if live and not scope.has_work(live.get("agent"), live.get("queue")):
            what = f"this interaction (in queue {live.get('queue')})"
            raise await refused(request, scope, "move", "interaction", iid, what, "interaction_id", **target)
        if body.agent is not None and not scope.has_agent(body.agent):
            raise await refused(request, scope, "move", "interaction", iid, f"agent {body.agent}", "agent", **target)
        if body.queue is not None and not scope.has_queue(body.queue):
            raise await refused(request, scope, "move", "interaction", iid, f"queue {body.queue}", "queue", **target)
    try:
        result = await engine.move(iid, queue=body.queue, agent=body.agent)
    except RoutingError as exc:
        await _audit(request, "move", "interaction", iid, False, reason=str(exc)[:300], **target)
        field = "interaction_id" if isinstance(exc, NotQueued) else ("queue" if body.queue else "agent")
        raise conflict(str(exc), field) from exc
    offer = result.get("offer")
    agent = offer.get("agent") if isinstance(offer, dict) else None
    await _audit(request, "move", "interaction", iid, True, status=result.get("status"), **target)
    interaction = Interaction(path.interaction_id, row["customer_id"], row["channel"], dict(row["context"] or {}))
    moved = {**target, "from": result.get("from"), "by": actor(principal(request))}
    await timeline.record(interaction, "routing.moved", {k: v for k, v in moved.items() if v is not None})
    return MoveOut(interaction_id=path.interaction_id, status=str(result.get("status")), queue=body.queue, agent=agent)


# The audit --------------------------------------------------------------------------------------------


class AuditQuery(Input):
    limit: int = Field(default=100, ge=1, le=1000)
    target: str | None = Field(default=None, max_length=100, description="only actions on this target id")
    before: datetime | None = Field(default=None, description="page back: actions before this time")


class AuditEntry(BaseModel):
    id: int
    at: str = Field(json_schema_extra={"format": "date-time"})
    actor: str = Field(description=FORM_DESCRIPTION)
    actor_role: str
    action: str
    target_kind: str
    target_id: str
    ok: bool
    detail: dict[str, Any]


class AuditList(BaseModel):
    actions: list[AuditEntry] = Field(description="newest first")


@ROUTES.route(
    "GET",
    "/api/audit/supervisor-actions",
    summary="Who did what to live work, when: supervision, hold, moves, transfers, agent states, refusals",
    tag="calls",
    roles=STAFF,
    ok={200: AuditList},
)
async def supervisor_actions(request: web.Request, query: AuditQuery) -> AuditList:
    rows = await recent(request.app[POOL], limit=query.limit, target_id=query.target, before=query.before)
    return AuditList(actions=[AuditEntry.model_validate(r) for r in rows])
