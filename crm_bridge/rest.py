"""The customer API: customers, identities, merges, the timeline, cases and webhook subscriptions, declared on
this module's route table `ROUTES` (the root serves it in the one API, hilo.web.api).

Roles: admin and supervisor read and change customers and cases; webhooks are admin only. Errors are
`{"error", "field", "reason"}` (409s about an identity or a merged customer also name the customer)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web

from crm_bridge import cases, customer_edits, identity, webhooks
from crm_bridge.schemas import (
    CaseCreate,
    CaseLink,
    CaseList,
    CaseOut,
    CasePatch,
    CasePath,
    CustomerCreate,
    CustomerOut,
    CustomerPatch,
    CustomerPath,
    CustomerSearch,
    DeadLetterList,
    DeadLetterQuery,
    DeliveryOut,
    DeliveryPath,
    EventOut,
    IdentityIn,
    IdentityList,
    IdentityOut,
    IdentityPath,
    MergeIn,
    MergeOut,
    MergePath,
    TimelineOut,
    TimelineQuery,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookOut,
    WebhookPatch,
    WebhookPath,
)
from crm_bridge.timeline import TIMELINE, shareable
from hilo.audit import actor
from hilo.web.auth import ADMIN, STAFF, principal
from hilo.web.keys import POOL, SETTINGS
from hilo.web.openapi import ApiError, Reply, Routes, bad_request, conflict, not_found

ROUTES = Routes()


def _pool(request: web.Request) -> asyncpg.Pool:
    return request.app[POOL]


def _actor(request: web.Request) -> str:
    """Who did it, for audit rows: the actor of hilo/audit.py (`user:maria@api`, `token:admin@api`)."""
    return actor(principal(request))


def _merged(exc: identity.MergedCustomer) -> ApiError:
    return conflict(str(exc), "customer_id", survivor_id=str(exc.survivor_id))


async def _customer(pool: asyncpg.Pool, customer_id: uuid.UUID) -> CustomerOut:
    async with pool.acquire() as conn:
        found = await customer_edits.load_customer(conn, customer_id)
    if found is None:
        raise not_found(f"no customer {customer_id}", "customer_id")
    return CustomerOut.model_validate(found)


# Customers ------------------------------------------------------------------------------------------


@ROUTES.route(
    "GET",
    "/api/customers",
    summary="Find the customer behind an identity",
    tag="customers",
    roles=STAFF,
    ok={200: CustomerOut},
    errors={404: "nobody has this identity"},
)
async def find_customer(request: web.Request, query: CustomerSearch) -> CustomerOut:
    """`phone=` takes a number in any usual format; `kind=`+`value=` any identity. An identity of a
    customer merged into another leads to the survivor."""
    if query.phone is not None:
        if query.kind is not None or query.value is not None:
            raise bad_request("give phone=, or kind= and value=, not both", "phone")
        kind, raw, field = "phone", query.phone, "phone"
    elif query.kind is None or query.value is None:
        raise bad_request("give phone=, or kind= and value=", "phone" if query.kind is None else "value")
    else:
        kind, raw, field = query.kind, query.value, "value"
    region = request.app[SETTINGS].default_region
    try:
        found = await identity.resolve(_pool(request), kind, raw, region, system=query.system)
    except identity.InvalidIdentity as exc:
        raise bad_request(str(exc), "system" if "system" in exc.problem else field) from exc
    if found is None:
        raise not_found(f"no customer has this {kind} identity", field)
    return await _customer(_pool(request), found.customer_id)


@ROUTES.route(
    "POST",
    "/api/customers",
    summary="Create a customer with its identities",
    tag="customers",
    roles=STAFF,
    ok={201: CustomerOut},
    errors={409: "an identity belongs to another customer (owner_customer_id)"},
)
async def create_customer(request: web.Request, body: CustomerCreate) -> Reply:
    region = request.app[SETTINGS].default_region
    canonical: list[tuple[str, str]] = []
    for n, given in enumerate(body.identities):
        try:
            canonical.append((given.kind, identity.normalize(given.kind, given.value, region, system=given.system)))
        except identity.InvalidIdentity as exc:
            raise bad_request(str(exc), f"identities.{n}.value") from exc
    profile = body.model_dump(include={"display_name", "preferred_language", "preferred_channel"})
    try:
        customer_id = await customer_edits.create_customer(_pool(request), profile, canonical)
    except identity.IdentityTaken as exc:
        n = canonical.index((exc.kind, exc.value))
        raise conflict(str(exc), f"identities.{n}", owner_customer_id=str(exc.owner_id)) from exc
    return Reply(201, await _customer(_pool(request), customer_id))


@ROUTES.route(
    "GET",
    "/api/customers/{customer_id}",
    summary="A customer: profile, consent, identities, and the survivor if it was merged",
    tag="customers",
    roles=STAFF,
    ok={200: CustomerOut},
    errors={404: "no such customer"},
)
async def get_customer(request: web.Request, path: CustomerPath) -> CustomerOut:
    return await _customer(_pool(request), path.customer_id)


@ROUTES.route(
    "PATCH",
    "/api/customers/{customer_id}",
    summary="Change a customer's name, language, preferred channel or consent",
    tag="customers",
    roles=STAFF,
    ok={200: CustomerOut},
    errors={404: "no such customer", 409: "the customer was merged into another (survivor_id)"},
)
async def patch_customer(request: web.Request, path: CustomerPath, body: CustomerPatch) -> CustomerOut:
    profile = {name: getattr(body, name) for name in customer_edits.PROFILE_FIELDS if name in body.model_fields_set}
    consent: dict[str, tuple[bool, str]] = {ch: (c.granted, c.source) for ch, c in (body.consent or {}).items()}
    if not profile and not consent:
        raise bad_request(
            "nothing to change: give display_name, preferred_language, preferred_channel or consent", None
        )
    try:
        await customer_edits.update_customer(_pool(request), path.customer_id, profile, consent)
    except identity.CustomerNotFound as exc:
        raise not_found(str(exc), "customer_id") from exc
    except identity.MergedCustomer as exc:
        raise _merged(exc) from exc
    return await _customer(_pool(request), path.customer_id)


# Identities -----------------------------------------------------------------------------------------


@ROUTES.route(
    "GET",
    "/api/customers/{customer_id}/identities",
    summary="A customer's identities",
    tag="identities",
    roles=STAFF,
    ok={200: IdentityList},
    errors={404: "no such customer"},
)
async def list_identities(request: web.Request, path: CustomerPath) -> IdentityList:
    await _customer(_pool(request), path.customer_id)
    async with _pool(request).acquire() as conn:
        found = await customer_edits.list_identities(conn, path.customer_id)
    return IdentityList(customer_id=path.customer_id, identities=[IdentityOut.model_validate(i) for i in found])


@ROUTES.route(
    "POST",
    "/api/customers/{customer_id}/identities",
    summary="Give a customer one more identity (200 if it already had it)",
    tag="identities",
    roles=STAFF,
    ok={201: IdentityOut, 200: IdentityOut},
    errors={
        404: "no such customer",
        409: "the identity belongs to another customer (owner_customer_id: merge them instead),"
        " or the customer was merged into another (survivor_id)",
    },
)
async def link_identity(request: web.Request, path: CustomerPath, body: IdentityIn) -> Reply:
    pool = _pool(request)
    region = request.app[SETTINGS].default_region
    try:
        linked = await identity.link_identity(pool, path.customer_id, body.kind, body.value, region, system=body.system)
    except identity.InvalidIdentity as exc:
        raise bad_request(str(exc), "system" if "system" in exc.problem else "value") from exc
    except identity.CustomerNotFound as exc:
        raise not_found(str(exc), "customer_id") from exc
    except identity.IdentityTaken as exc:
        raise conflict(str(exc), "value", owner_customer_id=str(exc.owner_id)) from exc
    except identity.MergedCustomer as exc:
        raise _merged(exc) from exc
    row = await pool.fetchrow("SELECT id, kind, value, system, created_at FROM identities WHERE id = $1", linked.id)
    return Reply(201 if linked.created else 200, IdentityOut.model_validate(dict(row or {})))


@ROUTES.route(
    "DELETE",
    "/api/customers/{customer_id}/identities/{identity_id}",
    summary="Take an identity away from a customer",
    tag="identities",
    roles=STAFF,
    ok={204: None},
    errors={404: "no such customer, or it has no such identity", 409: "the customer was merged (survivor_id)"},
)
async def unlink_identity(request: web.Request, path: IdentityPath) -> Reply:
    try:
        await customer_edits.unlink_identity(_pool(request), path.customer_id, path.identity_id)
    except identity.CustomerNotFound as exc:
        raise not_found(str(exc), "customer_id") from exc
    except identity.MergedCustomer as exc:
        raise _merged(exc) from exc
    except LookupError as exc:
        raise not_found(str(exc), "identity_id") from exc
    return Reply(204)


# Merges ---------------------------------------------------------------------------------------------


def _merge_out(merge: identity.Merge) -> MergeOut:
    return MergeOut.model_validate(merge, from_attributes=True)


@ROUTES.route(
    "POST",
    "/api/customers/{customer_id}/merge",
    summary="Merge another customer (`from`) into this one; undo with the merge's id",
    tag="merges",
    roles=STAFF,
    ok={201: MergeOut},
    errors={404: "either customer is unknown", 409: "either customer is already merged into another"},
)
async def merge_customers(request: web.Request, path: CustomerPath, body: MergeIn) -> Reply:
    if body.merged == path.customer_id:
        raise bad_request("a customer cannot be merged into itself", "from")
    pool = _pool(request)
    try:
        merge_id = await identity.merge(pool, path.customer_id, body.merged, by=_actor(request), reason=body.reason)
    except identity.CustomerNotFound as exc:
        raise not_found(str(exc), "from" if str(body.merged) in str(exc) else "customer_id") from exc
    except identity.MergeRefused as exc:
        raise conflict(str(exc), "from" if f"{body.merged} is already" in str(exc) else "customer_id") from exc
    async with pool.acquire() as conn:
        return Reply(201, _merge_out(await identity.get_merge(conn, merge_id)))


@ROUTES.route(
    "GET",
    "/api/merges/{merge_id}",
    summary="A merge's audit record: who, when, why, and exactly which rows it moved",
    tag="merges",
    roles=STAFF,
    ok={200: MergeOut},
    errors={404: "no such merge"},
)
async def get_merge(request: web.Request, path: MergePath) -> MergeOut:
    async with _pool(request).acquire() as conn:
        try:
            return _merge_out(await identity.get_merge(conn, path.merge_id))
        except identity.MergeNotFound as exc:
            raise not_found(str(exc), "merge_id") from exc


@ROUTES.route(
    "POST",
    "/api/merges/{merge_id}/unmerge",
    summary="Undo a merge exactly: what it moved goes back",
    tag="merges",
    roles=STAFF,
    ok={200: MergeOut},
    errors={404: "no such merge", 409: "already undone, or undo a later merge first, or rows moved since"},
)
async def unmerge_customers(request: web.Request, path: MergePath) -> MergeOut:
    try:
        return _merge_out(await identity.unmerge(_pool(request), path.merge_id, by=_actor(request)))
    except identity.MergeNotFound as exc:
        raise not_found(str(exc), "merge_id") from exc
    except identity.UnmergeRefused as exc:
        raise conflict(str(exc), "merge_id") from exc


# Timeline -------------------------------------------------------------------------------------------


@ROUTES.route(
    "GET",
    "/api/customers/{customer_id}/timeline",
    summary="A customer's timeline, including customers merged into it; newest page first",
    tag="timeline",
    roles=STAFF,
    ok={200: TimelineOut},
    errors={404: "no such customer"},
)
async def customer_timeline(request: web.Request, path: CustomerPath, query: TimelineQuery) -> TimelineOut:
    """Events come oldest first within a page. `next_before` is the `before` of the next older page. A
    transcript's text (`recording.transcribed`) is shown to admins only; others read it through
    GET /api/recordings/{id}/transcript, where their access to the recording is checked."""
    timeline = request.app[TIMELINE]
    await _customer(_pool(request), path.customer_id)
    try:
        events, next_before = await timeline.page(path.customer_id, query.before, query.limit)
    except LookupError as exc:
        raise bad_request(str(exc), "before") from exc
    full = principal(request).role == "admin"  # others get no transcript text here (timeline.WITHHELD)
    return TimelineOut(
        customer_id=path.customer_id,
        events=[EventOut.model_validate(e if full else shareable(e)) for e in events],
        next_before=next_before,
    )


# Cases ----------------------------------------------------------------------------------------------


def _case_errors(exc: Exception) -> ApiError:
    if isinstance(exc, identity.CustomerNotFound):
        return not_found(str(exc), "customer_id")
    if isinstance(exc, identity.MergedCustomer):
        return _merged(exc)
    if isinstance(exc, cases.CaseNotFound):
        return not_found(str(exc), "case_id")
    if isinstance(exc, cases.InteractionNotFound):
        return not_found(str(exc), "interaction_id")
    if isinstance(exc, cases.ForeignInteraction):
        return conflict(str(exc), "interaction_id", owner_customer_id=str(exc.owner_id))
    raise exc


_CASE_ERRORS = (
    identity.CustomerNotFound,
    identity.MergedCustomer,
    cases.CaseNotFound,
    cases.InteractionNotFound,
    cases.ForeignInteraction,
)


@ROUTES.route(
    "POST",
    "/api/customers/{customer_id}/cases",
    summary="Open a case for a customer",
    tag="cases",
    roles=STAFF,
    ok={201: CaseOut},
    errors={
        404: "no such customer or interaction",
        409: "the customer was merged (survivor_id), or the interaction is another customer's",
    },
)
async def create_case(request: web.Request, path: CustomerPath, body: CaseCreate) -> Reply:
    try:
        case = await cases.create_case(_pool(request), path.customer_id, body.subject, body.interaction_id)
    except _CASE_ERRORS as exc:
        raise _case_errors(exc) from exc
    return Reply(201, CaseOut.model_validate(case))


@ROUTES.route(
    "GET",
    "/api/customers/{customer_id}/cases",
    summary="A customer's cases, oldest first",
    tag="cases",
    roles=STAFF,
    ok={200: CaseList},
    errors={404: "no such customer"},
)
async def list_cases(request: web.Request, path: CustomerPath) -> CaseList:
    await _customer(_pool(request), path.customer_id)
    async with _pool(request).acquire() as conn:
        found = await cases.list_cases(conn, path.customer_id)
    return CaseList(customer_id=path.customer_id, cases=[CaseOut.model_validate(c) for c in found])


@ROUTES.route(
    "GET",
    "/api/cases/{case_id}",
    summary="A case with its linked interactions",
    tag="cases",
    roles=STAFF,
    ok={200: CaseOut},
    errors={404: "no such case"},
)
async def get_case(request: web.Request, path: CasePath) -> CaseOut:
    async with _pool(request).acquire() as conn:
        try:
            return CaseOut.model_validate(await cases.get_case(conn, path.case_id))
        except cases.CaseNotFound as exc:
            raise _case_errors(exc) from exc


@ROUTES.route(
    "PATCH",
    "/api/cases/{case_id}",
    summary="Change a case's status or subject",
    tag="cases",
    roles=STAFF,
    ok={200: CaseOut},
    errors={404: "no such case"},
)
async def patch_case(request: web.Request, path: CasePath, body: CasePatch) -> CaseOut:
    if body.status is None and body.subject is None:
        raise bad_request("nothing to change: give status or subject", None)
    try:
        case = await cases.update_case(_pool(request), path.case_id, status=body.status, subject=body.subject)
    except cases.CaseNotFound as exc:
        raise _case_errors(exc) from exc
    return CaseOut.model_validate(case)


@ROUTES.route(
    "POST",
    "/api/cases/{case_id}/interactions",
    summary="Link an interaction of the case's customer to the case (200 if already linked)",
    tag="cases",
    roles=STAFF,
    ok={201: CaseOut, 200: CaseOut},
    errors={404: "no such case or interaction", 409: "the interaction is another customer's"},
)
async def link_case_interaction(request: web.Request, path: CasePath, body: CaseLink) -> Reply:
    try:
        case, linked = await cases.link_interaction(_pool(request), path.case_id, body.interaction_id)
    except _CASE_ERRORS as exc:
        raise _case_errors(exc) from exc
    return Reply(201 if linked else 200, CaseOut.model_validate(case))


# Webhooks -------------------------------------------------------------------------------------------


@ROUTES.route(
    "POST",
    "/api/webhooks",
    summary="Subscribe a URL to timeline events; the signing secret is in this response only",
    tag="webhooks",
    roles=ADMIN,
    ok={201: WebhookCreated},
)
async def create_webhook(request: web.Request, body: WebhookCreate) -> Reply:
    created = await webhooks.create_subscription(
        _pool(request), body.url, body.event_types, body.active, body.description
    )
    return Reply(201, WebhookCreated.model_validate(created))


@ROUTES.route(
    "GET", "/api/webhooks", summary="Every webhook subscription", tag="webhooks", roles=ADMIN, ok={200: WebhookList}
)
async def list_webhooks(request: web.Request) -> WebhookList:
    found = await webhooks.list_subscriptions(_pool(request))
    return WebhookList(webhooks=[WebhookOut.model_validate(w) for w in found])


# Declared before /api/webhooks/{webhook_id}, which would otherwise be tried first.
@ROUTES.route(
    "GET",
    "/api/webhooks/dead-letters",
    summary="Deliveries that failed every attempt, newest first",
    tag="webhooks",
    roles=ADMIN,
    ok={200: DeadLetterList},
)
async def list_dead_letters(request: web.Request, query: DeadLetterQuery) -> DeadLetterList:
    found = await webhooks.dead_letters(_pool(request), query.subscription_id, query.limit)
    return DeadLetterList(dead_letters=[DeliveryOut.model_validate(d) for d in found])


@ROUTES.route(
    "POST",
    "/api/webhooks/dead-letters/{delivery_id}/replay",
    summary="Send a dead letter again, with a fresh set of attempts",
    tag="webhooks",
    roles=ADMIN,
    ok={202: DeliveryOut},
    errors={404: "no such delivery", 409: "the delivery is not dead-lettered (pending or delivered)"},
)
async def replay_dead_letter(request: web.Request, path: DeliveryPath) -> Reply:
    try:
        replayed = await webhooks.replay(_pool(request), path.delivery_id)
    except webhooks.NotDead as exc:
        raise conflict(str(exc), "delivery_id") from exc
    except LookupError as exc:
        raise not_found(str(exc), "delivery_id") from exc
    return Reply(202, DeliveryOut.model_validate(replayed))


@ROUTES.route(
    "GET",
    "/api/webhooks/{webhook_id}",
    summary="A webhook subscription (without its secret)",
    tag="webhooks",
    roles=ADMIN,
    ok={200: WebhookOut},
    errors={404: "no such subscription"},
)
async def get_webhook(request: web.Request, path: WebhookPath) -> WebhookOut:
    found = await webhooks.get_subscription(_pool(request), path.webhook_id)
    if found is None:
        raise not_found(f"no webhook subscription {path.webhook_id}", "webhook_id")
    return WebhookOut.model_validate(found)


@ROUTES.route(
    "PATCH",
    "/api/webhooks/{webhook_id}",
    summary="Change a subscription's URL, event types, description, or pause/resume it",
    tag="webhooks",
    roles=ADMIN,
    ok={200: WebhookOut},
    errors={404: "no such subscription"},
)
async def patch_webhook(request: web.Request, path: WebhookPath, body: WebhookPatch) -> WebhookOut:
    changes = body.model_dump(exclude_unset=True)
    for name, value in changes.items():
        if value is None:
            raise bad_request(f"{name} cannot be null", name)
    if not changes:
        raise bad_request("nothing to change: give url, event_types, active or description", None)
    found = await webhooks.update_subscription(_pool(request), path.webhook_id, changes)
    if found is None:
        raise not_found(f"no webhook subscription {path.webhook_id}", "webhook_id")
    return WebhookOut.model_validate(found)


@ROUTES.route(
    "DELETE",
    "/api/webhooks/{webhook_id}",
    summary="Delete a subscription with its deliveries and dead letters",
    tag="webhooks",
    roles=ADMIN,
    ok={204: None},
    errors={404: "no such subscription"},
)
async def delete_webhook(request: web.Request, path: WebhookPath) -> Reply:
    if not await webhooks.delete_subscription(_pool(request), path.webhook_id):
        raise not_found(f"no webhook subscription {path.webhook_id}", "webhook_id")
    return Reply(204)


def _webhook_operation(ref: Any) -> dict[str, Any]:
    header = {"schema": {"type": "string"}, "required": True}
    return {
        "post": {
            "summary": "Hilo POSTs each wanted timeline event to the subscription's URL",
            "description": webhooks.__doc__ or "",
            "parameters": [
                {"name": "Hilo-Webhook-Id", "in": "header", **header, "description": "same on every retry"},
                {"name": "Hilo-Timestamp", "in": "header", **header, "description": "Unix seconds"},
                {"name": "Hilo-Signature", "in": "header", **header, "description": "v1=<hex HMAC-SHA256>"},
                {"name": "Hilo-Event-Type", "in": "header", **header},
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": ref(EventOut)}}},
            "responses": {"2XX": {"description": "received; any other answer is retried"}},
        }
    }


ROUTES.webhook("timelineEvent", _webhook_operation, [EventOut])
