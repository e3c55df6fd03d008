"""The survey answer on the timeline: `survey.answer` {question, score, survey?}, recorded on the interaction
it is about, so CSAT, NPS and CES are grouped by that interaction's channel, queue and agent.

question  scale  read as
csat      1-5    satisfied when 4 or 5
nps       0-10   promoter 9-10, passive 7-8, detractor 0-6
ces       1-7    effort score: the mean (7 = very easy)

They come from a flow's `survey` node (flows/survey.py; e.g. after the agent hangs up, through a queue
node's `after_agent`) or from an outside survey tool through `POST /api/interactions/{id}/survey-answers`."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from crm_bridge.timeline import Publish, append, event_json
from flows.survey import SURVEY_SCALES

log = logging.getLogger(__name__)

SURVEY_ANSWER = "survey.answer"


class SurveyAnswerEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: Literal["csat", "nps", "ces"]
    score: int = Field(strict=True, description="csat 1-5, nps 0-10, ces 1-7")
    survey: str | None = Field(default=None, min_length=1, max_length=80, description="which survey asked it")

    @field_validator("score")
    @classmethod
    def on_its_scale(cls, score: int, info: ValidationInfo) -> int:
        question = info.data.get("question")
        if isinstance(question, str) and question in SURVEY_SCALES:
            low, high = SURVEY_SCALES[question]
            if not low <= score <= high:
                raise ValueError(f"a {question} score is from {low} to {high}")
        return score


class InvalidSurveyAnswer(ValueError):
    pass


def parse_answer(data: dict[str, Any]) -> SurveyAnswerEvent:
    try:
        return SurveyAnswerEvent.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "score"
        raise InvalidSurveyAnswer(f"survey.answer {where}: {first['msg']}") from exc


@dataclass(frozen=True)
class Saved:
    created: bool  # False: the same answer was already on the timeline
    event: dict[str, Any]


class AnswerConflict(Exception):
    def __init__(self, existing: dict[str, Any]) -> None:
        super().__init__("this question was already answered differently for this interaction")
        self.existing = existing


async def save_answer(
    pool: asyncpg.Pool,
    publish: Publish,
    interaction_id: uuid.UUID,
    answer: SurveyAnswerEvent,
    *,
    at: datetime | None = None,
) -> Saved:
    """Record the answer on the interaction's timeline, once: a question (of one survey) is answered once
    per interaction, so a resent answer has no further effect and a different one raises AnswerConflict.
    LookupError for an unknown interaction. Durable (committed) before it is published."""
    data = answer.model_dump(exclude_none=True)
    async with pool.acquire() as conn, conn.transaction():
        interaction = await conn.fetchrow(
            "SELECT customer_id, channel FROM interactions WHERE id = $1 FOR SHARE", interaction_id
        )
        if interaction is None:
            raise LookupError(f"no interaction {interaction_id}")
        # Two concurrent submissions of one question queue here; the second then finds the first.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"survey:{interaction_id}:{answer.question}")
        existing = await conn.fetchrow(
            "SELECT * FROM timeline_events WHERE interaction_id = $1 AND type = $2 AND data ->> 'question' = $3"
            " AND coalesce(data ->> 'survey', '') = $4 ORDER BY id LIMIT 1",
            interaction_id,
            SURVEY_ANSWER,
            answer.question,
            answer.survey or "",
        )
        if existing is not None:
            if existing["data"].get("score") != answer.score:
                raise AnswerConflict(event_json(existing))
            return Saved(False, event_json(existing))
        event = await append(
            conn, interaction_id, interaction["customer_id"], interaction["channel"], SURVEY_ANSWER, data, at=at
        )
    await publish(event)
    return Saved(True, event)


def answers_of(
    pool: asyncpg.Pool, publish: Publish, interaction_id: uuid.UUID
) -> Callable[[str, int, str | None], Awaitable[None]]:
    """Where a flow's `survey` node sends the answers of one interaction: saved once per question; a second,
    different answer in the same interaction (the flow asked twice) leaves the first."""

    async def save(question: str, score: int, survey: str | None) -> None:
        answer = parse_answer({"question": question, "score": score, **({"survey": survey} if survey else {})})
        try:
            await save_answer(pool, publish, interaction_id, answer)
        except AnswerConflict:
            log.info("interaction %s: %s was already answered, the first answer stays", interaction_id, question)

    return save
