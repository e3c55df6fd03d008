"""The `survey` node: each answer on its question's scale is saved once, off-scale answers are asked again
once, silence skips the question, and `after_agent` on a queue node is a checked reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from flows.engine import FlowContext, FlowServices, run_flow
from flows.schema import Flow
from flows.survey import score_of
from flows.text_session import TextSession
from flows.validate import validate_paths

SURVEY = {
    "kind": "survey",
    "survey": "post-call",
    "questions": [
        {"question": "csat", "prompt": "Satisfied? 1 to 5"},
        {"question": "nps", "prompt": "Recommend us? 0 to 10"},
        {"question": "ces", "prompt": "Easy? 1 to 7"},
    ],
    "invalid": "Not on the scale.",
    "next": "bye",
}


def survey_flow(**overrides: Any) -> Flow:
    return Flow.model_validate(
        {"flow": "s", "start": "a", "nodes": {"a": {**SURVEY, **overrides}, "bye": {"kind": "hangup", "text": "Bye"}}}
    )


async def test_answers_are_saved_on_their_scales() -> None:
    saved: list[tuple[str, int, str | None]] = []
    events: list[tuple[str, dict[str, Any]]] = []

    async def save(question: str, score: int, survey: str | None) -> None:
        saved.append((question, score, survey))

    async def record(type_: str, data: dict[str, Any]) -> None:
        events.append((type_, data))

    # csat: 9 is off the 1-5 scale, asked again -> 4; nps: 10 (two keys); ces: nothing -> skipped
    session = TextSession(["9", "4", "10", None])
    outcome = await run_flow(
        survey_flow(), session, FlowContext(services=FlowServices(save_survey_answer=save), record=record)
    )
    assert outcome.action == "hangup"
    assert saved == [("csat", 4, "post-call"), ("nps", 10, "post-call")]
    assert session.output == [
        "Satisfied? 1 to 5",
        "Not on the scale.",
        "Satisfied? 1 to 5",
        "Recommend us? 0 to 10",
        "Easy? 1 to 7",
        "Bye",
    ]
    assert ("ivr.no_input", {"flow": "s", "node": "a", "question": "ces"}) in events
    asked = [(d["question"], d["attempt"]) for t, d in events if t == "ivr.survey"]
    assert asked == [("csat", 1), ("csat", 2), ("nps", 1), ("ces", 1)]


async def test_twice_off_the_scale_skips_the_question_and_without_a_sink_answers_are_steps() -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    async def record(type_: str, data: dict[str, Any]) -> None:
        events.append((type_, data))

    session = TextSession(["0", "6", "11", "7", "1"])
    await run_flow(survey_flow(), session, FlowContext(record=record))
    answers = [data for type_, data in events if type_ == "survey.answer"]
    assert answers == [
        {"question": "nps", "score": 7, "survey": "post-call"},
        {"question": "ces", "score": 1, "survey": "post-call"},
    ]


@pytest.mark.parametrize(
    ("raw", "question", "score"),
    [
        ("5", "csat", 5),
        ("0", "csat", None),
        ("10#", "nps", 10),
        ("0", "nps", 0),
        ("7", "ces", 7),
        ("8", "ces", None),
        ("", "csat", None),
        (None, "csat", None),
        ("x", "nps", None),
    ],
)
def test_score_of(raw: str | None, question: str, score: int | None) -> None:
    assert score_of(raw, question) == score


def test_a_survey_needs_known_questions() -> None:
    with pytest.raises(ValidationError):
        survey_flow(questions=[{"question": "mood", "prompt": "?"}])
    with pytest.raises(ValidationError):
        survey_flow(questions=[])


def test_after_agent_must_name_a_node(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("flow: t\nstart: q\nnodes:\n  q: {kind: queue, queue: support, after_agent: nowhere}\n")
    problems = validate_paths([path])
    assert [(p.line, "nowhere" in p.message) for p in problems] == [(4, True)], problems
