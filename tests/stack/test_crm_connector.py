"""The outside-CRM connector on real calls: a fake CRM (aiohttp on 127.0.0.1) asked about callers new to
Hilo, answering fast, slowly, with errors or with garbage; the call never waits longer than the time box."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from crm_bridge.connectors import CallerEnrichment, EnrichmentStore, ExternalCustomer, RestCrmConnector, parse_mapping
from crm_bridge.timeline import Interaction
from tests.stack.calls import hang_up
from tests.stack.conftest import Stack
from tests.stack.test_calls import KNOWN_CALLER, place

NEW_CALLER = "0034600112233"  # nobody in the demo customers
NEW_E164 = "+34600112233"
SECRET = "Bearer crm-test-secret-4f9a2c"
BOX_S = 0.8  # the default time box (HILO_CRM_TIMEBOX_S)
SLACK_S = 0.5  # what the call itself may take on top (database writes, a loaded machine)
PERSON = {
    "id": "C-77",
    "first_name": "Lucía",
    "last_name": "Pérez",
    "emails": ["Lucia.Perez@Example.com"],
    "locale": "es",
}


class FakeCrm:
    """Answers GET /api/people?phone=... like a CRM search: a list with the person, after `delay_s`;
    or a 500, or HTML instead of JSON. Remembers every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.enrichment: CallerEnrichment | None = None
        self.mode = "ok"
        self.delay_s = 0.0
        app = web.Application()
        app.router.add_get("/api/people", self.people)
        self.server = TestServer(app, host="127.0.0.1")

    async def people(self, request: web.Request) -> web.StreamResponse:
        self.requests.append({"phone": request.query.get("phone"), "auth": request.headers.get("Authorization")})
        await asyncio.sleep(self.delay_s)
        if self.mode == "error":
            return web.json_response({"error": "internal"}, status=500)
        if self.mode == "garbage":
            return web.Response(text="<html><body>Down for maintenance</body></html>", content_type="text/html")
        return web.json_response({"results": [PERSON] if request.query.get("phone") == NEW_E164 else []})


@pytest.fixture
async def crm(stack: Stack) -> AsyncIterator[FakeCrm]:
    """The fake CRM, and the connector to it on the test server's calls for this test only."""
    fake = FakeCrm()
    await fake.server.start_server()
    assert stack.services.calls is not None and stack.services.timeline is not None
    connector = RestCrmConnector(
        system="acme",
        url_template=str(fake.server.make_url("/api/people")) + "?phone={phone}",
        mapping=parse_mapping(
            {
                "record": "results.0",
                "name": ["first_name", "last_name"],
                "email": "emails.0",
                "external_id": "id",
                "language": "locale",
            }
        ),
        auth_value=SecretStr(SECRET),
        timeout_s=10,
    )
    enrichment = CallerEnrichment(
        connector, EnrichmentStore(stack.pool, stack.services.timeline), box_s=BOX_S, timeout_s=10
    )
    stack.services.calls.on_new_caller = enrichment.on_new_caller
    fake.enrichment = enrichment
    try:
        yield fake
    finally:
        stack.services.calls.on_new_caller = None
        await enrichment.close()
        await fake.server.close()


def seconds_between(earlier: dict[str, Any], later: dict[str, Any]) -> float:
    return (datetime.fromisoformat(later["at"]) - datetime.fromisoformat(earlier["at"])).total_seconds()


async def customer_by_phone(stack: Stack, number: str) -> dict[str, Any]:
    resp = await stack.client.get(
        "/api/customers", params={"phone": number}, headers={"Authorization": f"Bearer {stack.token}"}
    )
    assert resp.status == 200, await resp.text()
    found: dict[str, Any] = await resp.json()
    return found


async def test_an_unknown_caller_is_enriched_from_the_crm_and_greeted_by_name(stack: Stack, crm: FakeCrm) -> None:
    call, started = await place(stack, NEW_CALLER, "")
    interaction = started["interaction_id"]
    steps = await stack.hilo_events.expect_in_order(
        [
            ("customer.identified", {"interaction_id": interaction, "data__new": True}),
            ("customer.enriched", {"interaction_id": interaction, "data__source": "acme"}),
            # it came within the box: the flow knows the caller's name
            ("ivr.say", {"interaction_id": interaction, "data__node": "greet_known"}),
        ],
        within=10,
    )
    enriched = steps[1]
    assert enriched["data"] == {
        "source": "acme",
        "fields": {"display_name": "Lucía Pérez", "preferred_language": "es"},
        "identities": [
            {"kind": "email", "value": "lucia.perez@example.com"},
            {"kind": "external", "value": "acme:C-77"},
        ],
    }
    assert SECRET not in json.dumps(enriched)
    await hang_up(stack, call.caller_leg, interaction)
    assert crm.requests == [{"phone": NEW_E164, "auth": SECRET}]

    customer = await customer_by_phone(stack, NEW_E164)
    assert (customer["display_name"], customer["preferred_language"]) == ("Lucía Pérez", "es")
    assert {(i["kind"], i["value"]) for i in customer["identities"]} == {
        ("phone", NEW_E164),
        ("email", "lucia.perez@example.com"),
        ("external", "acme:C-77"),
    }
    resp = await stack.client.get(
        f"/api/customers/{customer['id']}/timeline", headers={"Authorization": f"Bearer {stack.token}"}
    )
    events = (await resp.json())["events"]
    assert [e["data"] for e in events if e["type"] == "customer.enriched"] == [enriched["data"]]

    # The same enrichment again (a retry, a second node) has no second effect.
    assert crm.enrichment is not None
    again = Interaction(uuid.UUID(interaction), uuid.UUID(enriched["customer_id"]), "voice")
    person = ExternalCustomer("acme", "Someone Else", "lucia.perez@example.com", "acme:C-77", "en")
    assert await crm.enrichment.store.apply(again, person) is None
    count = await stack.pool.fetchval(
        "SELECT count(*) FROM timeline_events WHERE type = 'customer.enriched' AND customer_id = $1::uuid",
        enriched["customer_id"],
    )
    assert count == 1
    assert (await customer_by_phone(stack, NEW_E164))["display_name"] == "Lucía Pérez"


async def test_a_crm_sleeping_5s_does_not_hold_up_the_call(stack: Stack, crm: FakeCrm) -> None:
    crm.delay_s = 5
    call, started = await place(stack, NEW_CALLER, "")
    interaction = started["interaction_id"]
    # Measured from interaction.started's arrival: identification, then the box at most, then the prompt.
    identified = await stack.hilo_events.expect(
        "customer.identified", within=SLACK_S, interaction_id=interaction, data__new=True
    )
    first_prompt = await stack.hilo_events.expect("ivr.say", within=BOX_S + SLACK_S, interaction_id=interaction)
    assert first_prompt["data"]["node"] == "greet"  # said at once, while the caller was being identified
    # After the greeting the flow went on without the name: it did not wait for the CRM's 5 s.
    by_name = await stack.hilo_events.expect("ivr.branch", within=5, interaction_id=interaction, data__node="greeting")
    assert by_name["data"]["next"] == "main_menu"
    # And by the database's clock.
    assert seconds_between(started, identified) < SLACK_S
    assert seconds_between(started, first_prompt) < BOX_S + SLACK_S
    assert seconds_between(started, by_name) < 5
    assert len(crm.requests) == 1

    # The enrichment lands later, while the caller is still in the menu.
    enriched = await stack.hilo_events.expect("customer.enriched", within=8, interaction_id=interaction)
    assert seconds_between(started, enriched) >= 5
    assert enriched["data"]["fields"]["display_name"] == "Lucía Pérez"
    ended = await hang_up(stack, call.caller_leg, interaction)
    assert ended["data"] == {"outcome": "abandoned", "hangup_by": "caller"}


async def test_enrichment_still_lands_after_the_caller_hung_up(stack: Stack, crm: FakeCrm) -> None:
    crm.delay_s = 2
    call, started = await place(stack, NEW_CALLER, "")
    interaction = started["interaction_id"]
    await stack.hilo_events.expect("ivr.say", within=BOX_S + SLACK_S, interaction_id=interaction)
    await hang_up(stack, call.caller_leg, interaction)
    enriched = await stack.hilo_events.expect("customer.enriched", within=5, interaction_id=interaction)
    assert enriched["data"]["fields"] == {"display_name": "Lucía Pérez", "preferred_language": "es"}
    assert (await customer_by_phone(stack, NEW_E164))["display_name"] == "Lucía Pérez"


@pytest.mark.parametrize("mode", ["error", "garbage"])
async def test_a_crm_answering_500_or_garbage_leaves_the_call_alone(
    stack: Stack, crm: FakeCrm, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    crm.mode = mode
    with caplog.at_level(logging.WARNING, logger="crm_bridge.connectors"):
        call, started = await place(stack, NEW_CALLER, "2")
        interaction = started["interaction_id"]
        await stack.hilo_events.expect_in_order(
            [
                ("customer.identified", {"interaction_id": interaction, "data__new": True}),
                ("ivr.say", {"interaction_id": interaction, "data__node": "greet"}),
                ("routing.queued", {"interaction_id": interaction, "data__queue": "support"}),
                ("agent.answered", {"interaction_id": interaction, "data__agent": "bob"}),
            ],
            within=30,
        )
        ended = await hang_up(stack, call.caller_leg, interaction)
    assert ended["data"] == {"outcome": "completed", "hangup_by": "caller"}
    assert len(crm.requests) == 1
    reason = "HTTP 500" if mode == "error" else "not JSON"
    assert any(reason in r.getMessage() for r in caplog.records if r.name == "crm_bridge.connectors")
    assert "600112233" not in caplog.text and SECRET not in caplog.text
    types = await stack.pool.fetch(
        "SELECT type FROM timeline_events WHERE interaction_id = $1::uuid AND type LIKE 'customer.%'", interaction
    )
    assert [r["type"] for r in types] == ["customer.identified"]
    assert (await customer_by_phone(stack, NEW_E164))["display_name"] is None


async def test_a_known_caller_is_never_sent_to_the_crm(stack: Stack, crm: FakeCrm) -> None:
    call, started = await place(stack, KNOWN_CALLER, "")
    interaction = started["interaction_id"]
    await stack.hilo_events.expect_in_order(
        [
            ("customer.identified", {"interaction_id": interaction, "data__new": False}),
            ("ivr.say", {"interaction_id": interaction, "data__node": "greet_known"}),
        ],
        within=10,
    )
    await hang_up(stack, call.caller_leg, interaction)
    assert crm.requests == []


async def test_an_identity_another_customer_owns_is_recorded_as_a_conflict_not_taken(
    stack: Stack, crm: FakeCrm
) -> None:
    resp = await stack.client.post(
        "/api/customers",
        json={"display_name": "L. Pérez", "identities": [{"kind": "email", "value": "lucia.perez@example.com"}]},
        headers={"Authorization": f"Bearer {stack.token}"},
    )
    assert resp.status == 201, await resp.text()
    owner = (await resp.json())["id"]

    call, started = await place(stack, NEW_CALLER, "")
    interaction = started["interaction_id"]
    enriched, conflict = await stack.hilo_events.expect_in_order(
        [
            ("customer.enriched", {"interaction_id": interaction}),
            ("customer.identity_conflict", {"interaction_id": interaction}),
        ],
        within=10,
    )
    await hang_up(stack, call.caller_leg, interaction)
    assert conflict["data"] == {
        "source": "acme",
        "kind": "email",
        "value": "lucia.perez@example.com",
        "owner_customer_id": owner,
    }
    assert enriched["data"]["identities"] == [{"kind": "external", "value": "acme:C-77"}]
    assert enriched["data"]["conflicts"] == [
        {"kind": "email", "value": "lucia.perez@example.com", "owner_customer_id": owner}
    ]
    # The e-mail stays with its owner; the caller got the rest.
    found = await stack.client.get(
        "/api/customers",
        params={"kind": "email", "value": "lucia.perez@example.com"},
        headers={"Authorization": f"Bearer {stack.token}"},
    )
    assert (await found.json())["id"] == owner
    caller = await customer_by_phone(stack, NEW_E164)
    assert caller["display_name"] == "Lucía Pérez"
    assert {i["kind"] for i in caller["identities"]} == {"phone", "external"}
