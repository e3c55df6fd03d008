"""The `survey` node: ask each question, read the answer on its scale, hand it to be recorded.

Voice callers key their answer (0-10 takes up to two keys: "1" then a pause is 1, "1","0" is 10); text
channels type the number. An answer off the scale is asked once more, no answer skips the question: a
survey never holds a caller who does not want to answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from flows.schema import Survey

# survey.answer {question, score}: the question decides the scale (reports read the answers on it).
SURVEY_SCALES: Mapping[str, tuple[int, int]] = {"csat": (1, 5), "nps": (0, 10), "ces": (1, 7)}
ATTEMPTS = 2  # the question, and once more after an answer off the scale
INTER_DIGIT_TIMEOUT_S = 2.0  # after "1", how long a second key (the 0 of 10) is awaited

# (question, score, survey name) -> recorded as survey.answer on the interaction (once per question)
SaveAnswer = Callable[[str, int, str | None], Awaitable[object]]
Record = Callable[[str, dict[str, Any]], Awaitable[object]]


class Asks(Protocol):
    async def say(self, text: str) -> None: ...

    async def read_digits(
        self,
        *,
        min_digits: int,
        max_digits: int,
        terminator: str | None,
        timeout_s: float,
        inter_digit_timeout_s: float,
    ) -> str | None: ...


def score_of(raw: str | None, question: str) -> int | None:
    """The answer as a score on the question's scale, or None (nothing, not a number, off the scale)."""
    if raw is None:
        return None
    digits = raw.strip().rstrip("#")
    if not digits.isdigit():
        return None
    low, high = SURVEY_SCALES[question]
    score = int(digits)
    return score if low <= score <= high else None


async def run_survey(
    node_id: str, node: Survey, session: Asks, text: Callable[[str], str], save: SaveAnswer, record: Record
) -> dict[str, int]:
    """Ask every question of the node; returns the scores given, by question."""
    answers: dict[str, int] = {}
    for question in node.questions:
        high = SURVEY_SCALES[question.question][1]
        score: int | None = None
        for attempt in range(1, ATTEMPTS + 1):
            await record("ivr.survey", {"node": node_id, "question": question.question, "attempt": attempt})
            if attempt > 1:
                await session.say(text(node.invalid))
            await session.say(text(question.prompt))
            raw = await session.read_digits(
                min_digits=1,
                max_digits=len(str(high)),
                terminator="#",
                timeout_s=node.timeout_s,
                inter_digit_timeout_s=INTER_DIGIT_TIMEOUT_S,
            )
            score = score_of(raw, question.question)
            if score is not None or raw is None:
                break
        if score is None:
            await record("ivr.no_input", {"node": node_id, "question": question.question})
            continue
        answers[question.question] = score
        await save(question.question, score, node.survey)
    return answers
