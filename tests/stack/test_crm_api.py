"""The customer REST API against the real database: customers, identities, merges, the paginated timeline
and cases — what works, and every way it refuses (400 naming the field, 401, 403, 404, 409)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from crm_bridge import identity
from crm_bridge.timeline import Interaction
from hilo.web.auth import AUTH_KEY
from tests.stack.conftest import Stack

SUPERVISOR_TOKEN = "test-supervisor-token-" + uuid.uuid4().hex
AGENT_TOKEN = "test-agent-token-" + uuid.uuid4().hex


def admin(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.token}"}


SUPERVISOR = {"Authorization": f"Bearer {SUPERVISOR_TOKEN}"}
AGENT = {"Authorization": f"Bearer {AGENT_TOKEN}"}


@pytest.fixture
async def role_tokens(stack: Stack) -> AsyncIterator[None]:
    """API tokens with the supervisor and agent roles, for this test only."""
    tokens: dict[str, str] = stack.client.app[AUTH_KEY].tokens
    tokens.update({SUPERVISOR_TOKEN: "supervisor", AGENT_TOKEN: "agent"})
    yield
    tokens.pop(SUPERVISOR_TOKEN, None)
    tokens.pop(AGENT_TOKEN, None)


async def call(
    stack: Stack, method: str, url: str, *, status: int, headers: dict[str, str] | None = None, **kwargs: Any
) -> Any:
    resp = await stack.client.request(method, url, headers=admin(stack) if headers is None else headers, **kwargs)
    body = await resp.json() if resp.status != 204 else None
    assert resp.status == status, (method, url, resp.status, body)
    return body


async def new_customer(stack: Stack, name: str, *identities: dict[str, str]) -> dict[str, Any]:
    body = {"display_name": name, "identities": list(identities)}
    created: dict[str, Any] = await call(stack, "POST", "/api/customers", status=201, json=body)
    return created


async def with_events(stack: Stack, customer_id: str, *types: str) -> Interaction:
    assert stack.services.timeline is not None
    interaction = await stack.services.timeline.start_interaction(uuid.UUID(customer_id), "voice", "inbound")
    for type_ in types:
        await stack.services.timeline.record(interaction, type_, {"n": type_})
    return interaction


async def test_customer_create_get_search_and_patch(stack: Stack) -> None:
    created = await new_customer(
        stack,
        "Lucía Pérez",
        {"kind": "phone", "value": "600 55 66 77"},
        {"kind": "email", "value": " Lucia@Example.COM"},
        {"kind": "external", "value": "0035g00000XyZ", "system": "Salesforce"},
    )
    assert created["identities"] == [
        {"kind": "phone", "value": "+34600556677"},
        {"kind": "email", "value": "lucia@example.com"},
        {"kind": "external", "value": "salesforce:0035g00000XyZ"},
    ]
    assert created["merged_into"] is None and created["consent"] == {}
    cid = created["id"]
    listed = await call(stack, "GET", f"/api/customers/{cid}/identities", status=200)
    assert [(i["kind"], i["system"]) for i in listed["identities"]] == [
        ("phone", None),
        ("email", None),
        ("external", "salesforce"),
    ]
    assert all(isinstance(i["id"], int) and i["created_at"] for i in listed["identities"])
    assert await call(stack, "GET", f"/api/customers/{cid}", status=200) == created

    for params in (
        {"phone": "+34 600-556-677"},
        {"kind": "email", "value": "LUCIA@example.com"},
        {"kind": "external", "value": "salesforce:0035g00000XyZ"},
        {"kind": "external", "value": "0035g00000XyZ", "system": "salesforce"},
    ):
        assert (await call(stack, "GET", "/api/customers", status=200, params=params))["id"] == cid, params

    patched = await call(
        stack,
        "PATCH",
        f"/api/customers/{cid}",
        status=200,
        json={
            "preferred_language": "es-419",
            "preferred_channel": "whatsapp",
            "consent": {"whatsapp": {"granted": True, "source": "ivr"}, "sms": {"granted": False, "source": "agent"}},
        },
    )
    assert (patched["display_name"], patched["preferred_language"], patched["preferred_channel"]) == (
        "Lucía Pérez",
        "es-419",
        "whatsapp",
    )
    assert {k: (v["granted"], v["source"]) for k, v in patched["consent"].items()} == {
        "whatsapp": (True, "ivr"),
        "sms": (False, "agent"),
    }
    cleared = await call(stack, "PATCH", f"/api/customers/{cid}", status=200, json={"display_name": None})
    assert cleared["display_name"] is None and cleared["preferred_language"] == "es-419"


async def test_identities_link_list_unlink_and_conflicts(stack: Stack) -> None:
    ana = await new_customer(stack, "Ana", {"kind": "phone", "value": "+34 600 10 00 01"})
    bea = await new_customer(stack, "Bea", {"kind": "email", "value": "bea@example.org"})
    url = f"/api/customers/{ana['id']}/identities"
    linked = await call(stack, "POST", url, status=201, json={"kind": "whatsapp", "value": "34600100002"})
    assert (linked["kind"], linked["value"]) == ("whatsapp", "+34600100002")
    again = await call(stack, "POST", url, status=200, json={"kind": "whatsapp", "value": "+34600100002"})
    assert again["id"] == linked["id"]

    taken = await call(stack, "POST", url, status=409, json={"kind": "email", "value": "BEA@example.org"})
    assert taken["error"] == "conflict" and taken["owner_customer_id"] == bea["id"] and taken["field"] == "value"
    # creating a customer with someone else's identity creates nothing
    before = await stack.pool.fetchval("SELECT count(*) FROM customers")
    body = {"identities": [{"kind": "webchat", "value": "tok-9"}, {"kind": "phone", "value": "600100001"}]}
    refused = await call(stack, "POST", "/api/customers", status=409, json=body)
    assert refused["field"] == "identities.1" and refused["owner_customer_id"] == ana["id"]
    assert await stack.pool.fetchval("SELECT count(*) FROM customers") == before
    assert await stack.pool.fetchval("SELECT count(*) FROM identities WHERE value = 'tok-9'") == 0

    listed = await call(stack, "GET", url, status=200)
    assert [i["kind"] for i in listed["identities"]] == ["phone", "whatsapp"]
    await call(stack, "DELETE", f"{url}/{linked['id']}", status=204)
    gone = await call(stack, "DELETE", f"{url}/{linked['id']}", status=404)
    assert gone["field"] == "identity_id"
    # Bea's identity cannot be removed through Ana
    bea_identity = (await call(stack, "GET", f"/api/customers/{bea['id']}/identities", status=200))["identities"][0][
        "id"
    ]
    assert (await call(stack, "DELETE", f"{url}/{bea_identity}", status=404))["field"] == "identity_id"
    assert [i["kind"] for i in (await call(stack, "GET", url, status=200))["identities"]] == ["phone"]


async def test_merge_and_unmerge_through_the_api(stack: Stack) -> None:
    ana = await new_customer(stack, "Ana", {"kind": "phone", "value": "+34 600 20 00 01"})
    twin = await new_customer(stack, "Ana G.", {"kind": "email", "value": "ana.g@example.org"})
    await with_events(stack, ana["id"], "ivr.input")
    await with_events(stack, twin["id"], "ivr.say", "ivr.outcome")

    merge = await call(
        stack, "POST", f"/api/customers/{ana['id']}/merge", status=201, json={"from": twin["id"], "reason": "same"}
    )
    assert (merge["survivor_id"], merge["merged_id"], merge["reason"]) == (ana["id"], twin["id"], "same")
    assert merge["merged_by"] == "token:admin@api" and merge["undone_at"] is None
    assert await call(stack, "GET", f"/api/merges/{merge['id']}", status=200) == merge
    merged = await call(stack, "GET", f"/api/customers/{twin['id']}", status=200)
    assert merged["merged_into"] == ana["id"] and merged["identities"] == []
    found = await call(
        stack, "GET", "/api/customers", status=200, params={"kind": "email", "value": "ana.g@example.org"}
    )
    assert found["id"] == ana["id"]
    timeline = await call(stack, "GET", f"/api/customers/{ana['id']}/timeline", status=200)
    assert sorted(e["type"] for e in timeline["events"]) == ["ivr.input", "ivr.outcome", "ivr.say"]

    changed = await call(stack, "PATCH", f"/api/customers/{twin['id']}", status=409, json={"display_name": "x"})
    assert changed["survivor_id"] == ana["id"]
    link = {"kind": "webchat", "value": "tok-merged"}
    refused = await call(stack, "POST", f"/api/customers/{twin['id']}/identities", status=409, json=link)
    assert refused["survivor_id"] == ana["id"]
    again = await call(
        stack, "POST", f"/api/customers/{ana['id']}/merge", status=409, json={"from": twin["id"], "reason": "x"}
    )
    assert again["field"] == "from" and "already merged" in again["reason"]
    self_merge = await call(
        stack, "POST", f"/api/customers/{ana['id']}/merge", status=400, json={"from": ana["id"], "reason": "x"}
    )
    assert self_merge["field"] == "from"
    unknown = await call(
        stack, "POST", f"/api/customers/{ana['id']}/merge", status=404, json={"from": str(uuid.uuid4()), "reason": "x"}
    )
    assert unknown["field"] == "from"

    undone = await call(stack, "POST", f"/api/merges/{merge['id']}/unmerge", status=200)
    assert undone["undone_by"] == "token:admin@api" and undone["undone_at"] is not None
    restored = await call(stack, "GET", f"/api/customers/{twin['id']}", status=200)
    assert restored["merged_into"] is None and [i["value"] for i in restored["identities"]] == ["ana.g@example.org"]
    twice = await call(stack, "POST", f"/api/merges/{merge['id']}/unmerge", status=409)
    assert "already undone" in twice["reason"]
    await call(stack, "POST", f"/api/merges/{uuid.uuid4()}/unmerge", status=404)


async def test_timeline_pages_walk_back_to_the_first_event(stack: Stack) -> None:
    ana = await new_customer(stack, "Ana", {"kind": "phone", "value": "+34 600 30 00 01"})
    types = [f"test.step{n}" for n in range(7)]
    await with_events(stack, ana["id"], *types)
    url = f"/api/customers/{ana['id']}/timeline"
    everything = await call(stack, "GET", url, status=200)
    assert [e["type"] for e in everything["events"]] == types and everything["next_before"] is None

    pages, before = [], None
    while True:
        params = {"limit": "3", **({"before": str(before)} if before else {})}
        page = await call(stack, "GET", url, status=200, params=params)
        pages.append([e["type"] for e in page["events"]])
        before = page["next_before"]
        if before is None:
            break
    assert pages == [types[4:], types[1:4], types[:1]]

    other = await new_customer(stack, "Other", {"kind": "phone", "value": "+34 600 30 00 02"})
    foreign = (await stack.pool.fetchval("SELECT max(id) FROM timeline_events")) + 1000
    for params, field in [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"before": str(foreign)}, "before"),
        ({"page": "2"}, "page"),
    ]:
        assert (await call(stack, "GET", url, status=400, params=params))["field"] == field, params
    empty = await call(stack, "GET", f"/api/customers/{other['id']}/timeline", status=200)
    assert empty["events"] == [] and empty["next_before"] is None


async def test_cases_open_list_update_and_link_interactions(stack: Stack) -> None:
    ana = await new_customer(stack, "Ana", {"kind": "phone", "value": "+34 600 40 00 01"})
    bea = await new_customer(stack, "Bea", {"kind": "phone", "value": "+34 600 40 00 02"})
    first = await with_events(stack, ana["id"], "ivr.input")
    second = await with_events(stack, ana["id"])
    beas = await with_events(stack, bea["id"])

    url = f"/api/customers/{ana['id']}/cases"
    case = await call(
        stack, "POST", url, status=201, json={"subject": "Router broken", "interaction_id": str(first.id)}
    )
    assert (case["status"], case["interaction_id"], case["interactions"]) == ("open", str(first.id), [str(first.id)])
    plain = await call(stack, "POST", url, status=201, json={"subject": "Billing"})
    assert plain["interactions"] == []
    listed = await call(stack, "GET", url, status=200)
    assert [c["subject"] for c in listed["cases"]] == ["Router broken", "Billing"]

    case_url = f"/api/cases/{case['id']}"
    linked = await call(stack, "POST", f"{case_url}/interactions", status=201, json={"interaction_id": str(second.id)})
    assert linked["interactions"] == [str(first.id), str(second.id)]
    await call(stack, "POST", f"{case_url}/interactions", status=200, json={"interaction_id": str(second.id)})
    foreign = await call(stack, "POST", f"{case_url}/interactions", status=409, json={"interaction_id": str(beas.id)})
    assert foreign["owner_customer_id"] == bea["id"] and foreign["field"] == "interaction_id"
    missing = await call(
        stack, "POST", f"{case_url}/interactions", status=404, json={"interaction_id": str(uuid.uuid4())}
    )
    assert missing["field"] == "interaction_id"

    closed = await call(stack, "PATCH", case_url, status=200, json={"status": "closed"})
    assert closed["status"] == "closed" and closed["updated_at"] >= case["updated_at"]
    assert await call(stack, "GET", case_url, status=200) == closed
    assert (await call(stack, "PATCH", case_url, status=400, json={"status": "solved"}))["field"] == "status"
    assert (await call(stack, "PATCH", case_url, status=400, json={}))["field"] is None
    body = {"subject": "x", "interaction_id": str(beas.id)}
    assert (await call(stack, "POST", url, status=409, json=body))["field"] == "interaction_id"
    await call(stack, "GET", f"/api/cases/{uuid.uuid4()}", status=404)
    await call(stack, "GET", f"/api/customers/{uuid.uuid4()}/cases", status=404)

    # a merged-away customer takes no new case; its cases moved to the survivor
    await identity.merge(stack.pool, uuid.UUID(bea["id"]), uuid.UUID(ana["id"]), by="test", reason="dup")
    refused = await call(stack, "POST", url, status=409, json={"subject": "late"})
    assert refused["survivor_id"] == bea["id"]
    moved = await call(stack, "GET", f"/api/customers/{bea['id']}/cases", status=200)
    assert {c["subject"] for c in moved["cases"]} == {"Router broken", "Billing"}


async def test_bad_input_is_named_and_unknown_things_are_404(stack: Stack) -> None:
    for body, field in [
        ({"identities": [{"kind": "fax", "value": "1"}]}, "identities.0.kind"),
        ({"identities": [{"kind": "phone", "value": "12"}]}, "identities.0.value"),
        ({"identities": [{"kind": "email", "value": "nobody"}]}, "identities.0.value"),
        ({"identities": [{"kind": "phone"}]}, "identities.0.value"),
        ({"nickname": "x"}, "nickname"),
        ({"preferred_channel": "pigeon"}, "preferred_channel"),
        ({"preferred_language": "Spanish!"}, "preferred_language"),
        ({"display_name": ""}, "display_name"),
    ]:
        resp = await call(stack, "POST", "/api/customers", status=400, json=body)
        assert (resp["error"], resp["field"]) == ("bad_request", field), body
        assert resp["reason"]
    resp = await stack.client.post("/api/customers", data=b"{", headers=admin(stack))
    assert resp.status == 400 and (await resp.json())["field"] == "body"

    ana = await new_customer(stack, "Ana", {"kind": "phone", "value": "+34 600 50 00 01"})
    patches: list[tuple[dict[str, Any], str | None]] = [
        ({}, None),
        ({"consent": {"sms": {"granted": "maybe", "source": "ivr"}}}, "consent.sms.granted"),
        ({"consent": {"sms": {"granted": True}}}, "consent.sms.source"),
    ]
    for body, named in patches:
        resp = await call(stack, "PATCH", f"/api/customers/{ana['id']}", status=400, json=body)
        assert resp["field"] == named, body
    resp = await call(stack, "PATCH", f"/api/customers/{ana['id']}", status=400, json={"consent": {"fax": {}}})
    assert resp["field"].startswith("consent.fax")

    for params, field in [({}, "phone"), ({"kind": "email"}, "value"), ({"phone": "12"}, "phone")]:
        assert (await call(stack, "GET", "/api/customers", status=400, params=params))["field"] == field
    params = {"kind": "phone", "value": "+34600500001", "system": "crm"}
    assert (await call(stack, "GET", "/api/customers", status=400, params=params))["field"] == "system"
    assert (await call(stack, "GET", "/api/customers/not-a-uuid", status=400))["field"] == "customer_id"
    await call(stack, "GET", "/api/customers", status=404, params={"kind": "webchat", "value": "nobody"})

    nobody = uuid.uuid4()
    for method, url, body in [
        ("GET", f"/api/customers/{nobody}", None),
        ("PATCH", f"/api/customers/{nobody}", {"display_name": "x"}),
        ("GET", f"/api/customers/{nobody}/identities", None),
        ("POST", f"/api/customers/{nobody}/identities", {"kind": "webchat", "value": "t"}),
        ("GET", f"/api/customers/{nobody}/timeline", None),
        ("POST", f"/api/customers/{nobody}/cases", {"subject": "x"}),
        ("GET", f"/api/merges/{nobody}", None),
        ("PATCH", f"/api/cases/{nobody}", {"status": "closed"}),
    ]:
        resp = await call(stack, method, url, status=404, json=body)
        assert resp["error"] == "not_found" and "field" in resp, (method, url)


@pytest.mark.usefixtures("role_tokens")
async def test_roles(stack: Stack) -> None:
    ana = await new_customer(stack, "Ana", {"kind": "phone", "value": "+34 600 60 00 01"})
    reads = [f"/api/customers/{ana['id']}", f"/api/customers/{ana['id']}/timeline", "/api/webhooks"]
    for url in reads:
        assert (await stack.client.get(url)).status == 401
        assert (await stack.client.get(url, headers={"Authorization": "Bearer nope"})).status == 401
        resp = await stack.client.get(url, headers=AGENT)
        assert resp.status == 403 and (await resp.json())["error"] == "forbidden"
    # supervisors read and change customers and cases, but not webhooks
    await call(stack, "GET", reads[0], status=200, headers=SUPERVISOR)
    await call(stack, "PATCH", reads[0], status=200, headers=SUPERVISOR, json={"display_name": "Ana S."})
    await call(
        stack, "POST", f"/api/customers/{ana['id']}/cases", status=201, headers=SUPERVISOR, json={"subject": "s"}
    )
    await call(stack, "GET", "/api/webhooks", status=403, headers=SUPERVISOR)
    hook = {"url": "http://127.0.0.1:9/", "event_types": ["*"]}
    await call(stack, "POST", "/api/webhooks", status=403, headers=SUPERVISOR, json=hook)
    assert await stack.pool.fetchval("SELECT count(*) FROM webhook_subscriptions") == 0
    # audit rows name who did it
    bea = await new_customer(stack, "Bea", {"kind": "phone", "value": "+34 600 60 00 02"})
    merge = await call(
        stack,
        "POST",
        f"/api/customers/{ana['id']}/merge",
        status=201,
        headers=SUPERVISOR,
        json={"from": bea["id"], "reason": "dup"},
    )
    assert merge["merged_by"] == "token:supervisor@api"


async def test_openapi_document_is_served_without_a_token(stack: Stack) -> None:
    resp = await stack.client.get("/api/openapi.json")
    assert resp.status == 200
    document = await resp.json()
    assert document["openapi"] == "3.1.0"
    assert {"/api/customers", "/api/customers/{customer_id}/timeline", "/api/webhooks/dead-letters"} <= set(
        document["paths"]
    )
