"""The stored side of text conversations (migration 012): the conversation row, its interactions, the
timeline facts and replies written inside the caller's transaction (bridges/conversations.py publishes
and hands them over after the commit)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from bridges.conversation_flow import Reply
from bridges.messages import Channel, Choice, OutboundMessage, Provider
from crm_bridge import identity, timeline
from crm_bridge.timeline import Interaction

if TYPE_CHECKING:
    from hilo.db import Conn


@dataclass(frozen=True)
class Conversation:
    id: uuid.UUID
    interaction_id: uuid.UUID
    customer_id: uuid.UUID
    channel: Channel
    provider: Provider
    address: str
    our_address: str
    flow: str | None
    state: str
    queue: str | None
    priority: int
    agent_id: str | None
    run: int
    inputs: list[str | None]
    journal: list[dict[str, Any]]
    outputs: int
    offered_at: dt.datetime | None
    queued_at: dt.datetime | None
    last_message_at: dt.datetime
    closed_at: dt.datetime | None

    @classmethod
    def of(cls, row: asyncpg.Record) -> Conversation:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    def interaction(self, context: dict[str, Any] | None = None) -> Interaction:
        return Interaction(self.interaction_id, self.customer_id, self.channel, dict(context or {}))

    def as_json(self) -> dict[str, Any]:
        return {
            "conversation_id": str(self.id),
            "interaction_id": str(self.interaction_id),
            "customer_id": str(self.customer_id),
            "channel": self.channel,
            "state": self.state,
            "queue": self.queue,
            "agent_id": self.agent_id,
            "flow": self.flow,
            "last_message_at": self.last_message_at.isoformat(),
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
        }


class ConversationError(Exception):
    """An agent action that cannot be done (wrong state, not theirs): `status` is the HTTP answer."""

    def __init__(self, status: int, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.field = field


# -- small helpers ----------------------------------------------------------------------------------


def phone_of(conversation: Conversation) -> str | None:
    raw = conversation.address.removeprefix("whatsapp:")
    try:
        return identity.normalize("whatsapp" if conversation.channel == "whatsapp" else "phone", raw)
    except identity.InvalidIdentity:
        return None


def outbound(conversation: Conversation, text: str, choices: list[Choice]) -> OutboundMessage:
    # Channels without buttons get the options as numbered lines from the provider's sender; web chat
    # shows them as buttons and as text.
    return OutboundMessage(
        channel=conversation.channel,
        provider=conversation.provider,
        sender=conversation.our_address,
        recipient=conversation.address,
        text=text,
        conversation_id=str(conversation.id),
        choices=choices,
    )


async def new_interaction(
    conn: Conn,
    conversation_id: uuid.UUID,
    customer_id: uuid.UUID,
    channel: str,
    our_address: str,
    phone: str | None,
    flow: str,
    started_at: dt.datetime | None,
) -> uuid.UUID:
    """An interaction of the conversation (its context names the conversation, for the console)."""
    context = {"caller_number": phone, "dialed": our_address, "flow": flow, "conversation_id": str(conversation_id)}
    return await timeline.open_interaction(
        conn, customer_id, channel, "inbound", dialed=our_address, context=context, started_at=started_at
    )


async def load(conn: Conn, conversation_id: uuid.UUID) -> Conversation:
    row = await conn.fetchrow("SELECT * FROM conversations WHERE id = $1", conversation_id)
    assert row is not None
    return Conversation.of(row)


async def event(
    conn: Conn, conversation: Conversation, type_: str, data: dict[str, Any], *, at: dt.datetime | None = None
) -> dict[str, Any]:
    """A timeline fact written in the caller's transaction (published by the caller after the commit), on
    the interaction's customer as it is now (a merge may have moved it since `conversation` was read)."""
    return await timeline.append(conn, conversation.interaction_id, None, conversation.channel, type_, data, at=at)


async def add_reply(conn: Conn, conversation: Conversation, reply: Reply) -> None:
    await conn.execute(
        "INSERT INTO conversation_replies (conversation_id, text, choices) VALUES ($1, $2, $3)",
        conversation.id,
        reply.text,
        [{"id": c.id, "title": c.title} for c in reply.choices],
    )
