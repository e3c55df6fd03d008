"""Agents transferring their calls over the API (the console's transfer buttons): blind to a queue or an
agent, or attended to an agent (consult, then complete or cancel). The work is ivr/transfers.py; calls are
acted on by the Hilo node handling them, so a request reaching another node gets 409. Declared on this
module's route table, served in the one API (hilo.web.api)."""

from __future__ import annotations

import uuid
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field, model_validator

from console.call_control import calls_here
from hilo.web.auth import EVERYONE, principal
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


def _agent_filter(request: web.Request) -> str | None:
    """Agents act on their own calls only; supervisors and admins on any."""
    who = principal(request)
    if who.role != "agent":
        return None
    if not who.agent_id:
        raise ApiError(403, "forbidden", "this user is not linked to an agent")
    return who.agent_id


def _refused(exc: TransferError) -> ApiError:
    if exc.status == 403:
        return ApiError(403, "forbidden", str(exc), exc.field)
    if exc.status == 502:
        return ApiError(502, "no_answer", str(exc), exc.field)
    if exc.status == 400:
        return ApiError(400, "bad_request", str(exc), exc.field)
    return conflict(str(exc), exc.field)


@ROUTES.route(
    "POST",
    "/api/calls/{interaction_id}/transfer",
    summary="Transfer a call: blind to a queue or an agent, or attended (consult an agent first)",
    tag="calls",
    roles=EVERYONE,
    ok={200: TransferOut},
    errors={
        403: "an agent transfers only their own calls",
        409: "no such call with an agent on this server, or the target cannot take it now",
        502: "attended: the target agent did not answer (the caller is back with you)",
    },
)
async def transfer(request: web.Request, path: TransferPath, body: TransferIn) -> TransferOut:
    """`routing.transferred` {kind, from_agent, to_agent|to_queue} on the timeline once the caller is handed
    on (attended: at `complete`). What the IVR collected, verification and your note go with the caller."""
    calls, iid, by = calls_here(request), str(path.interaction_id), _agent_filter(request)
    try:
        if body.kind == "blind":
            await calls.transfers.blind(iid, by, to_queue=body.to_queue, to_agent=body.to_agent, note=body.note)
            state: Literal["transferred", "consulting"] = "transferred"
        else:
            assert body.to_agent is not None
            await calls.transfers.consult(iid, by, body.to_agent, body.note)
            state = "consulting"
    except NotLive as exc:
        raise conflict(str(exc), "interaction_id") from exc
    except TransferError as exc:
        raise _refused(exc) from exc
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
    errors={403: "an agent transfers only their own calls", 409: "no consultation in progress for this call"},
)
async def complete_transfer(request: web.Request, path: TransferPath) -> TransferOut:
    return await _end_consultation(request, path, "completed")


@ROUTES.route(
    "POST",
    "/api/calls/{interaction_id}/transfer/cancel",
    summary="Attended transfer: end the consultation and take the caller back",
    tag="calls",
    roles=EVERYONE,
    ok={200: TransferOut},
    errors={403: "an agent transfers only their own calls", 409: "no consultation in progress for this call"},
)
async def cancel_transfer(request: web.Request, path: TransferPath) -> TransferOut:
    return await _end_consultation(request, path, "cancelled")


async def _end_consultation(
    request: web.Request, path: TransferPath, state: Literal["completed", "cancelled"]
) -> TransferOut:
    calls, iid = calls_here(request), str(path.interaction_id)
    end = calls.transfers.complete if state == "completed" else calls.transfers.cancel
    try:
        consult = calls.transfers.consults.get(iid)
        await end(iid, _agent_filter(request))
    except TransferError as exc:
        raise _refused(exc) from exc
    return TransferOut(
        interaction_id=path.interaction_id,
        kind="attended",
        state=state,
        to_agent=consult.to_agent if consult else None,
    )
