"""Percentiles and per-second counts, the same way for every figure of a report."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile (q in 0..1) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: list[float], digits: int = 1) -> dict[str, Any]:
    """n, p50, p90, p99 and max of `values`, rounded."""

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, digits)

    return {
        "n": len(values),
        "p50": r(percentile(values, 0.50)),
        "p90": r(percentile(values, 0.90)),
        "p99": r(percentile(values, 0.99)),
        "max": r(max(values) if values else None),
    }


def per_second(times: Iterable[float], start: float, seconds: int) -> list[int]:
    """How many of `times` (epoch seconds) fall in each second from `start`, for `seconds` seconds (times
    after the last second count in it, so nothing is lost from the totals)."""
    counts = [0] * max(1, seconds)
    for t in times:
        i = int(t - start)
        if i < 0:
            i = 0
        counts[min(i, len(counts) - 1)] += 1
    return counts
