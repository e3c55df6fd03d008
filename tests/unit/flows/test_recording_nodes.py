"""The `record` and `consent` nodes: what the engine asks of the call's recording, what it writes down, and
that keys read during a pause are never shown; text channels pass through them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from flows.engine import FlowContext, Outcome, run_flow
from flows.schema import Flow, json_schema
from flows.text_session import TextSession
from flows.validate import _defined_names

Events = list[tuple[str, dict[str, Any]]]
CARD = "4111222233334444"


class FakeRecording:
    """Stands in for recordings/flow.py: remembers what the flow asked."""

    def __init__(self) -> None:
        self.actions: list[str] = []
        self.consents: list[tuple[bool, str]] = []
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    async def control(self, action: str) -> str:
        self.actions.append(action)
        if action in ("pause", "resume"):
            self._paused = action == "pause"
        return {"start": "started", "stop": "stopped", "pause": "paused", "resume": "resumed"}[action]

    async def consent(self, given: bool, via: str) -> None:
        self.consents.append((given, via))


def flow(nodes: dict[str, Any]) -> Flow:
    return Flow.model_validate({"flow": "t", "start": "a", "nodes": nodes})


async def run(
    f: Flow, inputs: list[str | None], recording: FakeRecording | None
) -> tuple[Outcome, TextSession, Events]:
    events: Events = []

    async def record(type_: str, data: dict[str, Any]) -> None:
        events.append((type_, data))

    session = TextSession(inputs)
    outcome = await run_flow(f, session, FlowContext(record=record, recording=recording))
    return outcome, session, events


CONSENT = {"kind": "consent", "prompt": "May we record? 1 yes, 2 no", "retries": 2, "next": "q"}
QUEUE = {"kind": "queue", "queue": "support"}
CARD_FLOW = {
    "a": {"kind": "record", "action": "start", "next": "p"},
    "p": {"kind": "record", "action": "pause", "next": "g"},
    "g": {"kind": "gather", "prompt": "Card number", "max_digits": 16, "into": "card", "next": "m", "no_input": "m"},
    "m": {
        "kind": "menu",
        "prompt": "1 to confirm",
        "choices": {"1": {"label": "ok", "next": "r"}},
        "no_match": "bad",
        "no_input": "none",
        "retries": 1,
        "fallback": "r",
    },
    "r": {"kind": "record", "action": "resume", "next": "after"},
    "after": {"kind": "gather", "prompt": "Extension", "max_digits": 3, "into": "ext", "next": "q", "no_input": "q"},
    "q": QUEUE,
}


@pytest.mark.parametrize(
    ("answer", "given", "via"), [("1", True, "dtmf"), ("2", False, "dtmf"), (None, False, "unanswered")]
)
async def test_consent_answer_sets_the_variable_and_is_kept(answer: str | None, given: bool, via: str) -> None:
    recording = FakeRecording()
    outcome, _, _ = await run(flow({"a": CONSENT, "q": QUEUE}), [answer, answer], recording)
    assert recording.consents == [(given, via)]
    assert outcome.variables["record_consent"] is given
    assert outcome.action == "queue"


async def test_consent_asks_again_after_a_wrong_key_and_can_default_to_accept() -> None:
    recording = FakeRecording()
    node = {**CONSENT, "unanswered": "accept"}
    _, session, events = await run(flow({"a": node, "q": QUEUE}), ["7", None], recording)
    assert session.output == ["May we record? 1 yes, 2 no", "Sorry, I did not get that.", "May we record? 1 yes, 2 no"]
    assert [t for t, _ in events if t in ("ivr.input", "ivr.no_input")] == ["ivr.input", "ivr.no_input"]
    assert events[0] == ("ivr.input", {"flow": "t", "node": "a", "digit": "7", "valid": False, "attempt": 1})
    assert recording.consents == [(True, "unanswered")]


async def test_a_text_channel_passes_through_recording_nodes() -> None:
    f = flow({"a": CONSENT, "q": {"kind": "record", "action": "start", "next": "z"}, "z": QUEUE})
    outcome, session, events = await run(f, ["2"], None)
    assert session.output == [] and "record_consent" not in outcome.variables  # nobody asked
    assert ("ivr.record", {"flow": "t", "node": "q", "action": "start", "result": "skipped"}) in events


async def test_keys_read_while_paused_are_masked_everywhere_but_usable_in_the_flow() -> None:
    recording = FakeRecording()
    outcome, _, events = await run(flow(CARD_FLOW), [CARD, "1", "123"], recording)
    assert recording.actions == ["start", "pause", "resume", "stop"]  # stop: the flow's recording ends with it
    assert outcome.variables["card"] == CARD  # the flow may still pass it on (e.g. to a payment service)
    assert outcome.shown_variables()["card"] == "*" * 16
    assert CARD not in repr(events)
    inputs = [d for t, d in events if t == "ivr.input"]
    assert inputs[0]["digits"] == "*" * 16 and inputs[1]["digit"] == "*"
    assert inputs[2]["digits"] == "123"  # after the resume, keys are shown again
    assert [d["result"] for t, d in events if t == "ivr.record"] == ["started", "paused", "resumed"]


async def test_a_pause_masks_keys_on_a_text_channel_too() -> None:
    outcome, _, events = await run(flow(CARD_FLOW), [CARD, "1", "123"], None)
    assert CARD not in repr(events) and outcome.shown_variables()["card"] == "*" * 16


class HangsUp(TextSession):
    async def say(self, text: str) -> None:
        raise ConnectionAbortedError("the caller hung up")


async def test_the_recording_stops_when_the_flow_ends_however_it_ends() -> None:
    recording = FakeRecording()
    start = {"kind": "record", "action": "start", "next": "b"}
    outcome, _, _ = await run(flow({"a": start, "b": {"kind": "goto", "flow": "missing"}}), [], recording)
    assert outcome.action == "error" and recording.actions == ["start", "stop"]
    recording = FakeRecording()
    f = flow({"a": start, "b": {"kind": "say", "text": "hello", "next": "q"}, "q": QUEUE})
    with pytest.raises(ConnectionAbortedError):
        await run_flow(f, HangsUp([]), FlowContext(recording=recording))
    assert recording.actions == ["start", "stop"]


def test_schema_rejects_bad_recording_nodes() -> None:
    with pytest.raises(ValidationError, match="accept and refuse are the same key"):
        flow({"a": {**CONSENT, "refuse": "1"}, "q": QUEUE})
    with pytest.raises(ValidationError, match="action"):
        flow({"a": {"kind": "record", "action": "rewind", "next": "q"}, "q": QUEUE})
    kinds = json_schema()["$defs"]
    assert {"Record", "Consent"} <= set(kinds)
    assert kinds["Record"]["properties"]["action"]["enum"] == ["start", "stop", "pause", "resume"]


def test_the_consent_variable_counts_as_defined_for_templates() -> None:
    assert "record_consent" in _defined_names(flow({"a": CONSENT, "q": QUEUE}))
