"""The report page: self-contained HTML whose plots are SVG drawn from the report's own data."""

from __future__ import annotations

import re
from typing import Any

from server.loadtest.page import Series, chart, nice_step, render


def test_axis_steps_are_round() -> None:
    assert [nice_step(s) for s in (1, 7, 10, 45, 230, 0.3)] == [0.2, 2.0, 2.0, 10.0, 50.0, 0.1]
    assert nice_step(0) == 1.0


def test_a_line_chart_breaks_where_values_are_missing() -> None:
    svg = chart("c", "T", [Series("a", [(0, 1), (1, None), (2, 3), (3, 4)]), Series("b", [])], y_label="ms")
    assert svg.startswith('<svg id="c" class="chart"') and svg.endswith("</svg>")
    a = re.search(r'<g class="series" data-name="a" data-points="3">(.*?)</g>', svg)
    assert a is not None and a.group(1).count("<polyline") == 2
    assert 'data-name="b" data-points="0"' in svg
    scatter = chart("s", "T", [Series("x", [(0, 5), (1, 6)])], scatter=True)
    assert scatter.count("<circle") == 2


def report_fixture() -> dict[str, Any]:
    latency = {"n": 2, "p50": 4.0, "p90": 5.0, "p99": 5.0, "max": 5.0}
    return {
        "label": "2 calls/s for 5 s <test>",
        "command": "hilo loadtest --rate 2",
        "started_at": "2026-12-07T20:00:00+00:00",
        "ended_at": "2026-12-07T20:00:30+00:00",
        "target": {"sip": "127.0.0.1:5060"},
        "voice": {
            "counts": {"offered": 2, "answered": 2, "succeeded": 1, "failed": 1},
            "failures": {"far_end_hangup": 1},
            "rate_asked": 2.0,
            "rate_achieved": 2.0,
            "latency_ms": {"INVITE → 200 OK": latency, "answer → first prompt audio": latency},
            "per_second": {"offered": [2, 0], "answered": [2, 0], "failed": [0, 1], "in_call": [2, 1]},
            "points": {"invite_to_answer_ms": [[0.1, 4.0], [0.6, 5.0]], "answer_to_audio_ms": [[0.1, 20.0]]},
            "hilo": {
                "queued": 2,
                "answered_by_agent": 1,
                "abandoned_in_queue": 0,
                "still_waiting": 1,
                "service_level_pct": 100.0,
                "queue_wait_s": latency,
                "per_second": {"abandoned": [0, 0], "service_level_pct": [None, 100.0]},
                "waits": [[1.5, 0.4]],
            },
        },
        "processes": {
            "asterisk": {
                "cpu_s": 0.2,
                "cpu_ms_per_call": 200.0,
                "rss_mb_first": 80,
                "rss_mb_last": 81,
                "pids": 1,
                "t": [1.0, 2.0],
                "cpu_pct": [5.0, 7.5],
                "rss_mb": [80.0, 81.0],
            },
        },
        "text": {"channels": {"sms": {"started": 3, "replied": 3, "failed": 0, "first_reply_ms": latency}}},
        "after_run": {"ok": False, "summary": "NOT at rest 5 s after the run: 1 caller(s) still waiting.", "x": 1},
    }


def test_the_page_holds_every_plot_and_nothing_from_elsewhere() -> None:
    page = render(report_fixture())
    for plot in ("calls-per-second", "in-call", "latency", "queue-waits", "service-level", "cpu", "memory"):
        assert f'<svg id="{plot}"' in page
    assert "&lt;test&gt;" in page and "<test>" not in page  # text is escaped
    assert "class='bad' id='verdict'" in page
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert re.search(r'data-name="abandoned \(queue\)" data-points="2"', page)
    assert ">sms<" in page
