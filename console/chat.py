"""The console's chat pane over HTTP: an agent's text conversations (SMS, WhatsApp, web chat) beside calls.

An agent sees and acts on the conversations routing offered to them or that they took; a supervisor on
those of their teams' agents (and, with no agent yet, those waiting in their teams' queues); an admin on any
(routing/scope.py); anything else is refused with 403, audited (hilo/actions.py). Taking a conversation
(`accept`) silences the flow; `reply` goes through the outbox; `handback` returns the conversation to the
flow; `close` ends it (then the wrap-up, as for a call). A WhatsApp conversation says whether the 24-hour
customer-service window is open and when it closes; a reply outside it is refused with the reason. Errors
are `{"error", "field", "reason"}`."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web

from bridges.conversation_store import Conversation, ConversationError
from bridges.conversations import CONVERSATIONS, Conversations
from bridges.messages import OutsideWindow
from bridges.outbox import window_state
from console.screenpop import offered_to
from hilo.actions import audit
from hilo.audit import actor
from hilo.web.auth import EVERYONE, principal, requires
from hilo.web.keys import POOL
from hilo.web.openapi import error_response
from hilo.web.sessions import Principal
from routing.scope import Scope, refuse, scope_of


def _conversations(request: web.Request) -> Conversations:
    found = request.app.get(CONVERSATIONS)
    if found is None:
        raise web.HTTPServiceUnavailable(text="conversations are not running")
    return found


def _acting_agent(who: Principal) -> str | None:
    """The agent the action is limited to: the agent's own id; None for supervisors and admins (any)."""
    return (who.agent_id or "") if who.role == "agent" else None


def _interaction_id(request: web.Request) -> uuid.UUID | None:
    try:
        return uuid.UUID(request.match_info["interaction_id"])
    except ValueError:
        return None


async def window(pool: asyncpg.Pool, conversation: Conversation) -> dict[str, Any] | None:
    """WhatsApp's customer-service window for this conversation (None on other channels)."""
    if conversation.channel != "whatsapp":
        return None
    state = await window_state(pool, conversation.address, business=conversation.our_address)
    return {"open": state.open, "closes_at": state.closes_at.isoformat() if state.closes_at else None}


async def _deliveries(pool: asyncpg.Pool, thread: list[dict[str, Any]]) -> None:
    """Each reply's delivery state from the outbox (queued, sent, delivered, read, failed with the reason)."""
    ids = [e["data"].get("outbox_id") for e in thread if e["type"] == "message.sent"]
    ids = [i for i in ids if isinstance(i, int) and i > 0]
    if not ids:
        return
    rows = await pool.fetch(
        "SELECT id, state, error_code, last_error FROM outbound_messages WHERE id = ANY($1::bigint[])", ids
    )
    states = {r["id"]: r for r in rows}
    for event in thread:
        row = states.get(event["data"].get("outbox_id"))
        if row is not None:
            event["delivery"] = {"state": row["state"], "error_code": row["error_code"], "reason": row["last_error"]}


async def _audit_refusal(
    request: web.Request, action: str, interaction_id: uuid.UUID, reason: str, **detail: Any
) -> None:
    """An agent's refusal (not offered to them, not theirs), audited as every refusal."""
    who, iid = principal(request), str(interaction_id)
    await audit(request.app[POOL], who, action, "interaction", iid, ok=False, detail={"reason": reason, **detail})


def _in_scope(scope: Scope, conversation: Conversation) -> bool:
    return scope.has_work(conversation.agent_id, conversation.queue)


async def _refused(
    request: web.Request, scope: Scope, action: str, interaction_id: uuid.UUID, conversation: Conversation
) -> web.Response:
    """403 for a conversation out of the asker's scope, audited."""
    refusal = await refuse(
        request.app[POOL],
        principal(request),
        scope,
        action=action,
        target_kind="interaction",
        target_id=str(interaction_id),
        what="this conversation",
        field="interaction_id",
        detail={
            **({"read": "chat"} if action == "read" else {}),
            "agent": conversation.agent_id,
            "queue": conversation.queue,
        },
    )
    return refusal.response()


async def _summary(request: web.Request, conversation: Conversation) -> dict[str, Any]:
    pool = request.app[POOL]
    name = await pool.fetchval("SELECT display_name FROM customers WHERE id = $1", conversation.customer_id)
    return {**conversation.as_json(), "customer_name": name, "window": await window(pool, conversation)}


@requires(*EVERYONE)
async def list_chats(request: web.Request) -> web.Response:
    who = principal(request)
    scope = await scope_of(request.app[POOL], who)
    chats = [c for c in await _conversations(request).for_agent(_acting_agent(who)) if _in_scope(scope, c)]
    return web.json_response({"chats": [await _summary(request, c) for c in chats]})


@requires(*EVERYONE)
async def read_chat(request: web.Request) -> web.Response:
    who = principal(request)
    interaction_id = _interaction_id(request)
    if interaction_id is None:
        return error_response(400, "bad_request", "interaction id must be a UUID", "interaction_id")
    conversations = _conversations(request)
    conversation = await conversations.get(interaction_id)
    if conversation is None:
        return error_response(404, "not_found", "no conversation for this interaction")
    pool = request.app[POOL]
    # An agent reads an interaction's thread if it was offered to them, or it is the conversation's current
    # interaction and theirs. Not by the conversation alone: after a hand-back the same conversation goes on
    # in a new interaction, maybe with another agent, who was never offered the earlier one.
    if who.role == "agent" and not (
        who.agent_id
        and (
            (conversation.interaction_id == interaction_id and conversation.agent_id == who.agent_id)
            or await offered_to(pool, interaction_id, who.agent_id)
        )
    ):
        reason = "this conversation was not offered to you"
        await _audit_refusal(request, "read", interaction_id, reason, read="chat")
        return error_response(403, "forbidden", reason)
    if who.role != "agent":
        scope = await scope_of(pool, who)
        if not _in_scope(scope, conversation):
            return await _refused(request, scope, "read", interaction_id, conversation)
    thread = await conversations.thread(interaction_id)
    await _deliveries(pool, thread)
    return web.json_response({**await _summary(request, conversation), "thread": thread})


async def _text(request: web.Request) -> str | web.Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str):
        return error_response(400, "bad_request", 'body must be JSON like {"text": "..."}', "text")
    return text


def _act(action: str) -> Any:
    @requires(*EVERYONE)
    async def handler(request: web.Request) -> web.Response:
        who = principal(request)
        interaction_id = _interaction_id(request)
        if interaction_id is None:
            return error_response(400, "bad_request", "interaction id must be a UUID", "interaction_id")
        conversations = _conversations(request)
        agent = _acting_agent(who)
        by = actor(who)
        if action != "accept" and who.role != "agent":  # an agent's own are checked by the conversation itself
            scope = await scope_of(request.app[POOL], who)
            conversation = await conversations.get(interaction_id)
            if conversation is not None and not _in_scope(scope, conversation):
                return await _refused(request, scope, f"chat-{action}", interaction_id, conversation)
        try:
            if action == "accept":
                if not who.agent_id:
                    reason = "only an agent takes a conversation (this user has no agent id)"
                    await _audit_refusal(request, "chat-accept", interaction_id, reason)
                    return error_response(403, "forbidden", reason)
                done: Any = await conversations.accept(interaction_id, who.agent_id)
            elif action == "reply":
                text = await _text(request)
                if isinstance(text, web.Response):
                    return text
                event = await conversations.reply(interaction_id, agent, text, by=by)
                return web.json_response({"sent": event}, status=201)
            elif action == "handback":
                done = await conversations.hand_back(interaction_id, agent, by=by)
            else:
                done = await conversations.close_conversation(interaction_id, agent, by=by)
        except ConversationError as exc:
            if exc.status == 403:  # not theirs: audited as every refusal
                await _audit_refusal(request, f"chat-{action}", interaction_id, exc.reason)
            kind = {400: "bad_request", 403: "forbidden", 404: "not_found"}.get(exc.status, "conflict")
            return error_response(exc.status, kind, exc.reason, exc.field)
        except OutsideWindow as exc:
            body = {
                "error": "outside_window",
                "reason": str(exc),
                "closes_at": exc.closed_at.isoformat() if exc.closed_at else None,
            }
            return web.json_response(body, status=409)
        return web.json_response(done.as_json())

    handler.__name__ = f"chat_{action}"
    return handler


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/api/chats", list_chats)
    app.router.add_get("/console/api/chats/{interaction_id}", read_chat)
    for action in ("accept", "reply", "handback", "close"):
        app.router.add_post(f"/console/api/chats/{{interaction_id}}/{action}", _act(action))
