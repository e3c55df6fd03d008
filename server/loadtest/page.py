"""The report as one self-contained HTML page: the figures in tables and the plots as inline SVG drawn here
from the report's data (no script, no font, nothing fetched when the page opens)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

COLORS = ("#1f77b4", "#2ca02c", "#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#17becf", "#7f7f7f")
Point = tuple[float, float | None]


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[Point]


def nice_step(span: float, ticks: int = 5) -> float:
    """A step of 1, 2 or 5 times a power of ten giving about `ticks` ticks over `span`."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 5.0, 10.0):
        if raw <= m * power:
            return m * power
    return 10.0 * power


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v - round(v)) < 1e-9:
        return f"{v:,.0f}"
    return f"{v:.2f}".rstrip("0").rstrip(".") if abs(v) < 10 else f"{v:.1f}"


def chart(
    chart_id: str,
    title: str,
    series: Sequence[Series],
    *,
    y_label: str = "",
    x_label: str = "seconds into the run",
    scatter: bool = False,
    width: int = 880,
    height: int = 260,
) -> str:
    """An SVG line (or scatter) chart of `series`; points with a None value break the line."""
    left, right, top, bottom = 64, 16, 30, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [(x, y) for s in series for x, y in s.points if y is not None and math.isfinite(y)]
    xs = [x for x, _ in values] or [0.0, 1.0]
    ys = [y for _, y in values] or [0.0, 1.0]
    x0, x1 = min(0.0, min(xs)), max(xs)
    y0, y1 = min(0.0, min(ys)), max(ys)
    if x1 <= x0:
        x1 = x0 + 1
    if y1 <= y0:
        y1 = y0 + 1
    ystep, xstep = nice_step(y1 - y0), nice_step(x1 - x0, 8)
    y1 = math.ceil(y1 / ystep) * ystep
    x1 = math.ceil(x1 / xstep) * xstep

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y - y0) / (y1 - y0) * plot_h

    parts = [
        f'<svg id="{escape(chart_id)}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="18" class="title">{escape(title)}</text>',
    ]
    tick = y0
    while tick <= y1 + ystep / 2:
        y = py(tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_fmt(tick)}</text>')
        tick += ystep
    tick = x0
    while tick <= x1 + xstep / 2:
        x = px(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" class="axis"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" class="tick" text-anchor="middle">{_fmt(tick)}</text>')
        tick += xstep
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" class="axis"/>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" class="axis"/>')
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 6}" class="label" text-anchor="middle">{escape(x_label)}</text>'
    )
    parts.append(
        f'<text transform="translate(14 {top + plot_h / 2}) rotate(-90)" class="label"'
        f' text-anchor="middle">{escape(y_label)}</text>'
    )
    legend_x = left + 8
    for n, s in enumerate(series):
        color = COLORS[n % len(COLORS)]
        drawn = [(x, y) for x, y in s.points if y is not None and math.isfinite(y)]
        name = escape(s.name)
        if scatter:
            dots = "".join(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2"/>' for x, y in drawn)
            parts.append(f'<g class="series" data-name="{name}" data-points="{len(drawn)}" fill="{color}">{dots}</g>')
        else:
            runs: list[list[str]] = [[]]
            for px_, value in s.points:
                if value is None or not math.isfinite(value):
                    runs.append([])
                else:
                    runs[-1].append(f"{px(px_):.1f},{py(value):.1f}")
            lines = "".join(
                f'<polyline points="{" ".join(r)}" fill="none" stroke="{color}" stroke-width="1.6"/>' for r in runs if r
            )
            parts.append(f'<g class="series" data-name="{name}" data-points="{len(drawn)}">{lines}</g>')
        parts.append(f'<rect x="{legend_x}" y="{top + 4}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="{top + 13}" class="legend">{name}</text>')
        legend_x += 24 + 7 * len(s.name)
    parts.append("</svg>")
    return "".join(parts)


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:960px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.ok{color:#17662a;font-weight:600}.bad{color:#b00020;font-weight:600}
svg.chart{display:block;margin:10px 0;background:#fff;border:1px solid #e3e3e3}
svg .title{font-size:13px;font-weight:600}svg .tick,svg .legend{font-size:11px;fill:#444}
svg .label{font-size:11px;fill:#666}svg .grid{stroke:#eee}svg .axis{stroke:#888}
code{background:#f5f5f5;padding:1px 4px}
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape('' if v is None else str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _xy(values: Sequence[float | None]) -> list[Point]:
    return [(float(i), None if v is None else float(v)) for i, v in enumerate(values)]


def render(report: dict[str, Any]) -> str:
    """The page of a report (report.build's dictionary)."""
    voice = report.get("voice") or {}
    per_s = voice.get("per_second") or {}
    hilo = voice.get("hilo") or {}
    hilo_s = hilo.get("per_second") or {}
    latency = voice.get("latency_ms") or {}
    procs = report.get("processes") or {}
    after = report.get("after_run") or {}
    title = f"Hilo load test: {report.get('label', '')}".strip(": ")
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>{escape(report.get('started_at', ''))} to {escape(report.get('ended_at', ''))};"
        f" target {escape(str(report.get('target', {}).get('sip', '')))};"
        f" command <code>{escape(report.get('command', ''))}</code></p>",
    ]
    verdict = after.get("ok")
    if verdict is not None:
        cls = "ok" if verdict else "bad"
        out.append(f"<p class='{cls}' id='verdict'>{escape(after.get('summary', ''))}</p>")
    counts = voice.get("counts") or {}
    if counts:
        out.append("<h2>Calls</h2>")
        out.append(
            _table(
                ["offered", "answered", "succeeded", "failed", "asked rate /s", "achieved rate /s"],
                [
                    [
                        counts.get("offered"),
                        counts.get("answered"),
                        counts.get("succeeded"),
                        counts.get("failed"),
                        voice.get("rate_asked"),
                        voice.get("rate_achieved"),
                    ]
                ],
            )
        )
        if voice.get("failures"):
            out.append(_table(["failure", "calls"], sorted(voice["failures"].items())))
        rows = [[name, *(s.get(k) for k in ("n", "p50", "p90", "p99", "max"))] for name, s in latency.items()]
        if hilo.get("queue_wait_s"):
            q = hilo["queue_wait_s"]
            rows.append(["queue wait (s)", *(q.get(k) for k in ("n", "p50", "p90", "p99", "max"))])
        out.append(_table(["latency (ms)", "n", "p50", "p90", "p99", "max"], rows))
        series = [
            Series("offered", _xy(per_s.get("offered", []))),
            Series("answered", _xy(per_s.get("answered", []))),
            Series("failed", _xy(per_s.get("failed", []))),
        ]
        if hilo_s:
            series.insert(2, Series("abandoned (queue)", _xy(hilo_s.get("abandoned", []))))
        out.append(chart("calls-per-second", "Calls per second", series, y_label="calls"))
        out.append(chart("in-call", "Calls up at once", [Series("in call", _xy(per_s.get("in_call", [])))],
                         y_label="calls"))  # fmt: skip
        points = voice.get("points") or {}
        out.append(
            chart(
                "latency",
                "INVITE → 200 OK and answer → first prompt audio, per call (by answer time)",
                [
                    Series("INVITE→200 ms", [tuple(p) for p in points.get("invite_to_answer_ms", [])]),
                    Series("answer→first audio ms", [tuple(p) for p in points.get("answer_to_audio_ms", [])]),
                ],
                y_label="ms",
                scatter=True,
            )
        )
    if hilo:
        out.append("<h2>Queues (Hilo's events)</h2>")
        out.append(
            _table(
                ["queued", "answered by an agent", "abandoned in queue", "still waiting", "service level %"],
                [
                    [
                        hilo.get("queued"),
                        hilo.get("answered_by_agent"),
                        hilo.get("abandoned_in_queue"),
                        hilo.get("still_waiting"),
                        hilo.get("service_level_pct"),
                    ]
                ],
            )
        )
        out.append(
            chart(
                "queue-waits",
                "Queue wait of each call an agent answered (by answer time)",
                [Series("wait s", [tuple(p) for p in hilo.get("waits", [])])],
                y_label="seconds",
                scatter=True,
            )
        )
        out.append(
            chart(
                "service-level",
                "Service level so far (answered within the queue's threshold)",
                [Series("service level %", _xy(hilo_s.get("service_level_pct", [])))],
                y_label="%",
            )
        )
    if procs:
        out.append("<h2>Processes</h2>")
        out.append(
            _table(
                ["process", "CPU s (load window)", "CPU ms per succeeded call", "RSS MB first", "RSS MB last", "pids"],
                [
                    [
                        name,
                        p.get("cpu_s"),
                        p.get("cpu_ms_per_call"),
                        p.get("rss_mb_first"),
                        p.get("rss_mb_last"),
                        p.get("pids"),
                    ]
                    for name, p in procs.items()
                ],
            )
        )
        out.append(
            chart(
                "cpu",
                "CPU per process group (% of one core)",
                [Series(name, [(t, v) for t, v in zip(p.get("t", []), p.get("cpu_pct", []), strict=False)])
                 for name, p in procs.items()],
                y_label="% of a core",
            )
        )  # fmt: skip
        out.append(
            chart(
                "memory",
                "Resident memory per process group",
                [Series(name, [(t, v) for t, v in zip(p.get("t", []), p.get("rss_mb", []), strict=False)])
                 for name, p in procs.items()],
                y_label="MB",
            )
        )  # fmt: skip
    text = report.get("text") or {}
    if text.get("channels"):
        out.append("<h2>Text conversations</h2>")
        rows = []
        for name, c in text["channels"].items():
            r = c.get("first_reply_ms") or {}
            rows.append([name, c.get("started"), c.get("replied"), c.get("failed"), r.get("p50"), r.get("p99")])
        out.append(_table(["channel", "started", "replied", "failed", "first reply p50 ms", "p99 ms"], rows))
    if after:
        out.append("<h2>After the run</h2>")
        out.append(
            _table(
                ["check", "result"],
                [[k, v] for k, v in after.items() if k not in ("summary",)],
            )
        )
    out.append("</body></html>")
    return "\n".join(out)
