import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from flows.engine import FlowContext, FlowServices, HttpCallFailed, HttpRequest, Outcome, run_flow
from flows.hours import Calendars
from flows.schema import Condition, Flow
from flows.text_session import TextSession

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
    outcome, session, _ = await run(f, services=FlowServices(lookup_customer=lookup))
    assert calls == [("phone", "+34911222333"), ("account", "777")]
    assert session.output == ["unknown False Grace"]
    assert outcome.variables["customer"] == {"id": "42", "name": "Grace", "known": True, "verified": False}


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

    outcome, session, _ = await run(flow(nodes("https://crm.example/orders")), services=FlowServices(http=http))
    assert session.output == ["shipped"] and outcome.variables["nope"] is None
    assert requests[0].json == {"phone": "+34911222333", "n": [1, "2"]}
    assert requests[0].headers == {"X-Caller": "+34911222333"}
    _, session, _ = await run(flow(nodes("https://crm.example/fail")), services=FlowServices(http=http))
    assert session.output == ["error"]


HOURS = Calendars.model_validate(
    {
        "calendars": {
            "support": {
                "timezone": "Europe/Madrid",
                "weekly": {"mon-fri": ["08:00-20:00"]},
                "holidays": [{"date": "2026-12-25", "name": "Navidad"}],
            }
        }
    }
)


def clock(iso: str) -> Callable[[], dt.datetime]:
    return lambda: dt.datetime.fromisoformat(iso)


@pytest.mark.parametrize(
    ("moment", "is_open", "holiday"),
    [
        ("2026-11-23T07:00:00+00:00", True, None),  # Monday 08:00 in Madrid
        ("2026-11-23T06:59:00+00:00", False, None),
        ("2026-11-28T12:00:00+00:00", False, None),  # Saturday
        ("2026-12-25T10:00:00+01:00", False, "Navidad"),  # Friday, but a holiday
    ],
)
async def test_hours_by_calendar_and_clock(moment: str, is_open: bool, holiday: str | None) -> None:
    f = flow(
        {
            "a": {"kind": "hours", "calendar": "support", "open": "in", "closed": "out"},
            "in": {"kind": "queue", "queue": "support", "priority": 3, "skills": ["es"]},
            "out": {"kind": "callback", "prompt": "We will call you back."},
        }
    )
    outcome, _, events = await run(f, services=FlowServices(calendars=HOURS, clock=clock(moment)))
    if is_open:
        assert (outcome.action, outcome.priority, outcome.skills) == ("queue", 3, ["es"])
    else:
        assert (outcome.action, outcome.target) == ("callback", "+34911222333")
    expected = {"flow": "t", "node": "a", "calendar": "support", "open": is_open}
    assert ("ivr.hours", expected | ({"holiday": holiday} if holiday else {})) in events


async def test_hours_with_an_unknown_calendar_is_a_flow_error() -> None:
    f = flow({"a": {"kind": "hours", "calendar": "night", "open": "b", "closed": "b"}, "b": BYE})
    outcome, _, events = await run(f)  # the default FlowServices have no calendars
    assert outcome.action == "error" and "calendar 'night' is not in hours.yaml (known: none)" in (outcome.reason or "")
    assert events[-1][0] == "ivr.flow_error"


async def test_now_variables_follow_the_flow_time_zone() -> None:
    nodes = {
        "a": {"kind": "say", "text": "{{ now.weekday }} {{ now.date }} {{ now.time }} {{ now.hour }}", "next": "b"}
    }
    nodes["b"] = BYE
    madrid = Flow.model_validate({"flow": "t", "start": "a", "timezone": "Europe/Madrid", "nodes": nodes})
    _, session, _ = await run(madrid, services=FlowServices(clock=clock("2026-11-23T23:05:00+00:00")))
    assert session.output == ["tue 2026-11-24 00:05 0"]
    _, session, _ = await run(flow(nodes), services=FlowServices(clock=clock("2026-11-23T23:05:00+00:00")))
    assert session.output == ["mon 2026-11-23 23:05 23"]  # no timezone: UTC


async def test_a_clock_without_time_zone_is_a_flow_error() -> None:
    outcome, _, _ = await run(flow({"a": BYE}), services=FlowServices(clock=lambda: dt.datetime(2026, 1, 1)))
    assert outcome.action == "error" and "without a time zone" in (outcome.reason or "")


@pytest.mark.parametrize(
    ("condition", "matches"),
    [
        ({"var": "now.hour", "gte": 14}, True),
        ({"var": "now.hour", "gte": 15}, False),
        ({"var": "now.hour", "lt": 15}, True),
        ({"var": "now.hour", "lt": 14}, False),
        ({"var": "now.time", "gte": "14:05"}, True),
        ({"var": "now.time", "gte": "14:06"}, False),
        ({"var": "now.time", "gte": "09:00", "lt": "14:06"}, True),  # both: a range
        ({"var": "now.time", "gte": "09:00", "lt": "14:05"}, False),
        ({"var": "now.date", "gte": "2026-11-23", "lt": "2026-11-24"}, True),
        ({"var": "amount", "gte": 100}, True),  # digits typed are text: compared as a number with a number
        ({"var": "amount", "lt": 99.5}, False),
        ({"var": "amount", "gte": "2"}, False),  # text with text: "120" < "2"
        ({"var": "caller.number", "gte": "+34", "lt": "+35"}, True),  # a Spanish number
        ({"var": "customer.name", "gte": 1}, False),  # text with a number: false, not an error
        ({"var": "missing", "lt": 5}, False),
        ({"var": "flag", "lt": 5}, False),  # booleans are not numbers
    ],
)
async def test_comparisons(condition: dict[str, Any], matches: bool) -> None:
    f = flow(
        {
            "a": {"kind": "set", "variables": {"amount": "120", "flag": True}, "next": "b"},
            "b": {"kind": "branch", "when": [{**condition, "next": "yes"}], "otherwise": "no"},
            "yes": {"kind": "hangup", "text": "yes"},
            "no": {"kind": "hangup", "text": "no"},
        }
    )
    services = FlowServices(clock=clock("2026-11-23T14:05:30+00:00"))
    outcome, _, _ = await run(f, customer={"id": "c", "name": "Ana"}, services=services)
    assert outcome.node == ("yes" if matches else "no")


@pytest.mark.parametrize(
    ("condition", "error"),
    [
        (
            {"var": "x", "equals": 1, "gte": 2},
            "exactly one of equals, not_equals, in, exists, or gte/lt (got equals, gte)",
        ),
        ({"var": "x"}, "(got none)"),
        ({"var": "x", "gte": None}, "gte needs a number or a text"),
        ({"var": "x", "gte": 1, "lt": "09:00"}, "must both be numbers or both be texts"),
        ({"var": "x", "lt": True}, "Input should be a valid"),
    ],
)
def test_condition_errors(condition: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(error)):
        Condition.model_validate({**condition, "next": "n"})


PIN_FLOW = {
    "a": {
        "kind": "lookup",
        "verify": {
            "prompt": "PIN?",
            "field": "pin",
            "min_digits": 4,
            "max_digits": 4,
            "attempts": 3,
            "retry": "Wrong.",
            "verified": "ok",
            "not_verified": "locked",
        },
        "not_found": "nobody",
    },
    "ok": {"kind": "hangup", "text": "verified {{ customer.verified }}"},
    "locked": {"kind": "hangup", "text": "locked {{ customer.verified }}"},
    "nobody": {"kind": "hangup", "text": "who?"},
}


class FakeStore:
    """Customer c1 has PIN 4321; remembers what was asked, as the PostgreSQL side would be asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str]] = []

    async def lookup(self, kind: str, value: str) -> dict[str, Any] | None:
        return {"id": "c1", "name": "Ana", "verified": True} if value == "+34911222333" else None

    async def verify(self, customer_id: str, field: str, given: str) -> bool:
        self.asked.append((customer_id, field, given))
        return (customer_id, field, given) == ("c1", "pin", "4321")


async def test_verify_succeeds_on_the_second_attempt() -> None:
    store = FakeStore()
    shown: list[str | None] = []
    events: Events = []

    async def record(type_: str, data: dict[str, Any]) -> None:
        events.append((type_, data))

    session = TextSession(["1111#", "4321#"], on_input=shown.append)
    services = FlowServices(lookup_customer=store.lookup, verify_customer=store.verify)
    outcome = await run_flow(
        flow(PIN_FLOW), session, FlowContext(caller_number="+34911222333", services=services, record=record)
    )
    assert (outcome.node, session.output) == ("ok", ["PIN?", "Wrong.", "PIN?", "verified True"])
    assert store.asked == [("c1", "pin", "1111"), ("c1", "pin", "4321")]
    assert shown == ["*****", "*****"]  # the transcript never holds the digits
    verifies = [data for type_, data in events if type_ == "ivr.verify"]
    assert verifies == [
        {"flow": "t", "node": "a", "field": "pin", "attempt": 1, "result": "no_match"},
        {"flow": "t", "node": "a", "field": "pin", "attempt": 2, "result": "match"},
    ]
    assert "1111" not in repr(events) and "4321" not in repr(events)
    assert "4321" not in repr(outcome.as_dict())
    assert outcome.variables["customer"]["verified"] is True


async def test_verify_locks_out_after_the_attempts() -> None:
    store = FakeStore()
    inputs: list[str | None] = ["1111", None, "12", "4321"]  # wrong, silence, too short: three attempts used
    services = FlowServices(lookup_customer=store.lookup, verify_customer=store.verify)
    outcome, session, events = await run(flow(PIN_FLOW), inputs, services=services)
    assert outcome.node == "locked" and session.output[-1] == "locked False"
    assert session.output.count("Wrong.") == 2  # not after the last attempt
    assert store.asked == [("c1", "pin", "1111")]  # badly sized answers never reach the store
    assert [d["result"] for t, d in events if t == "ivr.verify"] == ["no_match", "no_input", "invalid"]
    assert ("ivr.verify_failed", {"flow": "t", "node": "a", "field": "pin", "attempts": 3, "next": "locked"}) in events
    assert session.inputs == ["4321"]  # the fourth answer was never asked for


async def test_verify_default_service_never_verifies_and_not_found_skips_it() -> None:
    store = FakeStore()
    outcome, _, _ = await run(flow(PIN_FLOW), ["4321"], services=FlowServices(lookup_customer=store.lookup))
    assert outcome.node == "locked"
    outcome, session, _ = await run(flow(PIN_FLOW), ["4321"])
    assert outcome.node == "nobody" and session.output == ["who?"]


async def test_secret_gather_is_masked_in_transcript_and_outcome() -> None:
    gather = {"kind": "gather", "into": "pin", "secret": True, "max_digits": 4, "next": "b", "no_input": "b"}
    shown: list[str | None] = []
    session = TextSession(["1234"], on_input=shown.append)
    outcome = await run_flow(flow({"a": gather, "b": BYE}), session, FlowContext())
    assert shown == ["****"]
    assert outcome.variables["pin"] == "1234"  # the flow can still use it
    assert outcome.as_dict()["variables"]["pin"] == "****"


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


CARD = "4111111111111111"


def card_flow(url: str) -> Flow:
    return flow(
        {
            "a": {"kind": "gather", "into": "card", "secret": True, "max_digits": 16, "next": "pay", "no_input": "b"},
            "pay": {"kind": "http", "method": "POST", "url": url, "next": "b", "on_error": "b"},
            "b": BYE,
        }
    )


async def test_a_failed_http_call_never_puts_the_url_or_a_secret_on_the_timeline() -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": "declined"}, status=402, reason=f"Declined {request.query_string}")

    async def failure(url: str) -> str:
        _, _, events = await run(card_flow(url), [CARD])
        for _, data in events:
            assert CARD not in repr(data) and "static-api-key" not in repr(data) and "charge" not in repr(data)
        [(_, failed)] = [e for e in events if e[0] == "ivr.http"]
        assert failed["ok"] is False
        return str(failed["error"])

    app = web.Application()
    app.router.add_post("/charge", refuse)
    async with TestServer(app, host="127.0.0.1") as server:
        url = f"http://127.0.0.1:{server.port}/charge?card={{{{ card }}}}&key=static-api-key-123"
        assert await failure(url) == "HTTP 402 Payment Required"  # not the server's reason, which echoes
    # A host that does not answer, and a URL aiohttp refuses: the kind of failure, never the URL.
    assert await failure("http://127.0.0.1:1/charge?card={{ card }}") == (
        "ClientConnectorError: cannot connect to 127.0.0.1"
    )
    assert (await failure("http://pay.example:99999/charge?card={{ card }}")).lower().startswith("invalidurl")


async def test_a_transports_own_error_text_has_the_secrets_masked() -> None:
    async def chatty(request: HttpRequest) -> Any:
        raise HttpCallFailed(f"upstream refused {request.url}")

    _, _, events = await run(
        card_flow("https://pay.example/charge?card={{ card }}"), [CARD], services=FlowServices(http=chatty)
    )
    [(_, failed)] = [e for e in events if e[0] == "ivr.http"]
    assert CARD not in failed["error"] and "card=" + "*" * 16 in failed["error"]
