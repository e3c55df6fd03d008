"""What every messaging bridge hands on and takes: one inbound message as stored, and the outbound request.

The provider adapters (twilio.py, whatsapp.py, webchat) store an inbound message durably (bridges/inbox.py)
before they acknowledge it, then the inbox hands each stored message, once, to the conversation layer
(an `InboundHandler`). The conversation layer answers through the outbox (an `Outbox`), which sends with
retries and per-provider rate limits and records delivery statuses."""

from __future__ import annotations

import datetime as dt
import email.utils
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from hilo.db import Conn

Channel = Literal["sms", "whatsapp", "webchat"]
Provider = Literal["twilio", "whatsapp_cloud", "webchat"]


@dataclass(frozen=True)
class InboundMessage:
    id: int  # messages.id (PostgreSQL)
    channel: Channel
    provider: Provider
    provider_message_id: str  # Twilio MessageSid, WhatsApp wamid, web chat client message id: redelivery key
    sender: str  # as the provider gives it: "+34600111222", "whatsapp:+34600111222", a wa_id, a visitor token
    recipient: str  # our side: the number, phone_number_id or web chat site the message was sent to
    text: str | None  # typed text, or the title of an interactive reply
    choice_id: str | None = None  # the id of an interactive button/list reply, when there is one
    media: list[dict[str, Any]] = field(default_factory=list)  # references only: {id|url, mime_type, caption}
    received_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    channel_name: str | None = None  # the dialplans/channels.yaml entry it arrived on (None: none matched)


class InboundHandler(Protocol):
    """Processes one stored inbound message. Called at least once per message (again after a crash before
    it returned), so it must be idempotent for the same `message.id`."""

    async def __call__(self, message: InboundMessage) -> None: ...


@dataclass(frozen=True)
class Choice:
    id: str  # what comes back as InboundMessage.choice_id; also the number shown on channels without buttons
    title: str  # shown on the button/list row; also accepted typed


def numbered(text: str, choices: list[Choice] | tuple[Choice, ...]) -> str:
    """A prompt with its options as lines for channels (or menus) without buttons. Each line starts with
    the choice's id, never its position: flows match replies by menu key (`3` for the key 3, also when the
    menu has no key 1 or 2), so the number a customer reads is the one that selects it."""
    if not choices:
        return text
    lines = [f"{c.id}. {c.title}" for c in choices]
    return "\n".join([text, *lines]) if text else "\n".join(lines)


@dataclass(frozen=True)
class OutboundMessage:
    channel: Channel
    provider: Provider
    sender: str  # our side (number / phone_number_id / site)
    recipient: str  # the customer's address on that channel
    text: str
    conversation_id: str  # order is kept per conversation
    choices: list[Choice] = field(default_factory=list)  # rendered as buttons/list on WhatsApp, numbered text elsewhere
    template: str | None = None  # an approved template name (WhatsApp), needed outside the 24-hour window
    # Unique in the outbox: a second enqueue with the same key returns the first message's id and changes
    # nothing (the conversation layer derives it from its reply row, so a reply is handed over once).
    idempotency_key: str | None = None


class Inbox(Protocol):
    async def accept(
        self,
        *,
        channel: Channel,
        provider: Provider,
        provider_message_id: str,
        sender: str,
        recipient: str,
        text: str | None,
        choice_id: str | None = None,
        media: list[dict[str, Any]] | None = None,
        channel_name: str | None = None,
    ) -> tuple[int, bool]:
        """Store an inbound message durably (committed before returning) and return (messages.id, is_new);
        the same provider_message_id again returns the first id and False and changes nothing. The stored
        message then reaches the InboundHandler once it is committed (at least once, across restarts)."""
        ...


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str  # what the provider's later status callbacks name


def retry_after_seconds(header: str | None, *, now: dt.datetime | None = None) -> float | None:
    """A provider's `Retry-After`, in seconds from now: delta-seconds (decimals accepted) or an HTTP-date.
    None when absent or unreadable (NaN included); never negative; possibly `inf` (a provider saying
    "never"): the outbox caps every wait (HILO_MESSAGING_RETRY_AFTER_MAX_S), so none is taken as given."""
    text = (header or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
    return None if math.isnan(seconds) else max(0.0, seconds)


class SendFailed(Exception):
    """A send the provider refused or that did not complete. retryable: try again later (timeouts, 5xx,
    429 with retry_after seconds when the provider said); otherwise the message is marked failed."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None, code: str | None = None):
        super().__init__(reason)
        self.retryable = retryable
        self.retry_after = retry_after
        self.code = code


class ProviderSender(Protocol):
    """Sends one outbound message on one provider (Twilio REST, WhatsApp Cloud /messages, web chat socket)."""

    provider: Provider

    async def send(self, message: OutboundMessage, outbox_id: int) -> SendResult: ...


class Outbox(Protocol):
    async def enqueue(self, message: OutboundMessage, *, conn: Conn | None = None) -> int:
        """Store the message for sending and return its id: durable before returning, or, given `conn`, in
        the caller's transaction (sent once it commits). The same `message.idempotency_key` again returns
        the first id and changes nothing. Raises OutsideWindow when WhatsApp's 24-hour customer-service
        window is closed and no template is given."""
        ...


class OutsideWindow(Exception):
    """A free-form WhatsApp message outside the customer-service window (Cloud API 131047, Twilio 63016)."""

    def __init__(self, recipient_masked: str, closed_at: dt.datetime | None) -> None:
        self.closed_at = closed_at
        when = f"closed at {closed_at.isoformat()}" if closed_at else "never opened"
        super().__init__(
            f"WhatsApp customer-service window for {recipient_masked} is {when}: only an approved template can be sent"
        )


# What a provider's webhook parses into (the inbound half of each provider module) ----------------------


@dataclass(frozen=True)
class Received:
    """One inbound message as a webhook gives it, before it is stored."""

    channel: Channel
    provider: Provider
    provider_message_id: str
    sender: str
    recipient: str
    text: str | None
    choice_id: str | None = None
    media: list[dict[str, Any]] = field(default_factory=list)
    channel_name: str | None = None


@dataclass(frozen=True)
class StatusUpdate:
    """A delivery status as a provider's callback gives it, mapped to the outbox's states."""

    provider: Provider
    provider_message_id: str
    status: str  # accepted / sent / delivered / read / failed
    provider_status: str  # the provider's own word (Twilio's undelivered, ...)
    error_code: str | None = None
    error_message: str | None = None
    occurred_at: dt.datetime | None = None


class BadPayload(ValueError):
    """A webhook body that cannot be read: `field` names what is wrong (answered 400 with it)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
