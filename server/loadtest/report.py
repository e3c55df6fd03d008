"""The report of a run as one JSON-able dictionary (written as report.json, drawn by page.py)."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

from server.loadtest.calls import CallBook
from server.loadtest.procs import Sampler
from server.loadtest.stats import per_second, summary

FORMAT = 1
INVITE_TO_ANSWER = "INVITE → 200 OK"
ANSWER_TO_AUDIO = "answer → first prompt audio"


def seconds_between(start: float, end: float) -> int:
    return max(1, math.ceil(end - start))


def concurrency(book: CallBook, start: float, seconds: int) -> list[int]:
    """Calls up at the end of each second (placed, not yet ended)."""
    up = []
    for second in range(seconds):
        edge = start + second + 1
        up.append(
            sum(
                1
                for c in book.placed
                if c.invited is not None and c.invited <= edge and (c.ended is None or c.ended > edge)
            )
        )
    return up


def voice_section(book: CallBook, start: float, seconds: int, rate_asked: float) -> dict[str, Any]:
    placed = book.placed
    invites = sorted(c.invited for c in placed if c.invited is not None)
    span = invites[-1] - invites[0] if len(invites) > 1 else 0.0
    achieved = (len(invites) - 1) / span if span > 0 else None
    answered = [c for c in placed if c.answered is not None]
    to_answer = [c.invite_to_answer_ms for c in answered if c.invite_to_answer_ms is not None]
    to_audio = [c.answer_to_audio_ms for c in answered if c.answer_to_audio_ms is not None]
    failed_at = [c.last_seen for c in placed if not c.ok and c.last_seen is not None]
    return {
        "counts": book.counts(),
        "failures": book.failures(),
        "rate_asked": rate_asked,
        "rate_achieved": None if achieved is None else round(achieved, 2),
        "latency_ms": {INVITE_TO_ANSWER: summary(to_answer, 1), ANSWER_TO_AUDIO: summary(to_audio, 1)},
        "first_audio_missing": len(answered) - len(to_audio),
        "per_second": {
            "offered": per_second(invites, start, seconds),
            "answered": per_second([c.answered for c in answered if c.answered], start, seconds),
            "succeeded": per_second([c.ended for c in placed if c.ok and c.ended], start, seconds),
            "failed": per_second(failed_at, start, seconds),
            "in_call": concurrency(book, start, seconds),
        },
        "points": {
            "invite_to_answer_ms": [
                [round(c.answered - start, 2), round(ms, 1)]  # type: ignore[operator]
                for c in answered
                if (ms := c.invite_to_answer_ms) is not None
            ],
            "answer_to_audio_ms": [
                [round(c.answered - start, 2), round(ms, 1)]  # type: ignore[operator]
                for c in answered
                if (ms := c.answer_to_audio_ms) is not None
            ],
        },
    }


def process_section(sampler: Sampler, start: float, end: float, succeeded: int) -> dict[str, Any]:
    """Per process group: its samples (relative times), its CPU over the load window [start, end] and per
    succeeded call, and its resident memory at the first and last samples (growth in %)."""
    groups: dict[str, Any] = {}
    for name, group in sampler.groups.items():
        cpu = sampler.cpu_between(name, start, end)
        present = [mb for mb in group.rss_mb if mb > 0]  # 0: every process of the group had exited
        first = present[0] if present else None
        last = present[-1] if present else None
        groups[name] = {
            "pids": len(group.pids_seen),
            "cpu_s": round(cpu, 2),
            "cpu_ms_per_call": round(1000 * cpu / succeeded, 2) if succeeded else None,
            "rss_mb_first": first,
            "rss_mb_last": last,
            "rss_growth_pct": round(100 * (last - first) / first, 1) if first and last is not None else None,
            "t": [round(t - start, 1) for t in group.times],
            "cpu_pct": group.cpu_pct,
            "rss_mb": group.rss_mb,
        }
    return groups


def machine() -> dict[str, Any]:
    try:
        mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                          if line.startswith("MemTotal:")))  # fmt: skip
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def write(report: dict[str, Any], folder: Path, html: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / "report.json", folder / "report.html"
    json_path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    html_path.write_text(html)
    return json_path, html_path
