"""Transferring calls over the API (the console's transfer buttons): blind to a queue or an agent, or
attended to an agent (consult, then complete or cancel). An agent transfers their own calls, a supervisor
those of their teams' agents, an admin any (routing/scope.py); whoever does it is named on the timeline
(`by`) and in the audit of live work (hilo/actions.py: `transfer`, `transfer-complete`, `transfer-cancel`,
done or refused). The work is ivr/transfers.py; calls are acted on by the Hilo node handling them, so a
request reaching another node gets 409. Declared on this module's route table, served in the one API
(hilo.web.api)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field, model_validator

from console.call_control import asker_scope, calls_here, refused
from hilo.actions import audit
from hilo.audit import actor
from hilo.web.auth import EVERYONE, principal
from hilo.web.keys import POOL
from hilo.web.openapi import ApiError, Input, Routes, conflict
from ivr.live_calls import NotLive
from ivr.transfers import TransferError

ROUTES = Routes()


class TransferPath(Input):
    interaction_id: uuid.UUID


class TransferIn(Input):
    kind: Literal["blind", "attended"] = Field(
        description="blind: the caller goes at once; attended: you talk with the target agent first"
    )
    to_agent: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="an agent id")
    to_queue: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="a queue id (blind only)")
    note: str | None = Field(default=None, max_length=1000, description="shown on the receiving agent's pop")

    @model_validator(mode="after")
    def one_target(self) -> TransferIn:
        if (self.to_agent is None) == (self.to_queue is None):
            raise ValueError("give exactly one of to_agent and to_queue")
        if self.kind == "attended" and self.to_agent is None:
            raise ValueError("an attended transfer goes to an agent (to_agent)")
        return self


class TransferOut(BaseModel):
    interaction_id: uuid.UUID
    kind: str
    state: Literal["transferred", "consulting", "completed", "cancelled"] = Field(
        description="blind: transferred (the caller is queued or ringing the agent); attended: consulting"
        " (you and the target talk, the caller is on hold), then completed or cancelled"
    )
    to_agent: str | None = None
    to_queue: str | None = None


async def _in_scope(request: web.Request, action: str, iid: str, **detail: Any) -> str | None:
    """The agent limit for ivr/transfers.py: the asking agent's id (held again under the call's lock), None for
    a supervisor or admin. The call must be in the asker's scope (routing/scope.py): their own, a supervisor's
    teams', any for an admin; else 403, audited. NotLive when the call is not with an agent here."""
    calls, who = calls_here(request), principal(request)
    agent = calls.live.get(iid).agent_id
    scope = await asker_scope(request)
    if not scope.has_agent(agent):
        raise await refused(
            request, scope, action, "interaction", iid, "this call", "interaction_id", agent=agent, **detail
        )
    return who.agent_id if who.role == "agent" else None


async def _audit(request: web.Request, action: str, iid: str, ok: bool, **detail: Any) -> None:
    await audit(request.app[POOL], principal(request), action, "interaction", iid, ok=ok, detail=detail)


def _refused(exc: TransferError) -> ApiError:
    if exc.status == 403:
        return ApiError(403, "forbidden", str(exc), exc.field)
    if exc.status == 502:
        return ApiError(502, "no_answer", str(exc), exc.field)
    if exc.status == 400:
        return ApiError(400, "bad_request", str(exc), exc.field)
    return conflict(str(exc), exc.field)


OUT_OF_SCOPE = "not your call: an agent transfers their own, a supervisor their teams' agents' (audited)"


@ROUTES.route(
    "POST",
    "/api/calls/{interaction_id}/transfer",
    summary="Transfer a call: blind to a queue or an agent, or attended (consult an agent first)",
    tag="calls",
    roles=EVERYONE,
    ok={200: TransferOut},
    errors={
        403: OUT_OF_SCOPE,
        409: "no such call with an agent on this server, or the target cannot take it now",
        502: "attended: the target agent did not answer (the caller is back with you)",
    },
)
async def transfer(request: web.Request, path: TransferPath, body: TransferIn) -> TransferOut:
    """`routing.transferred` {kind, from_agent, to_agent|to_queue, by} on the timeline once the caller is handed
    on (attended: at `complete`): `from_agent` the agent whose call it was, `by` who did it. What the IVR
    collected, verification and your note go with the caller. Audited, done or refused (`transfer`)."""
    calls, iid, by = calls_here(request), str(path.interaction_id), actor(principal(request))
    target = {"kind": body.kind, **({"to_queue": body.to_queue} if body.to_queue else {"to_agent": body.to_agent})}
    try:
        agent = calls.live.get(iid).agent_id
        limit = await _in_scope(request, "transfer", iid, **target)
        if body.kind == "blind":
            await calls.transfers.blind(
                iid, limit, to_queue=body.to_queue, to_agent=body.to_agent, note=body.note, by=by
            )
            state: Literal["transferred", "consulting"] = "transferred"
        else:
            assert body.to_agent is not None
            await calls.transfers.consult(iid, limit, body.to_agent, body.note, by=by)
            state = "consulting"
    except NotLive as exc:
        await _audit(request, "transfer", iid, False, reason="not_here", **target)
        raise conflict(str(exc), "interaction_id") from exc
    except TransferError as exc:
        await _audit(request, "transfer", iid, False, reason=str(exc)[:300], **target)
        raise _refused(exc) from exc
    await _audit(request, "transfer", iid, True, agent=agent, state=state, **target)
    return TransferOut(
        interaction_id=path.interaction_id, kind=body.kind, state=state, to_agent=body.to_agent, to_queue=body.to_queue
    )


@ROUTES.route(
    "POST",
    "/api/calls/{interaction_id}/transfer/complete",
    summary="Attended transfer: hand the caller to the agent you are consulting, and leave the call",
    tag="calls",
    roles=EVERYONE,
    ok={200: TransferOut},
    errors={403: OUT_OF_SCOPE, 409: "no consultation in progress for this call"},
)
async def complete_transfer(request: web.Request, path: TransferPath) -> TransferOut:
    """Audited, done or refused (`transfer-complete`)."""
    return await _end_consultation(request, path, "completed")


@ROUTES.route(
    "POST",
    "/api/calls/{interaction_id}/transfer/cancel",
    summary="Attended transfer: end the consultation and take the caller back",
    tag="calls",
    roles=EVERYONE,
    ok={200: TransferOut},
    errors={403: OUT_OF_SCOPE, 409: "no consultation in progress for this call"},
)
async def cancel_transfer(request: web.Request, path: TransferPath) -> TransferOut:
    """Audited, done or refused (`transfer-cancel`)."""
    return await _end_consultation(request, path, "cancelled")


async def _end_consultation(
    request: web.Request, path: TransferPath, state: Literal["completed", "cancelled"]
) -> TransferOut:
    calls, iid, by = calls_here(request), str(path.interaction_id), actor(principal(request))
    action = "transfer-complete" if state == "completed" else "transfer-cancel"
    end = calls.transfers.complete if state == "completed" else calls.transfers.cancel
    consult = calls.transfers.consults.get(iid)
    to_agent = consult.to_agent if consult else None
    try:
        limit = await _in_scope(request, action, iid)
        await end(iid, limit, by)
    except NotLive as exc:
        await _audit(request, action, iid, False, reason="not_here")
        raise conflict(str(exc), "interaction_id") from exc
    except TransferError as exc:
        await _audit(request, action, iid, False, reason=str(exc)[:300])
        raise _refused(exc) from exc
    agent = consult.call.agent_id if consult else None
    await _audit(request, action, iid, True, agent=agent, to_agent=to_agent)
    return TransferOut(interaction_id=path.interaction_id, kind="attended", state=state, to_agent=to_agent)
