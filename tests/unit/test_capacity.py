"""bench/capacity.py's pure parts: the knee search, what makes a step pass, memory growth; the comparison line
in the shipped dialplan, and which trunk an address is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.capacity import (
    _long_call_text,
    _unsaturated,
    _why,
    evaluate,
    judge,
    knee,
    memory_growth,
    next_rate,
    server_errors,
)
from bench.plain_menu import EXTENSIONS, shipped_lines
from server.loadtest.checks import trunk_for

SEARCH = {"start": 4.0, "max_rate": 64.0, "min_rate": 0.5, "resolution": 0.1}


def search(capacity: float, **overrides: float) -> list[tuple[float, bool]]:
    """The rates tried against a system that holds any rate up to `capacity`."""
    tried: list[tuple[float, bool]] = []
    while (rate := next_rate(tried, **{**SEARCH, **overrides})) is not None:
        tried.append((rate, rate <= capacity))
        assert len(tried) < 20
    return tried


def test_the_search_doubles_then_bisects_to_the_resolution() -> None:
    tried = search(11.0)
    assert [r for r, _ in tried][:3] == [4.0, 8.0, 16.0]
    assert [r for r, _ in tried][3:] == [12.0, 10.0, 11.0]
    assert knee(tried) == 11.0


def test_the_search_stops_at_the_bounds() -> None:
    assert knee(search(1000.0)) == 64.0  # never failed: the maximum
    low = search(0.3)
    assert [r for r, _ in low] == [4.0, 2.0, 1.0, 0.5] and knee(low) == 0.0
    assert knee(search(1.4)) == pytest.approx(1.38, abs=0.15)


def step(failed: int = 0, answered: int = 20, queued: int | None = 20, achieved: float = 4.0) -> dict[str, Any]:
    voice: dict[str, Any] = {
        "counts": {"failed": failed, "answered": answered},
        "failures": {"far_end_hangup": failed} if failed else {},
        "rate_achieved": achieved,
    }
    if queued is not None:
        voice["hilo"] = {"queued": queued}
    return {"voice": voice}


def test_a_step_passes_only_with_no_failed_call_every_key_taken_and_the_rate_held() -> None:
    assert judge(step(), 4.0, hilo=True) == (True, "ok")
    assert judge(step(failed=2), 4.0, hilo=False) == (False, "2 failed (far_end_hangup 2)")
    assert judge(step(queued=18), 4.0, hilo=True) == (False, "2 answered but never queued")
    assert judge(step(queued=None), 4.0, hilo=False)[0]
    ok, why = judge(step(achieved=3.5), 4.0, hilo=False)
    assert not ok and "under 95% of 4/s" in why


def test_memory_growth_is_taken_after_the_warm_up_quarter() -> None:
    report = {
        "load_seconds": 100.0,
        "processes": {"hilo": {"t": [1.0, 20.0, 30.0, 60.0, 100.0, 110.0], "rss_mb": [100, 250, 260, 262, 273, 0]}},
    }
    assert memory_growth(report, "hilo") == {"from_mb": 260, "to_mb": 273, "growth_pct": 5.0}
    assert memory_growth(report, "redis") is None


def test_the_shipped_comparison_line_is_the_issues_menu_behind_a_gate() -> None:
    text = EXTENSIONS.read_text()
    assert "\nHILO_BENCH_PLAIN=0\n" in text  # off unless the benchmark turns it on
    inbound = text.split("[hilo-inbound]")[1].split("\n[")[0]
    includes = [line.split("=>")[1].strip() for line in inbound.splitlines() if line.startswith("include")]
    assert includes == ["hilo-numbers", "hilo-unlisted-numbers", "hilo-bench"]  # numbers first, the bench last
    lines = shipped_lines(text)
    menu = [(line.application, line.data) for line in lines if line.context == "hilo-bench-plain"]
    assert menu == [
        ("Answer", ""),
        ("Playback", "hello-world"),
        ("Read", "choice,vm-press,1,,1,6"),
        ("GotoIf", '$["${choice}" = "2"]?6'),
        ("Hangup", ""),
        ("MusicOnHold", ""),
        ("Hangup", ""),
    ]
    gate = [line for line in lines if line.context == "hilo-bench"]
    assert [(g.extension, g.priority, g.application) for g in gate] == [
        ("bench-plain", 1, "GotoIf"),
        ("bench-plain", 2, "Hangup"),
    ]
    assert '${HILO_BENCH_PLAIN}" = "1"' in gate[0].data


def test_lines_that_cannot_be_added_over_ami_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot add"):
        shipped_lines("[hilo-bench-plain]\nexten => s,1,Answer()\n same => n,Hangup()\n")


def test_trunks_are_known_by_their_address() -> None:
    assert trunk_for("127.0.0.2") == "carrier-sim"
    assert trunk_for("127.0.0.3") == "carrier-test"
    assert trunk_for("127.0.0.9") is None


LOG = """2026-12-07 21:11:40,000 INFO ivr.inbound: all well
2026-12-07 21:11:48,054 ERROR ivr.inbound: call ***********983 failed
Traceback (most recent call last):
  File "/usr/lib/python3.11/asyncio/tasks.py", line 500, in wait_for
    return fut.result()
  File "{root}/ivr/inbound.py", line 195, in _identify
    return await identity.identify_or_create(self.pool, "phone", phone), phone
  File "{root}/crm_bridge/customers.py", line 36, in identify
    async with pool.acquire() as conn:
asyncio.exceptions.CancelledError

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "{root}/ivr/inbound.py", line 223, in _run_call
    identification, phone = await asyncio.wait_for(
TimeoutError
2026-12-07 21:11:49,000 ERROR ivr.inbound: call ***********984 failed
Traceback (most recent call last):
  File "{root}/crm_bridge/customers.py", line 36, in identify
    async with pool.acquire() as conn:
TimeoutError
2026-12-07 21:11:50,000 WARNING reports.alerts: alert raised: queue support waiting 4 (threshold 3)
"""


def test_server_errors_are_grouped_by_what_was_raised_and_where() -> None:
    root = Path("/srv/hilo")
    assert server_errors(LOG.format(root=root), root) == [
        (2, "ivr.inbound: call … failed (TimeoutError, from crm_bridge/customers.py identify)")
    ]
    assert server_errors("2026-12-07 21:11:40,000 INFO x: fine\n", root) == []


def test_the_section_says_where_each_ones_call_setup_saturated() -> None:
    def step(system: str, rate: float, passed: bool, p99: float) -> dict[str, Any]:
        return {
            "system": system,
            "rate": rate,
            "passed": passed,
            "why": "ok" if passed else "x",
            "invite_to_200_p99": p99,
        }

    summary = {
        "steps": [
            step("plain", 32, True, 42.7),
            step("plain", 64, False, 7595.7),
            step("plain", 48, True, 15548.0),
            step("hilo", 4, True, 100.0),
        ]
    }
    assert _unsaturated(summary, "plain") == "32 calls/s (48: p99 15548 ms)"
    assert _unsaturated(summary, "hilo") == "4 calls/s"
    assert "call setup saturated" in _why(summary["steps"][2]) and _why(summary["steps"][0]) == "ok"


def test_the_targets_are_judged_from_the_saved_figures() -> None:
    def lat(p99: float) -> dict[str, float]:
        return {"p99": p99}

    summary: dict[str, Any] = {
        "knees": {"plain": 60.0, "hilo": 10.0},
        "steps": [
            {"system": "plain", "rate": 32.0, "passed": True, "invite_to_200_p99": 40.0},
            {"system": "plain", "rate": 60.0, "passed": True, "invite_to_200_p99": 15000.0},
        ],
        "latency_ms": {
            "plain": {"INVITE → 200 OK": lat(5.0), "answer → first prompt audio": lat(90.0)},
            "hilo": {"INVITE → 200 OK": lat(20.0), "answer → first prompt audio": lat(300.0)},
        },
        "cpu_ms_per_call": {"plain": {"total": 40.0}, "hilo": {"total": 80.0}},
        "soak": {
            "memory": {"hilo": {"growth_pct": 4.9}},
            "ghosts": {"channels": 0, "waiting": 0, "agents_not_available": None},
        },
        "after_runs": [{"after_run_at_rest": True, "probe": {"reached_agent": True}}, {"after_run_at_rest": True}],
    }
    targets = evaluate(summary)
    assert {k: t["met"] for k, t in targets.items()} == {
        "knee": False,
        "invite_to_200": True,  # +15 ms: within 20
        "first_prompt": False,  # +210 ms
        "cpu_per_call": True,  # exactly 2x
        "soak": True,
        "after_runs": True,
    }
    assert "0.17x plain's" in targets["knee"]["detail"] and "0.31x plain's highest rate" in targets["knee"]["detail"]
    summary["soak"]["ghosts"]["channels"] = 1
    assert evaluate(summary)["soak"]["met"] is False


def test_a_long_call_held_through_the_soak_is_a_target_of_its_own() -> None:
    summary: dict[str, Any] = {
        "knees": {"plain": 0.0, "hilo": 0.0},
        "steps": [],
        "latency_ms": {},
        "cpu_ms_per_call": {},
        "soak": {"memory": {}, "ghosts": {"channels": 0, "waiting": 0, "agents_not_available": None}},
        "after_runs": [],
    }
    assert "long_call" not in evaluate(summary)  # --long-call 0
    summary["long_call"] = {"ok": True, "talk_s": 1203.4, "problems": []}
    assert evaluate(summary)["long_call"] == {
        "met": True,
        "detail": "one call held 1203.4 s through the soak: completed, recorded, agent available again, nothing left",
    }
    summary["long_call"] = {"ok": False, "talk_s": 912.0, "problems": ["outcome 'dropped' (hung up by system)"]}
    held = evaluate(summary)["long_call"]
    assert held["met"] is False and held["detail"].endswith(": outcome 'dropped' (hung up by system)")


def test_the_soak_paragraph_says_what_became_of_the_long_call() -> None:
    assert _long_call_text({"profile": {}}) == ""  # a run saved before the soak held one
    assert "`--long-call 0`" in _long_call_text({"profile": {"long_call_minutes": 0}})
    held = {"ok": False, "minutes": 20, "problems": ["left behind: bridge b1"]}
    text = _long_call_text({"profile": {"long_call_minutes": 20}, "long_call": held})
    assert (
        "20 minutes" in text and "failed: left behind: bridge b1" in text and '"Long call (bench/long_call.py)"' in text
    )
