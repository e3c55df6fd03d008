"""What a waiting caller is told, without any service: the estimated wait from the queue's recent answers,
the announcement's parts, and the flow checks of a queue's end of wait, callback offer and a transfer's
failure exit (file:line of the node at fault)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis.exceptions

from dialplans.models import QueueAnnounce
from flows.validate import Checks, validate_paths
from ivr import waiting
from routing.estimate import WaitEstimate, expected_wait_s, spoken_minutes
from routing.model import Assignment

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_the_estimate_is_the_recent_pace_of_answers_times_the_position() -> None:
    answers = [ago(30), ago(90), ago(150)]  # three answers over the last 150 s: one every 50 s
    assert expected_wait_s(1, answers, NOW) == 50
    assert expected_wait_s(4, answers, NOW) == 200


def test_no_estimate_from_too_few_or_too_old_answers() -> None:
    assert expected_wait_s(1, [], NOW) is None
    assert expected_wait_s(1, [ago(10)], NOW) is None
    assert expected_wait_s(1, [ago(4000), ago(5000)], NOW) is None  # outside the hour
    assert expected_wait_s(1, [ago(10), ago(20), NOW + timedelta(seconds=5)], NOW) == 10  # the future is not counted


def test_a_stalled_queue_gives_a_longer_estimate() -> None:
    quick = expected_wait_s(2, [ago(10), ago(20)], NOW)
    stalled = expected_wait_s(2, [ago(600), ago(610)], NOW)
    assert quick is not None and stalled is not None and stalled > quick


def test_only_the_most_recent_answers_count() -> None:
    many = [ago(s) for s in range(10, 3000, 10)]  # one every 10 s for most of the hour
    assert expected_wait_s(1, many, NOW) == 10  # the last 10 answers: 100 s / 10


def test_minutes_are_rounded_up_and_under_a_minute_is_zero() -> None:
    assert [spoken_minutes(s) for s in (0, 59, 60, 61, 150)] == [0, 0, 1, 2, 3]


def test_announcement_parts_say_the_position_then_the_wait() -> None:
    full = QueueAnnounce(every_s=30)
    assert waiting.announcement_parts(WaitEstimate(3, 130), full) == [
        waiting.YOU_ARE,
        "3",
        waiting.IN_QUEUE,
        waiting.WAIT_ABOUT,
        "3",
        waiting.MINUTES,
    ]
    assert waiting.announcement_parts(WaitEstimate(1, 60), full)[-2:] == ["1", waiting.MINUTE]
    assert waiting.announcement_parts(WaitEstimate(2, 20), full)[-1] == waiting.UNDER_A_MINUTE
    # without an estimate, only the position; each part can be switched off
    assert waiting.announcement_parts(WaitEstimate(2, None), full) == [waiting.YOU_ARE, "2", waiting.IN_QUEUE]
    assert waiting.announcement_parts(WaitEstimate(2, 20), QueueAnnounce(position=False)) == [waiting.UNDER_A_MINUTE]


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "w.yaml"
    path.write_text(text)
    return [f"{p.line}:{p.column}: {p.message}" for p in validate_paths([path], Checks(queues=frozenset({"support"})))]


def test_a_queue_node_names_existing_nodes_for_the_end_of_wait_and_the_callback_offer(tmp_path: Path) -> None:
    text = (
        "flow: w\nstart: q\nnodes:\n"
        "  q:\n"  # 4
        "    kind: queue\n"  # 5
        "    queue: support\n"  # 6
        "    max_wait_s: 60\n"  # 7
        "    on_timeout: voicemial\n"  # 8
        "    callback_offer: {every_s: 30, next: call_me_back}\n"  # 9
        "  call_me: {kind: callback, prompt: Bye., queue: nowhere}\n"  # 10
        "  out: {kind: transfer, to: test-line, on_failure: gone}\n"  # 11
    )
    found = problems(tmp_path, text)
    assert "8:17: node 'voicemial' does not exist" in found, found
    assert "9:41: node 'call_me_back' does not exist" in found, found
    assert any(f.startswith("10:") and "queue 'nowhere' is not in routing.yaml" in f for f in found), found
    assert "11:52: node 'gone' does not exist" in found, found


def test_a_valid_waiting_line(tmp_path: Path) -> None:
    text = (
        "flow: w\nstart: q\nnodes:\n"
        "  q:\n"
        "    kind: queue\n"
        "    queue: support\n"
        "    max_wait_s: 60\n"
        "    on_timeout: message\n"
        "    callback_offer: {every_s: 30, key: '1', next: call_me}\n"
        "  call_me: {kind: callback, prompt: We will call you back.}\n"
        "  message: {kind: voicemail, prompt: Leave a message.}\n"
    )
    assert problems(tmp_path, text) == []


class FlakyRouting:
    """A routing engine whose Redis does not answer for the first `failures` questions."""

    def __init__(self, failures: int, offer: Assignment) -> None:
        self.failures = failures
        self.offer = offer
        self.asked = 0

    async def wait_for_offer(self, interaction_id: str, timeout: float) -> Assignment | None:
        self.asked += 1
        if self.asked <= self.failures:
            raise redis.exceptions.ConnectionError("Redis is restarting")
        return self.offer


async def test_a_routing_that_does_not_answer_keeps_the_caller_waiting_and_is_one_degraded_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(waiting, "POLL_S", 0.02)
    offer = Assignment("i", "bob", "support", "support", "voice", "agent-bob", 0, 0, 0)
    engine = FlakyRouting(3, offer)
    told: list[tuple[str, str]] = []

    async def degraded(part: str, what: str) -> None:
        told.append((part, what))

    wait = waiting.QueueWait(
        cast(Any, None),
        cast(Any, SimpleNamespace(channel=None)),
        cast(Any, engine),
        "i",
        announce=None,
        callback=None,
        on_degraded=degraded,
    )
    assert await asyncio.wait_for(wait._watch(), 5) is offer
    assert engine.asked == 4
    assert told == [("redis", "wait")]
