"""A flow's opening: the prompts a call says while it does not know yet who calls (flows/opening.py), and
saying it then going on from where it ended (flows/engine.py `say_opening`)."""

from pathlib import Path
from typing import Any

import pytest

from flows.engine import FlowContext, run_flow, say_opening
from flows.loader import load_flow
from flows.opening import opening, reads_identification
from flows.schema import Flow
from flows.text_session import TextSession

DEMO = Path(__file__).resolve().parents[3] / "dialplans" / "flows" / "demo.yaml"
BYE = {"kind": "hangup"}


def flow(nodes: dict[str, Any], start: str = "a") -> Flow:
    return Flow.model_validate({"flow": "t", "start": start, "nodes": nodes})


def say(text: str, next_: str) -> dict[str, Any]:
    return {"kind": "say", "text": text, "next": next_}


@pytest.mark.parametrize(
    ("text", "reads"),
    [
        ("Welcome to Hilo.", False),
        ("You are calling from {{ caller.number }}.", False),
        ("It is {{ now.time }}.", False),
        ("Welcome back, {{ customer.name }}.", True),
        ("{% if customer.known %}Welcome back.{% endif %}", True),
        ("{{ caller.number if customer.known else '' }}", True),
        ("{{ unclosed", True),  # does not parse: left to the flow's own run, at its place
    ],
)
def test_what_reads_identification(text: str, reads: bool) -> None:
    assert reads_identification(text) is reads


def test_the_demo_greets_at_once_and_by_name_after_identification() -> None:
    demo = load_flow(DEMO).flow
    assert demo is not None
    assert opening(demo) == ["greet"]
    following = demo.nodes[demo.nodes["greet"].next]  # type: ignore[union-attr]
    assert following.kind == "branch"  # on customer.name: it waits for identification


def test_the_opening_is_the_prompts_before_the_first_node_that_needs_more() -> None:
    f = flow(
        {
            "a": say("Welcome.", "b"),
            "b": {"kind": "play", "file": "hilo/jingle", "text": "(jingle)", "next": "c"},
            "c": say("Calls are recorded. You are {{ caller.number }}.", "d"),
            "d": say("Hello {{ customer.name }}.", "bye"),
            "bye": BYE,
        }
    )
    assert opening(f) == ["a", "b", "c"]


@pytest.mark.parametrize(
    "first",
    [
        {"kind": "branch", "when": [{"var": "caller.number", "exists": True, "next": "bye"}], "otherwise": "bye"},
        {"kind": "lookup", "found": "bye", "not_found": "bye"},
        {"kind": "set", "variables": {"x": "1"}, "next": "bye"},
        say("Hello {{ customer.name }}.", "bye"),
    ],
    ids=["branch", "lookup", "set", "customer-fact"],
)
def test_a_flow_starting_with_anything_else_has_no_opening(first: dict[str, Any]) -> None:
    assert opening(flow({"a": first, "bye": BYE})) == []


def test_a_loop_of_prompts_ends_the_opening() -> None:
    f = flow({"a": say("One.", "b"), "b": say("Two.", "a")})
    assert opening(f) == ["a", "b"]


async def test_said_the_opening_then_the_flow_goes_on_from_where_it_ended() -> None:
    f = flow(
        {
            "a": say("Welcome.", "b"),
            "b": say("Calls are recorded.", "c"),
            "c": {
                "kind": "branch",
                "when": [{"var": "customer.name", "exists": True, "next": "k"}],
                "otherwise": "bye",
            },
            "k": say("Hello {{ customer.name }}.", "bye"),
            "bye": BYE,
        }
    )
    before: list[tuple[str, dict[str, Any]]] = []
    after: list[tuple[str, dict[str, Any]]] = []

    async def held(type_: str, data: dict[str, Any]) -> None:
        before.append((type_, data))

    async def record(type_: str, data: dict[str, Any]) -> None:
        after.append((type_, data))

    session = TextSession([])
    resume = await say_opening(f, session, FlowContext(record=held))
    assert resume == "c"
    assert session.output == ["Welcome.", "Calls are recorded."]
    assert before == [("ivr.say", {"flow": "t", "node": "a"}), ("ivr.say", {"flow": "t", "node": "b"})]
    # Identified meanwhile: the rest of the flow knows the caller.
    context = FlowContext(customer={"id": "c1", "name": "Ana"}, record=record)
    outcome = await run_flow(f, session, context, start=resume)
    assert session.output[2:] == ["Hello Ana."]
    assert outcome.action == "hangup"
    assert [t for t, _ in after][:2] == ["ivr.branch", "ivr.say"]


async def test_an_opening_prompt_that_fails_is_left_to_the_flow() -> None:
    f = flow({"a": say("Welcome.", "b"), "b": say("It is {{ now.nope }}.", "bye"), "bye": BYE})
    session = TextSession([])
    assert await say_opening(f, session, FlowContext()) == "b"
    assert session.output == ["Welcome."]
    outcome = await run_flow(f, session, FlowContext(), start="b")
    assert outcome.action == "error" and outcome.node == "b"
