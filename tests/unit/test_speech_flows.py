"""Menus with `speech`: the schema, the validator, and the engine's turns against a fake voice session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from flows.engine import Answer, FlowContext, SpeechRequest, run_flow
from flows.schema import Flow, Menu
from flows.text_session import TextSession
from flows.validate import validate_paths

MENU: dict[str, Any] = {
    "kind": "menu",
    "prompt": "Say sales or technical support, or press 1 or 2.",
    "choices": {
        "1": {"label": "Sales", "next": "s"},
        "2": {"label": "Support", "say": ["technical support", "support"], "next": "p"},
    },
    "speech": {"min_confidence": 0.6, "dtmf_prompt": "Press 1 for sales, 2 for support."},
    "no_match": "bad",
    "no_input": "silence",
    "retries": 3,
    "fallback": "bye",
}
NODES = {
    "m": MENU,
    "s": {"kind": "hangup", "text": "sales"},
    "p": {"kind": "hangup", "text": "support"},
    "bye": {"kind": "hangup"},
}


def flow(menu: dict[str, Any] = MENU) -> Flow:
    return Flow.model_validate({"flow": "t", "start": "m", "nodes": {**NODES, "m": menu}})


class FakeVoice:
    """A voice session whose caller answers each listening turn from a script."""

    def __init__(self, answers: list[Answer | None], unavailable: str | None = None) -> None:
        self.answers = answers
        self.unavailable = unavailable
        self.said: list[str] = []
        self.requests: list[SpeechRequest] = []
        self.keys: list[str | None] = []

    async def say(self, text: str) -> None:
        self.said.append(text)

    async def play(self, file: str, text_alt: str) -> None:
        self.said.append(text_alt)

    async def read_digits(self, **_: Any) -> str | None:
        return None

    async def read_choice(self, timeout_s: float) -> str | None:
        return self.keys.pop(0) if self.keys else None

    async def speech_unavailable(self, request: SpeechRequest) -> str | None:
        return self.unavailable

    async def ask_choice(self, prompt: str, request: SpeechRequest) -> Answer | None:
        self.said.append(prompt)
        self.requests.append(request)
        return self.answers.pop(0) if self.answers else None


async def run(f: Flow, session: Any) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []

    async def record(type_: str, data: dict[str, Any]) -> None:
        assert data["flow"] == "t"
        events.append((type_, {k: v for k, v in data.items() if k != "flow"}))

    outcome = await run_flow(f, session, FlowContext(caller_number="+34911222333", record=record))
    return outcome.node, events


def test_schema_defaults_and_phrases() -> None:
    menu = flow().nodes["m"]
    assert isinstance(menu, Menu) and menu.speech is not None
    assert menu.choices["1"].phrases() == ["Sales"]
    assert menu.choices["2"].phrases() == ["technical support", "support"]
    assert (menu.speech.language, menu.speech.end_silence_s, menu.speech.speech_attempts(menu.retries)) == (
        None,
        0.6,
        2,
    )
    with pytest.raises(ValidationError, match="min_confidence"):
        flow({**MENU, "speech": {"min_confidence": 1.5}})
    with pytest.raises(ValidationError, match="say"):
        flow({**MENU, "choices": {"1": {"label": "Sales", "next": "s", "say": []}}})


async def test_a_spoken_choice_routes() -> None:
    session = FakeVoice([Answer("speech", "2", "technical support", 0.93)])
    node, events = await run(flow(), session)
    assert node == "p"
    request = session.requests[0]
    assert request.phrases == {"1": ["Sales"], "2": ["technical support", "support"]}
    assert (request.language, request.min_confidence, request.timeout_s) == ("en", 0.6, 6)
    heard = [d for t, d in events if t == "ivr.input"]
    assert heard == [
        {"node": "m", "via": "speech", "valid": True, "attempt": 1, "digit": "2", "heard": "technical support",
         "confidence": 0.93},
    ]  # fmt: skip
    assert ("ivr.menu", {"node": "m", "attempt": 1, "options": ["1", "2"], "speech": True}) in events


async def test_keys_still_work_while_listening() -> None:
    node, events = await run(flow(), FakeVoice([Answer("dtmf", "1")]))
    assert node == "s"
    assert [d["via"] for t, d in events if t == "ivr.input"] == ["dtmf"]


async def test_no_match_then_silence_then_keys_only() -> None:
    session = FakeVoice([Answer("speech", None, "", 0.0), None])
    session.keys = ["2"]
    node, events = await run(flow(), session)
    assert node == "p"
    assert session.said == [
        MENU["prompt"], "bad",  # attempt 1: heard something outside the choices
        MENU["prompt"], "silence",  # attempt 2: nothing
        "Press 1 for sales, 2 for support.",  # attempt 3: keys only, with the keypad prompt
        "support",
    ]  # fmt: skip
    menus = [d for t, d in events if t == "ivr.menu"]
    assert [m["speech"] for m in menus] == [True, True, False]
    assert ("ivr.no_input", {"node": "m", "attempt": 2}) in events


async def test_speech_unavailable_falls_back_to_keys_and_says_why() -> None:
    session = FakeVoice([], unavailable="no speech engine recognizes 'es' here")
    session.keys = ["1"]
    node, events = await run(flow(), session)
    assert node == "s"
    assert ("ivr.speech_unavailable", {"node": "m", "reason": "no speech engine recognizes 'es' here"}) in events
    assert session.requests == []  # never listened
    assert session.said[0] == "Press 1 for sales, 2 for support."


async def test_text_channels_accept_the_spoken_phrases_typed() -> None:
    node, _ = await run(flow(), TextSession(["technical support"]))
    assert node == "p"
    session = TextSession(["sales"])
    node, _ = await run(flow(), session)
    assert node == "s"
    assert session.output[0] == MENU["prompt"]  # text channels never get the keypad prompt


HEAD = "flow: t\nstart: m\nnodes:\n"
TAIL = "  s: {kind: hangup}\n  p: {kind: hangup}\n  bye: {kind: hangup}\n"


def test_validator_finds_phrases_that_cannot_tell_choices_apart(tmp_path: Path) -> None:
    text = (
        HEAD
        + (
            "  m:\n"  # 4
            "    kind: menu\n"
            "    prompt: hi\n"
            "    choices:\n"
            "      '1': {label: Sales, next: s, say: [sales, help]}\n"  # 8
            "      '2': {label: Support, next: p, say: ['Help!', '?']}\n"  # 9
            "    speech: {}\n"
            "    no_match: bad\n"
            "    no_input: none\n"
            "    fallback: bye\n"
        )
        + TAIL
    )
    path = tmp_path / "t.yaml"
    path.write_text(text)
    found = [f"{p.line}: {p.message}" for p in validate_paths([path])]
    assert found == [
        "9: 'Help!' is also said for choice '1': callers could not be told apart",
        "9: '?' has no words a caller could say",
    ]


def test_dtmf_prompt_is_a_checked_template_and_a_static_prompt(tmp_path: Path) -> None:
    text = (
        HEAD
        + (
            "  m:\n"
            "    kind: menu\n"
            "    prompt: hi\n"
            "    choices: {'1': {label: Sales, next: s}, '2': {label: Support, next: p}}\n"
            "    speech: {dtmf_prompt: 'Press {{ nothing_here }}'}\n"  # 8
            "    no_match: bad\n"
            "    no_input: none\n"
            "    fallback: bye\n"
        )
        + TAIL
    )
    path = tmp_path / "t.yaml"
    path.write_text(text)
    assert [f"{p.line}: {p.message}" for p in validate_paths([path])] == [
        "8: template uses unknown variable 'nothing_here'"
    ]


GATHER: dict[str, Any] = {
    "kind": "gather",
    "prompt": "Say or key your account number.",
    "min_digits": 4,
    "max_digits": 6,
    "into": "account",
    "speech": {"min_confidence": 0.5},
    "next": "got",
    "no_input": "none",
}


def gather_flow(gather: dict[str, Any] = GATHER) -> Flow:
    nodes = {"g": gather, "got": {"kind": "hangup", "text": "{{ account }}"}, "none": {"kind": "hangup"}}
    return Flow.model_validate({"flow": "t", "start": "g", "nodes": nodes})


class KeyedRest(FakeVoice):
    """Keys typed after the first one, which `ask_choice` already returned."""

    def __init__(self, answers: list[Answer | None], rest: str | None) -> None:
        super().__init__(answers)
        self.rest = rest
        self.rest_asked: dict[str, Any] = {}

    async def read_digits(self, **kwargs: Any) -> str | None:
        self.rest_asked = kwargs
        return self.rest


async def test_spoken_digits_fill_the_gather() -> None:
    session = FakeVoice([Answer("speech", "10532", "one oh five three two", 0.9)])
    node, events = await run(gather_flow(), session)
    assert node == "got"
    assert session.requests[0].digits == (4, 6) and session.requests[0].phrases == {}
    assert ("ivr.input", {"node": "g", "digits": "10532", "into": "account"}) in events


async def test_a_first_key_then_the_rest_on_the_keypad() -> None:
    session = KeyedRest([Answer("dtmf", "4")], rest="271#")
    node, events = await run(gather_flow(), session)
    assert node == "got"
    assert session.rest_asked["max_digits"] == 5  # six in all, one already typed
    assert ("ivr.input", {"node": "g", "digits": "4271", "into": "account"}) in events


async def test_unsure_or_wrong_speech_goes_to_no_input() -> None:
    session = FakeVoice([Answer("speech", None, "", 0.2)])
    node, events = await run(gather_flow(), session)
    assert node == "none"
    assert ("ivr.input", {"node": "g", "via": "speech", "valid": False, "confidence": 0.2}) in events


async def test_too_few_spoken_digits_are_no_input() -> None:
    node, _ = await run(gather_flow(), FakeVoice([Answer("speech", "12", "one two", 0.9)]))
    assert node == "none"


async def test_a_gather_without_speech_support_takes_keys() -> None:
    session = FakeVoice([], unavailable="no engine for 'es'")
    node, events = await run(gather_flow(), session)
    assert node == "none" and session.requests == []
    assert ("ivr.speech_unavailable", {"node": "g", "reason": "no engine for 'es'"}) in events


def test_a_secret_gather_refuses_speech() -> None:
    with pytest.raises(ValidationError, match="secret gather cannot take `speech`"):
        gather_flow({**GATHER, "secret": True})
    with pytest.raises(ValidationError, match="needs a `prompt`"):
        gather_flow({k: v for k, v in GATHER.items() if k != "prompt"})


async def test_text_sessions_ignore_gather_speech() -> None:
    session = TextSession(["4271"])
    node, _ = await run(gather_flow(), session)
    assert node == "got" and session.output[-1] == "4271"
