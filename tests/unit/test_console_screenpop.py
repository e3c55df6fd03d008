"""Building the screen-pop from plain data: the events come from a real run of a flow (the engine with a
text session), the customer, history and cases are fixtures shaped like the database rows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from console.screenpop import MASK, FlowFacts, assemble, flow_facts, ivr_path, shown_variables, verified_by
from flows.engine import FlowContext, FlowServices, run_flow
from flows.schema import Flow
from flows.text_session import TextSession

CUSTOMER = uuid.UUID("00000000-0000-0000-0000-0000000000aa")
OTHER = uuid.UUID("00000000-0000-0000-0000-0000000000bb")

BILLING = Flow.model_validate(
    {
        "flow": "billing",
        "start": "main",
        "nodes": {
            "main": {
                "kind": "menu",
                "prompt": "1 invoices, 2 anything else",
                "choices": {"1": {"label": "Invoices", "next": "account"}, "2": {"label": "Other", "next": "q"}},
                "no_match": "bad",
                "no_input": "silence",
                "retries": 3,
                "fallback": "q",
            },
            "account": {
                "kind": "gather",
                "min_digits": 4,
                "max_digits": 10,
                "into": "account",
                "next": "card",
                "no_input": "q",
            },
            "card": {
                "kind": "gather",
                "min_digits": 4,
                "max_digits": 4,
                "into": "card_pin",
                "secret": True,
                "next": "holder",
                "no_input": "q",
            },
            "holder": {
                "kind": "lookup",
                "by": "variable",
                "variable": "account",
                "identity": "external",
                "into": "account_holder",
                "verify": {"prompt": "date of birth", "field": "birth_date", "verified": "q", "not_verified": "q"},
                "not_found": "q",
            },
            "q": {"kind": "queue", "queue": "support"},
        },
    }
)


async def run_billing(
    inputs: list[str | None], holder: uuid.UUID = CUSTOMER
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ivr.* events (as the timeline stores them) and the collected variables of one run."""
    events: list[dict[str, Any]] = []

    async def record(type_: str, data: dict[str, Any]) -> None:
        events.append({"type": type_, "at": "2026-01-05T10:00:00+00:00", "data": data})

    async def lookup(kind: str, value: str) -> dict[str, Any] | None:
        return {"id": str(holder), "name": "Ana García"} if value == "123456" else None

    async def verify(customer_id: str, field: str, given: str) -> bool:
        return given == "01021980"

    outcome = await run_flow(
        BILLING,
        TextSession(inputs),
        FlowContext(
            caller_number="+34911222333",
            record=record,
            services=FlowServices(lookup_customer=lookup, verify_customer=verify),
        ),
    )
    # as ivr/inbound.py keeps them on the interaction
    collected = {k: v for k, v in outcome.variables.items() if k not in ("caller", "customer")}
    return events, {"flow": outcome.flow, "node": outcome.node, "variables": collected}


def interaction(ivr: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": uuid.UUID("00000000-0000-0000-0000-000000000001"),
        "customer_id": CUSTOMER,
        "channel": "voice",
        "direction": "inbound",
        "state": "queued",
        "dialed": "100",
        "queue": "support",
        "started_at": datetime(2026, 1, 5, 10, 0, tzinfo=UTC),
        "context": {"caller_number": "+34911222333", "dialed": "100", "queue": "support", "ivr": ivr},
    }


ANA = {
    "id": str(CUSTOMER),
    "display_name": "Ana García",
    "identities": [{"kind": "phone", "value": "+34911222333"}, {"kind": "email", "value": "ana@example.com"}],
}
IDENTIFIED = {
    "type": "customer.identified",
    "at": "2026-01-05T10:00:00+00:00",
    "data": {"by": "caller_number", "new": False},
}


def test_flow_facts_know_secrets_menu_labels_and_lookups() -> None:
    facts = flow_facts({"billing": BILLING})
    assert facts.secret_variables == {"card_pin"}
    assert facts.menu_labels[("billing", "main")] == {"1": "Invoices", "2": "Other"}
    assert facts.lookups[("billing", "holder")] == ("account_holder", "variable")


async def test_the_pop_tells_the_callers_way_through_the_ivr_with_secrets_hidden() -> None:
    events, ivr = await run_billing(["7", "1", "123456#", "4321#", "01021980#"])
    facts = flow_facts({"billing": BILLING})
    pop = assemble(
        interaction=interaction(ivr),
        customer=ANA,
        events=[IDENTIFIED, *events],
        history=[
            {
                "id": OTHER,
                "channel": "whatsapp",
                "direction": "inbound",
                "started_at": datetime(2026, 1, 2, 9, 0, tzinfo=UTC),
                "ended_at": datetime(2026, 1, 2, 9, 5, tzinfo=UTC),
                "outcome": "completed",
                "queue": "support",
                "agent_id": "bob",
                "disposition": "resolved",
            }
        ],
        cases=[{"id": OTHER, "subject": "Refund for invoice 77", "status": "open", "updated_at": None}],
        agent_id="bob",
        facts=facts,
        now=datetime(2026, 1, 5, 10, 1, tzinfo=UTC),
    )
    assert pop["type"] == "screenpop" and pop["agent_id"] == "bob"
    assert pop["interaction_id"] == "00000000-0000-0000-0000-000000000001"
    assert pop["call"]["caller_number"] == "+34911222333" and pop["call"]["queue"] == "support"
    customer = pop["customer"]
    assert customer["name"] == "Ana García" and customer["new"] is False
    assert customer["identities"] == ANA["identities"]  # agents see identities in full
    assert customer["verified"] is True and customer["verified_by"] == "birth_date"

    steps = [(s["node"], s["summary"]) for s in pop["ivr"]["path"]]
    assert ("main", "pressed 7 (not an option)") in steps
    assert ("main", "pressed 1 (Invoices)") in steps
    assert ("account", "entered 123456 as account") in steps
    assert ("card", "entered **** as card_pin") in steps  # masked by the engine
    assert ("holder", "looked up by variable into account_holder: found") in steps
    assert ("holder", "verification of birth_date, attempt 1: passed") in steps
    assert steps[-1] == ("q", "queue to support")
    assert all(s["type"].startswith("ivr.") for s in pop["ivr"]["path"])  # customer.identified is not a step

    variables = pop["ivr"]["variables"]
    assert variables["account"] == "123456"
    assert variables["card_pin"] == MASK  # the gather kept it in clear: the pop does not show it
    assert variables["account_holder"]["verified"] is True
    assert "01021980" not in repr(pop)  # the verification answer is never anywhere

    assert pop["history"] == [
        {
            "interaction_id": str(OTHER),
            "channel": "whatsapp",
            "direction": "inbound",
            "started_at": "2026-01-02T09:00:00+00:00",
            "ended_at": "2026-01-02T09:05:00+00:00",
            "outcome": "completed",
            "queue": "support",
            "agent_id": "bob",
            "disposition": "resolved",
        }
    ]
    assert pop["open_cases"] == [
        {"id": str(OTHER), "subject": "Refund for invoice 77", "status": "open", "updated_at": None}
    ]


async def test_a_verification_for_another_customer_does_not_verify_the_caller() -> None:
    events, ivr = await run_billing(["1", "123456#", "4321#", "01021980#"], holder=OTHER)
    facts = flow_facts({"billing": BILLING})
    assert verified_by({str(CUSTOMER)}, ivr["variables"], events, facts) is None
    assert verified_by({str(OTHER)}, ivr["variables"], events, facts) == "birth_date"


async def test_a_wrong_answer_leaves_the_caller_unverified() -> None:
    events, ivr = await run_billing(["1", "123456#", "4321#", "11111111#", "22222222#", "33333333#"])
    facts = flow_facts({"billing": BILLING})
    assert verified_by({str(CUSTOMER)}, ivr["variables"], events, facts) is None
    summaries = [s["summary"] for s in ivr_path(events, facts)]
    assert "verification of birth_date, attempt 3: wrong answer" in summaries
    assert "verification of birth_date failed" in summaries


def test_a_verified_lookup_by_caller_number_verifies_the_caller() -> None:
    facts = FlowFacts(lookups={("f", "who"): ("customer", "caller_number")})
    events = [
        {"type": "ivr.verify", "data": {"flow": "f", "node": "who", "field": "pin", "attempt": 1, "result": "match"}}
    ]
    assert verified_by({str(CUSTOMER)}, {}, events, facts) == "pin"


def test_an_unknown_caller_pops_with_what_there_is() -> None:
    pop = assemble(
        interaction={**interaction({}), "context": {"caller_number": None}},
        customer=None,
        events=[{"type": "customer.identified", "at": "x", "data": {"by": "anonymous", "new": True}}],
        history=[],
        cases=[],
        agent_id="alice",
        facts=FlowFacts(),
    )
    assert pop["customer"]["name"] is None and pop["customer"]["new"] is True
    assert pop["customer"]["verified"] is False and pop["customer"]["identified_by"] == "anonymous"
    assert pop["ivr"] == {"flow": None, "ended_at_node": None, "path": [], "variables": {}}


def test_a_caller_the_store_has_not_identified_yet_pops_as_identifying_until_it_is() -> None:
    degraded = {"type": "call.degraded", "at": "x", "data": {"part": "store", "what": "identify"}}
    late = {"type": "customer.identified", "at": "y", "data": {"by": "caller_number", "new": False, "late": True}}
    common: dict[str, Any] = {
        "interaction": interaction({}),
        "customer": None,
        "history": [],
        "cases": [],
        "agent_id": "alice",
        "facts": FlowFacts(),
    }
    before = assemble(events=[degraded], **common)
    assert before["customer"]["identifying"] is True and before["customer"]["identified_by"] is None
    after = assemble(events=[degraded, late], **common)
    assert after["customer"]["identifying"] is False and after["customer"]["identified_by"] == "caller_number"


def test_shown_variables_mask_only_secrets() -> None:
    facts = FlowFacts(secret_variables=frozenset({"pin"}))
    assert shown_variables({"pin": "1234", "tier": "gold"}, facts) == {"pin": MASK, "tier": "gold"}
