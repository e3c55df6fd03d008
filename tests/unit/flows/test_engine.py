from typing import Any

import pytest

from ivr.flows.engine import FlowContext, HttpCallFailed, HttpRequest, Outcome, Services, run_flow
from ivr.flows.schema import Flow
from ivr.flows.text_session import TextSession

Events = list[tuple[str, dict[str, Any]]]


def flow(nodes: dict[str, Any], start: str = "a", flow_id: str = "t") -> Flow:
    return Flow.model_validate({"flow": flow_id, "start": start, "nodes": nodes})


async def run(f: Flow, inputs: list[str | None] | None = None, **context: Any) -> tuple[Outcome, TextSession, Events]:
    events: Events = []

    async def record(type_: str, data: dict[str, Any]) -> None:
        events.append((type_, data))

    session = TextSession(inputs or [])
    outcome = await run_flow(f, session, FlowContext(caller_number="+34911222333", record=record, **context))
    return outcome, session, events


BYE = {"kind": "hangup"}
MENU = {
    "kind": "menu",
    "prompt": "1 sales, 2 support",
    "choices": {"1": {"label": "Sales", "next": "s"}, "2": {"label": "Support", "next": "p"}},
    "no_match": "bad",
    "no_input": "silence",
    "retries": 2,
    "fallback": "bye",
}


async def test_say_and_hangup_with_templates() -> None:
    f = flow(
        {
            "a": {"kind": "say", "text": "Hi {{ customer.name }} from {{ caller.number }}", "next": "bye"},
            "bye": {"kind": "hangup", "text": "Bye {{ customer.known }}"},
        }
    )
    outcome, session, events = await run(f, customer={"id": "c1", "name": "Ana"})
    assert session.output == ["Hi Ana from +34911222333", "Bye True"]
    assert (outcome.action, outcome.node, outcome.steps) == ("hangup", "bye", 2)
    assert events[-1] == ("ivr.outcome", {"flow": "t", "node": "bye", "action": "hangup", "target": None})


async def test_play_sends_the_text_alternative() -> None:
    f = flow({"a": {"kind": "play", "file": "hilo/welcome", "text": "Welcome", "next": "bye"}, "bye": BYE})
    _, session, events = await run(f)
    assert session.output == ["Welcome"]
    assert events[0] == ("ivr.play", {"flow": "t", "node": "a", "file": "hilo/welcome"})


@pytest.mark.parametrize(
    ("answers", "queue", "heard"),
    [
        (["2"], "support", ["1 sales, 2 support"]),
        (["  SALES "], "sales", ["1 sales, 2 support"]),
        (["9", "support"], "support", ["1 sales, 2 support", "bad", "1 sales, 2 support"]),
        ([None, "1"], "sales", ["1 sales, 2 support", "silence", "1 sales, 2 support"]),
    ],
)
async def test_menu_by_key_or_label(answers: list[str | None], queue: str, heard: list[str]) -> None:
    f = flow(
        {"a": MENU, "s": {"kind": "queue", "queue": "sales"}, "p": {"kind": "queue", "queue": "support"}, "bye": BYE}
    )
    outcome, session, _ = await run(f, answers)
    assert (outcome.action, outcome.target) == ("queue", queue)
    assert session.output == heard


async def test_menu_falls_back_after_retries() -> None:
    f = flow({"a": MENU, "s": BYE, "p": BYE, "bye": {"kind": "voicemail", "prompt": "leave a message"}})
    outcome, session, events = await run(f, ["7", None])
    assert outcome.action == "voicemail"
    assert session.output[-1] == "leave a message"
    assert ("ivr.menu_failed", {"flow": "t", "node": "a", "next": "bye"}) in events


async def test_gather_digits_terminator_and_no_input() -> None:
    gather = {"kind": "gather", "prompt": "PIN?", "min_digits": 4, "max_digits": 6, "into": "pin", "secret": True}
    f = flow({"a": gather | {"next": "ok", "no_input": "none"}, "ok": {"kind": "transfer", "to": "200"}, "none": BYE})
    outcome, _, events = await run(f, ["1234#"])
    assert (outcome.action, outcome.target, outcome.variables["pin"]) == ("transfer", "200", "1234")
    assert ("ivr.input", {"flow": "t", "node": "a", "digits": "****", "into": "pin"}) in events
    for bad in [None, "12", "1234567", "12ab"]:
        outcome, _, _ = await run(f, [bad])
        assert outcome.node == "none", bad


@pytest.mark.parametrize(
    ("condition", "matches"),
    [
        ({"var": "customer.known", "equals": True}, True),
        ({"var": "customer.known", "equals": False}, False),
        ({"var": "tier", "not_equals": "gold"}, True),
        ({"var": "tier", "in": ["silver", "bronze"]}, True),
        ({"var": "tier", "in": ["gold"]}, False),
        ({"var": "customer.name", "exists": True}, True),
        ({"var": "nothing.here", "exists": False}, True),
        ({"var": "nothing", "equals": None}, False),
    ],
)
async def test_branch_conditions(condition: dict[str, Any], matches: bool) -> None:
    f = flow(
        {
            "a": {"kind": "set", "variables": {"tier": "silver"}, "next": "b"},
            "b": {"kind": "branch", "when": [{**condition, "next": "yes"}], "otherwise": "no"},
            "yes": {"kind": "hangup", "text": "yes"},
            "no": {"kind": "hangup", "text": "no"},
        }
    )
    outcome, _, _ = await run(f, customer={"id": "c", "name": "Ana"})
    assert outcome.node == ("yes" if matches else "no")


async def test_set_renders_templates_and_keeps_numbers() -> None:
    f = flow(
        {
            "a": {"kind": "set", "variables": {"who": "{{ caller.number }}!", "n": 3, "flag": True}, "next": "bye"},
            "bye": BYE,
        }
    )
    outcome, _, _ = await run(f)
    assert {k: outcome.variables[k] for k in ("who", "n", "flag")} == {"who": "+34911222333!", "n": 3, "flag": True}


async def test_lookup_by_caller_and_by_variable() -> None:
    calls: list[tuple[str, str]] = []

    async def lookup(kind: str, value: str) -> dict[str, Any] | None:
        calls.append((kind, value))
        return {"id": "42", "name": "Grace"} if value == "+34911222333" else None

    f = flow(
        {
            "a": {"kind": "lookup", "found": "b", "not_found": "bye"},
            "b": {"kind": "set", "variables": {"acct": "777"}, "next": "c"},
            "c": {
                "kind": "lookup",
                "by": "variable",
                "variable": "acct",
                "identity": "account",
                "into": "holder",
                "found": "bye",
                "not_found": "miss",
            },
            "bye": BYE,
            "miss": {"kind": "hangup", "text": "unknown {{ holder.known }} {{ customer.name }}"},
        }
    )
    outcome, session, _ = await run(f, services=Services(lookup_customer=lookup))
    assert calls == [("phone", "+34911222333"), ("account", "777")]
    assert session.output == ["unknown False Grace"]
    assert outcome.variables["customer"] == {"id": "42", "name": "Grace", "known": True}


async def test_http_maps_answer_and_errors() -> None:
    requests: list[HttpRequest] = []

    async def http(request: HttpRequest) -> Any:
        requests.append(request)
        if "fail" in request.url:
            raise HttpCallFailed("503")
        return {"order": {"items": [{"state": "shipped"}]}}

    def nodes(url: str) -> dict[str, Any]:
        return {
            "a": {
                "kind": "http",
                "method": "POST",
                "url": url,
                "json": {"phone": "{{ caller.number }}", "n": [1, "{{ 1 + 1 }}"]},
                "headers": {"X-Caller": "{{ caller.number }}"},
                "map": {"state": "order.items.0.state", "nope": "order.missing"},
                "next": "ok",
                "on_error": "err",
            },
            "ok": {"kind": "hangup", "text": "{{ state }}"},
            "err": {"kind": "hangup", "text": "error"},
        }

    outcome, session, _ = await run(flow(nodes("https://crm.example/orders")), services=Services(http=http))
    assert session.output == ["shipped"] and outcome.variables["nope"] is None
    assert requests[0].json == {"phone": "+34911222333", "n": [1, "2"]}
    assert requests[0].headers == {"X-Caller": "+34911222333"}
    _, session, _ = await run(flow(nodes("https://crm.example/fail")), services=Services(http=http))
    assert session.output == ["error"]


@pytest.mark.parametrize("is_open", [True, False])
async def test_hours(is_open: bool) -> None:
    async def check(calendar: str) -> bool:
        assert calendar == "support"
        return is_open

    f = flow(
        {
            "a": {"kind": "hours", "calendar": "support", "open": "in", "closed": "out"},
            "in": {"kind": "queue", "queue": "support", "priority": 3, "skills": ["es"]},
            "out": {"kind": "callback", "prompt": "We will call you back."},
        }
    )
    outcome, _, _ = await run(f, services=Services(is_open=check))
    if is_open:
        assert (outcome.action, outcome.priority, outcome.skills) == ("queue", 3, ["es"])
    else:
        assert (outcome.action, outcome.target) == ("callback", "+34911222333")


async def test_goto_other_flow_and_node() -> None:
    other = flow({"x": {"kind": "say", "text": "x", "next": "y"}, "y": {"kind": "hangup", "text": "y"}}, "x", "other")
    f = flow({"a": {"kind": "goto", "flow": "other", "node": "y"}})
    outcome, session, events = await run(f, flows={"other": other})
    assert (outcome.flow, outcome.node, session.output) == ("other", "y", ["y"])
    assert ("ivr.goto", {"flow": "t", "node": "a", "to_flow": "other", "to_node": "y"}) in events
    outcome, _, _ = await run(f)
    assert outcome.action == "error" and "not loaded" in (outcome.reason or "")


async def test_max_steps_stops_a_loop() -> None:
    f = flow({"a": {"kind": "say", "text": "again", "next": "a"}})
    outcome, session, _ = await run(f, max_steps=5)
    assert outcome.action == "error" and len(session.output) == 5


async def test_templates_are_sandboxed_and_strict() -> None:
    for text in ["{{ caller.__class__.__mro__ }}", "{{ nobody }}", "{{ ''.__class__ }}"]:
        outcome, session, events = await run(flow({"a": {"kind": "say", "text": text, "next": "a"}}))
        assert outcome.action == "error", text
        assert session.output == []
        assert events[-1][0] == "ivr.flow_error"
