"""The estimated wait a caller hears while queued (the `announce` of a queue).

The estimate is the queue's recent pace of answering times the caller's place in it: over the last
RECENT_ANSWERS answers of the queue within WINDOW (at least MIN_ANSWERS of them), one caller was taken every
(now - oldest of those answers) / their number seconds, so the caller at position N waits about N of those
intervals. Measuring up to *now* (not up to the last answer) makes a queue that has stalled give longer
estimates rather than stale short ones. With too few recent answers there is no estimate, and the caller
hears only their position."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

RECENT_ANSWERS = 10
MIN_ANSWERS = 2
WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class WaitEstimate:
    position: int  # 1 = the next one an agent of the queue takes
    wait_s: float | None  # None: too few recent answers to tell


def expected_wait_s(position: int, answered_at: list[datetime], now: datetime) -> float | None:
    """`answered_at`: the queue's recent answer times (any order)."""
    recent = sorted((t for t in answered_at if now - WINDOW <= t <= now), reverse=True)[:RECENT_ANSWERS]
    if len(recent) < MIN_ANSWERS:
        return None
    interval = (now - recent[-1]).total_seconds() / len(recent)
    return position * interval


def spoken_minutes(wait_s: float) -> int:
    """Whole minutes as said to the caller, rounded up (0 means "less than a minute")."""
    return 0 if wait_s < 60 else math.ceil(wait_s / 60)
