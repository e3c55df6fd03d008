"""A flow run one customer message at a time by replay (bridges/conversation_flow.py): replies already sent
are not sent again, outside effects are not repeated, secrets are not kept, menus carry their options."""

from __future__ import annotations

import datetime as dt
from typing import Any

from bridges.conversation_flow import TurnResult, mask_secret, menu_choices, run_turn
from bridges.messages import Choice, numbered
from flows.engine import FlowServices, HttpRequest
from flows.hours import Calendars
from flows.schema import Flow, Menu

MENU = {
    "kind": "menu",
    "prompt": "Sales or support?",
    "choices": {
        "1": {"label": "Sales", "next": "to_sales"},
        "2": {"label": "Technical support and repairs", "next": "to_support"},
    },
    "no_match": "Sorry, that is not a valid choice.",
    "no_input": "Sorry, I did not get your choice.",
    "retries": 2,
    "fallback": "bye",
}

DEMO = Flow.model_validate(
    {
        "flow": "demo",
        "start": "hello",
        "nodes": {
            "hello": {"kind": "say", "text": "Welcome to Hilo.", "next": "menu"},
            "menu": MENU,
            "to_sales": {"kind": "queue", "queue": "sales", "prompt": "An agent will be with you shortly."},
            "to_support": {"kind": "queue", "queue": "support", "priority": 2},
            "bye": {"kind": "hangup", "text": "Goodbye."},
        },
    }
)

ORDER = Flow.model_validate(
    {
        "flow": "order",
        "start": "ask",
        "nodes": {
            "ask": {
                "kind": "gather",
                "prompt": "Your order number?",
                "min_digits": 3,
                "max_digits": 6,
                "into": "order",
                "next": "status",
                "no_input": "bye",
            },
            "status": {
                "kind": "http",
                "method": "POST",
                "url": "https://orders.example/status",
                "json": {"order": "{{ order }}"},
                "map": {"state": "state"},
                "next": "tell",
                "on_error": "bye",
            },
            "tell": {"kind": "say", "text": "Order {{ order }} is {{ state }}.", "next": "who"},
            "who": {
                "kind": "lookup",
                "by": "variable",
                "variable": "order",
                "identity": "account",
                "into": "holder",
                "verify": {
                    "prompt": "Your PIN, please.",
                    "field": "pin",
                    "min_digits": 4,
                    "max_digits": 4,
                    "verified": "done",
                    "not_verified": "bye",
                },
                "not_found": "bye",
            },
            "done": {"kind": "hangup", "text": "Thank you {{ holder.name }}."},
            "bye": {"kind": "hangup", "text": "Goodbye."},
        },
    }
)


class Outside:
    """Live services that count their calls."""

    def __init__(self) -> None:
        self.http_calls: list[HttpRequest] = []
        self.verifications: list[tuple[str, str, str]] = []
        self.now = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)

    async def http(self, request: HttpRequest) -> Any:
        self.http_calls.append(request)
        return {"state": "shipped"}

    async def lookup(self, kind: str, value: str) -> dict[str, Any] | None:
        return {"id": "c-42", "name": "Ana"} if value == "12345" else None

    async def verify(self, customer_id: str, field: str, given: str) -> bool:
        self.verifications.append((customer_id, field, given))
        return given == "4321"

    def services(self) -> FlowServices:
        return FlowServices(
            lookup_customer=self.lookup,
            http=self.http,
            calendars=Calendars(),
            verify_customer=self.verify,
            clock=lambda: self.now,
        )


async def turn(flow: Flow, before: TurnResult | None, answer: str | None, outside: Outside) -> TurnResult:
    """The next turn after `before` (None: the conversation's first message)."""
    inputs = [] if before is None else [*before.inputs, answer]
    return await run_turn(
        flow,
        flows={flow.flow: flow},
        inputs=inputs,
        new_inputs=0 if before is None else 1,
        journal=[] if before is None else before.journal,
        already_sent=0 if before is None else before.outputs,
        services=outside.services(),
        channel="whatsapp",
        caller_number="+34600111222",
        customer=None,
    )


async def test_the_first_message_gets_the_greeting_and_the_menu_with_its_options() -> None:
    first = await turn(DEMO, None, None, Outside())
    assert first.outcome is None  # waiting for the customer's choice
    assert [r.text for r in first.replies] == ["Welcome to Hilo.", "Sales or support?"]
    assert first.replies[0].choices == ()
    assert first.replies[1].choices == (Choice("1", "Sales"), Choice("2", "Technical support an"))
    assert [t for t, _ in first.events] == ["ivr.say", "ivr.menu"]


async def test_an_answer_by_label_continues_without_repeating_anything() -> None:
    outside = Outside()
    first = await turn(DEMO, None, None, outside)
    second = await turn(DEMO, first, "sales", outside)  # the label, any case
    assert second.outcome is not None and (second.outcome.action, second.outcome.target) == ("queue", "sales")
    assert [r.text for r in second.replies] == ["An agent will be with you shortly."]
    # the greeting and the menu of the first turn are not on the timeline twice
    assert [t for t, _ in second.events] == ["ivr.input", "ivr.outcome"]
    assert second.events[0][1]["digit"] == "1"


async def test_a_wrong_answer_gets_no_match_and_the_menu_again_then_a_button_id_works() -> None:
    outside = Outside()
    first = await turn(DEMO, None, None, outside)
    wrong = await turn(DEMO, first, "pizza", outside)
    assert wrong.outcome is None
    assert [r.text for r in wrong.replies] == ["Sorry, that is not a valid choice.", "Sales or support?"]
    assert wrong.replies[1].choices[0] == Choice("1", "Sales")
    right = await turn(DEMO, wrong, "2", outside)  # the button's id is the menu key
    assert right.outcome is not None and (right.outcome.target, right.outcome.priority) == ("support", 2)
    assert right.replies == []
    assert right.inputs == ["pizza", "2"]


async def test_outside_calls_are_not_repeated_by_replay_and_secrets_are_not_kept() -> None:
    outside = Outside()
    first = await turn(ORDER, None, None, outside)
    assert [r.text for r in first.replies] == ["Your order number?"]
    second = await turn(ORDER, first, "12345", outside)
    assert [r.text for r in second.replies] == ["Order 12345 is shipped.", "Your PIN, please."]
    assert len(outside.http_calls) == 1
    third = await turn(ORDER, second, "4321", outside)
    assert len(outside.http_calls) == 1  # replayed from the journal, not called again
    assert outside.verifications == [("c-42", "pin", "4321")]
    assert third.outcome is not None and third.outcome.action == "hangup"
    assert [r.text for r in third.replies] == ["Thank you Ana."]
    assert third.verified == ["c-42"]
    assert third.inputs == ["12345", "0000"]  # the PIN is not kept
    assert 1 in third.secret_inputs
    # the stored run replayed (as after a restart): the same end, with the masked PIN, calling nobody
    replay = await run_turn(
        ORDER,
        flows={"order": ORDER},
        inputs=third.inputs,
        new_inputs=0,
        journal=third.journal,
        already_sent=third.outputs,
        services=outside.services(),
        channel="whatsapp",
        caller_number="+34600111222",
        customer=None,
    )
    assert replay.outcome is not None and replay.outcome.node == "done"
    assert replay.replies == [] and replay.events == []
    assert len(outside.http_calls) == 1 and len(outside.verifications) == 1


async def test_the_clock_is_replayed_so_a_later_turn_sees_the_time_the_flow_saw() -> None:
    outside = Outside()
    first = await turn(DEMO, None, None, outside)
    outside.now = outside.now + dt.timedelta(days=3)
    second = await turn(DEMO, first, "1", outside)
    clock = [e["v"] for e in second.journal if e["k"] == "clock"]
    assert clock[0] == "2026-12-03T10:00:00+00:00"  # the first turn's steps keep their moment
    assert clock[-1].startswith("2026-12-06")  # the new steps read the clock now


async def test_a_journal_that_does_not_fit_the_flow_ends_it_with_an_error() -> None:
    outside = Outside()
    first = await turn(DEMO, None, None, outside)
    broken = TurnResult(None, [], [], [{"k": "http", "v": {}}], first.outputs, [])
    result = await turn(DEMO, broken, "1", outside)
    assert result.outcome is not None and result.outcome.action == "error"
    assert "no longer runs" in (result.outcome.reason or "")


def test_secret_masks_keep_shape_not_digits() -> None:
    assert mask_secret("12 34#") == "0000#"
    assert mask_secret("12a4") == "xxxx"


def test_numbered_options_and_choice_titles() -> None:
    menu = DEMO.nodes["menu"]
    assert isinstance(menu, Menu)
    choices = menu_choices(menu)
    assert all(len(c.title) <= 20 for c in choices)
    assert numbered("Pick one:", choices) == "Pick one:\n1. Sales\n2. Technical support an"
    assert numbered("Plain", []) == "Plain"


# A menu whose keys are not 1..n in order: what the customer reads is what the flow matches.
GAPPED = Flow.model_validate(
    {
        "flow": "gapped",
        "start": "menu",
        "nodes": {
            "menu": {
                **MENU,
                "choices": {
                    "3": {"label": "Billing questions and invoices", "next": "to_sales"},
                    "7": {"label": "Technical support", "next": "to_support"},
                    "0": {"label": "Operator", "next": "bye"},
                },
            },
            "to_sales": {"kind": "queue", "queue": "sales", "prompt": "Billing it is."},
            "to_support": {"kind": "queue", "queue": "support", "prompt": "Support it is."},
            "bye": {"kind": "hangup", "text": "Goodbye."},
        },
    }
)


async def test_a_menu_keyed_out_of_order_is_numbered_and_answered_by_its_keys_and_titles() -> None:
    outside = Outside()
    first = await turn(GAPPED, None, None, outside)
    [menu] = first.replies
    assert numbered(menu.text, menu.choices) == (
        "Sales or support?\n3. Billing questions an\n7. Technical support\n0. Operator"
    )
    by_key = await turn(GAPPED, first, "7", outside)
    assert by_key.outcome is not None and by_key.outcome.target == "support"
    # The title as shown (the label cut to a button's 20 characters), in any case, selects it too.
    by_title = await turn(GAPPED, first, "billing QUESTIONS an", outside)
    assert by_title.outcome is not None and by_title.outcome.target == "sales"
    by_label = await turn(GAPPED, first, "operator", outside)
    assert by_label.outcome is not None and by_label.outcome.action == "hangup"
    # A position is no key: "1" is the first line's position, and matches nothing.
    wrong = await turn(GAPPED, first, "1", outside)
    assert wrong.outcome is None and wrong.replies[0].text == "Sorry, that is not a valid choice."
