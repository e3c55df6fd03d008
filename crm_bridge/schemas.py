"""What the customer API takes and gives: the pydantic models behind validation and the OpenAPI document."""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

from hilo.audit import FORM_DESCRIPTION

IdentityKind = Literal["phone", "whatsapp", "whatsapp_bsuid", "email", "webchat", "external"]
ContactChannel = Literal["voice", "sms", "whatsapp", "webchat", "email"]
CaseStatus = Literal["open", "pending", "closed"]

# Written the way the timeline and the event bus write it (`datetime.isoformat()`), so an event reads the
# same over REST, Redis and webhooks.
Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda value: value.isoformat(), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def _storable(value: str) -> str:
    # PostgreSQL text holds no NUL, and UTF-8 no lone surrogates: refuse them (and other control
    # characters) here, naming the field, rather than fail in the database.
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise ValueError("must not contain control characters")
    return value


Plain = Annotated[str, AfterValidator(_storable)]
Text = Annotated[Plain, Field(min_length=1, max_length=200)]
# a bigserial id: within PostgreSQL's bigint, so an out-of-range one is a 400 naming it, not a 500
RowId = Annotated[int, Field(ge=1, le=2**63 - 1)]
# BCP 47 as used by the IVR (`es`, `en-GB`, `es-419`)
Language = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$", max_length=35)]


def _event_type_filter(value: str) -> str:
    if not _EVENT_FILTER.fullmatch(value):
        raise ValueError("an event type filter is a type ('agent.answered'), a family ('ivr.*') or '*'")
    return value


_EVENT_FILTER = re.compile(r"\*|[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?")
EventTypeFilter = Annotated[str, Field(max_length=100), AfterValidator(_event_type_filter)]


class Input(BaseModel):
    """Inputs name every field they accept: a misspelt field is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


# Customers and identities --------------------------------------------------------------------------


class CustomerPath(Input):
    customer_id: uuid.UUID


class IdentityPath(Input):
    customer_id: uuid.UUID
    identity_id: RowId


class IdentityIn(Input):
    kind: IdentityKind
    value: Plain = Field(min_length=1, max_length=600, description="any usual writing; stored in canonical form")
    system: Plain | None = Field(
        None, max_length=40, description="external ids only: the outside system (or write system:id)"
    )


class IdentityOut(BaseModel):
    id: int
    kind: IdentityKind
    value: str
    system: str | None
    created_at: Timestamp


class IdentityRef(BaseModel):
    """An identity as the customer view lists it (ids and dates: GET /api/customers/{id}/identities)."""

    kind: IdentityKind
    value: str


class IdentityList(BaseModel):
    customer_id: uuid.UUID
    identities: list[IdentityOut]


class ConsentIn(Input):
    granted: bool
    source: Text = Field(description="where the customer said so, e.g. 'ivr', 'agent:bob', 'web form'")


class ConsentOut(BaseModel):
    granted: bool
    at: str = Field(json_schema_extra={"format": "date-time"})
    source: str


class CustomerCreate(Input):
    display_name: Text | None = None
    preferred_language: Language | None = None
    preferred_channel: ContactChannel | None = None
    identities: list[IdentityIn] = Field(default_factory=list, max_length=20)


class CustomerPatch(Input):
    """Only the fields given change; null clears name, language or channel. Consent is set per channel."""

    display_name: Text | None = None
    preferred_language: Language | None = None
    preferred_channel: ContactChannel | None = None
    consent: dict[ContactChannel, ConsentIn] | None = None


class CustomerOut(BaseModel):
    id: uuid.UUID
    display_name: str | None
    preferred_language: str | None
    preferred_channel: ContactChannel | None
    consent: dict[str, ConsentOut]
    merged_into: uuid.UUID | None = Field(description="set while this customer is merged into another")
    created_at: Timestamp
    identities: list[IdentityRef]


class CustomerSearch(Input):
    """By phone number (`phone=`), or by any identity (`kind=` and `value=`, `system=` for external ids).
    A merged-away customer's identity leads to the customer it was merged into."""

    phone: Plain | None = Field(None, min_length=1, max_length=600)
    kind: IdentityKind | None = None
    value: Plain | None = Field(None, min_length=1, max_length=600)
    system: Plain | None = Field(None, max_length=40)


# Merges ---------------------------------------------------------------------------------------------


class MergeIn(Input):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    merged: uuid.UUID = Field(alias="from", description="the customer merged into this one")
    reason: Plain = Field(min_length=1, max_length=500)


class MergePath(Input):
    merge_id: uuid.UUID


class MergeOut(BaseModel):
    id: uuid.UUID
    survivor_id: uuid.UUID
    merged_id: uuid.UUID
    identity_ids: list[int]
    interaction_ids: list[uuid.UUID]
    case_ids: list[uuid.UUID]
    timeline_event_ids: list[int]
    merged_by: str = Field(description=FORM_DESCRIPTION)
    reason: str
    merged_at: Timestamp
    undone_at: Timestamp | None
    undone_by: str | None = Field(description=FORM_DESCRIPTION)


# Timeline -------------------------------------------------------------------------------------------


class TimelineQuery(Input):
    before: RowId | None = Field(None, description="an event id: the page of events just older than it")
    limit: int = Field(500, ge=1, le=500)


class EventOut(BaseModel):
    """One fact on a customer's timeline (also the body of every webhook delivery)."""

    id: int
    type: str
    at: str = Field(json_schema_extra={"format": "date-time"})
    channel: str
    customer_id: uuid.UUID
    interaction_id: uuid.UUID | None
    data: dict[str, Any]


class TimelineOut(BaseModel):
    customer_id: uuid.UUID
    events: list[EventOut] = Field(description="oldest first")
    next_before: int | None = Field(description="pass as `before` for the older page; null on the oldest page")


# Cases ----------------------------------------------------------------------------------------------


class CasePath(Input):
    case_id: uuid.UUID


class CaseCreate(Input):
    subject: Text
    interaction_id: uuid.UUID | None = Field(None, description="the customer's interaction it was opened from")


class CasePatch(Input):
    status: CaseStatus | None = None
    subject: Text | None = None


class CaseLink(Input):
    interaction_id: uuid.UUID


class CaseOut(BaseModel):
    id: uuid.UUID
    customer_id: uuid.UUID
    interaction_id: uuid.UUID | None
    subject: str
    status: CaseStatus
    created_at: Timestamp
    updated_at: Timestamp
    interactions: list[uuid.UUID] = Field(description="every interaction linked to the case")


class CaseList(BaseModel):
    customer_id: uuid.UUID
    cases: list[CaseOut]


# Webhooks -------------------------------------------------------------------------------------------


def _webhook_url(value: str) -> str:
    _storable(value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if any(ch.isspace() for ch in value) or parts.fragment:
        raise ValueError("must not contain whitespace or a #fragment")
    return value


WebhookUrl = Annotated[str, Field(max_length=2000), AfterValidator(_webhook_url)]


class WebhookPath(Input):
    webhook_id: uuid.UUID


class WebhookCreate(Input):
    url: WebhookUrl
    event_types: list[EventTypeFilter] = Field(min_length=1, max_length=50)
    active: bool = True
    description: Plain = Field("", max_length=200)


class WebhookPatch(Input):
    url: WebhookUrl | None = None
    event_types: list[EventTypeFilter] | None = Field(None, min_length=1, max_length=50)
    active: bool | None = None
    description: Plain | None = Field(None, max_length=200)


class WebhookOut(BaseModel):
    id: uuid.UUID
    url: str
    event_types: list[str]
    active: bool
    description: str
    created_at: Timestamp
    updated_at: Timestamp


class WebhookCreated(WebhookOut):
    secret: str = Field(description="the signing key: shown in this response only, never again")


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


class DeliveryPath(Input):
    delivery_id: uuid.UUID


class DeadLetterQuery(Input):
    subscription_id: uuid.UUID | None = None
    limit: int = Field(100, ge=1, le=500)


class DeliveryOut(BaseModel):
    id: uuid.UUID = Field(description="sent as Hilo-Webhook-Id")
    subscription_id: uuid.UUID
    event_id: int | None = Field(description="the timeline event sent; null for an ops event")
    ops_event_id: int | None = Field(
        default=None, description="the ops event sent (about no customer: alert.raised, alert.cleared)"
    )
    event_type: str
    state: Literal["pending", "delivered", "dead"]
    attempts: int
    replays: int
    last_status: int | None = Field(description="the receiver's last HTTP status, if it answered")
    last_error: str | None
    next_attempt_at: Timestamp
    created_at: Timestamp
    delivered_at: Timestamp | None
    dead_at: Timestamp | None


class DeadLetterList(BaseModel):
    dead_letters: list[DeliveryOut]
