"""Report intervals (15 minutes, days in the configured zone, clock changes included), groups, CSV, and the
kpis.yaml configuration with its errors."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hilo.settings import REPO_ROOT
from hilo.yamlconf import ConfigError
from reports.config import KpiConfig, load_kpi_config
from reports.kpis import Contact, KpiRules
from reports.report import build_rows, intervals, to_csv
from reports.survey import InvalidSurveyAnswer, parse_answer

MADRID = ZoneInfo("Europe/Madrid")
RULES = KpiRules(service_level_of=lambda q: 20.0, repeat_window=timedelta(hours=1), wrapup_max_s=60)


def local(at: datetime) -> str:
    return at.astimezone(MADRID).strftime("%H:%M")


def contact(n: int, at: datetime, *, channel: str = "voice", queue: str | None = "support", wait: float = 5) -> Contact:
    return Contact(
        interaction_id=f"i{n}",
        customer_id=f"c{n}",
        channel=channel,
        started_at=at,
        queue=queue,
        queued_at=at + timedelta(seconds=10) if queue else None,
        agent="bob",
        answered_at=at + timedelta(seconds=10 + wait),
        ended_at=at + timedelta(seconds=100),
        outcome="completed",
    )


def test_quarter_hours_are_cut_to_the_period() -> None:
    start = datetime(2026, 3, 2, 9, 10, tzinfo=MADRID)
    end = datetime(2026, 3, 2, 9, 50, tzinfo=MADRID)
    got = [(local(a), local(b)) for a, b in intervals(start, end, "15m", MADRID)]
    assert got == [("09:10", "09:15"), ("09:15", "09:30"), ("09:30", "09:45"), ("09:45", "09:50")]


def test_days_follow_the_zone_across_a_clock_change() -> None:
    start = datetime(2026, 3, 28, tzinfo=MADRID)
    end = datetime(2026, 3, 31, tzinfo=MADRID)
    days = list(intervals(start, end, "day", MADRID))
    assert [a.astimezone(MADRID).day for a, _ in days] == [28, 29, 30]
    assert [(b - a).total_seconds() / 3600 for a, b in days] == [24, 23, 24]  # 29 March has no 02:00-03:00
    assert all(a.astimezone(MADRID).hour == 0 for a, _ in days)


def test_quarters_across_the_spring_forward_hour_are_fifteen_real_minutes() -> None:
    start = datetime(2026, 3, 29, 0, 45, tzinfo=UTC)  # 01:45 in Madrid, then clocks jump 02:00 -> 03:00
    end = start + timedelta(minutes=45)
    got = list(intervals(start, end, "15m", MADRID))
    assert [local(a) for a, _ in got] == ["01:45", "03:00", "03:15"]
    assert all((b - a) == timedelta(minutes=15) for a, b in got)


def test_rows_per_interval_and_group_with_empty_intervals_kept() -> None:
    start = datetime(2026, 3, 2, 9, 0, tzinfo=MADRID)
    end = start + timedelta(minutes=45)
    contacts = [
        contact(1, start + timedelta(minutes=1)),
        contact(2, start + timedelta(minutes=2), channel="webchat", queue=None, wait=30),
        contact(3, start + timedelta(minutes=40), wait=30),
        contact(4, end + timedelta(minutes=1)),  # after the period: left out
    ]
    rows = build_rows(
        contacts, start=start, end=end, interval="15m", by="channel", zone=MADRID, rules=RULES, after=None
    )
    table = [(local(r.start), r.group, r.kpis.contacts, r.kpis.service_level) for r in rows]
    assert table == [
        ("09:00", "voice", 1, 1.0),
        ("09:00", "webchat", 1, None),  # not queued: no service level
        ("09:15", "voice", 0, None),
        ("09:15", "webchat", 0, None),
        ("09:30", "voice", 1, 0.0),
        ("09:30", "webchat", 0, None),
    ]
    whole = build_rows(
        contacts, start=start, end=end, interval="period", by="none", zone=MADRID, rules=RULES, after=None
    )
    assert [(r.group, r.kpis.contacts, r.kpis.answered_in_sl, r.kpis.offered) for r in whole] == [(None, 3, 1, 2)]


def test_csv_has_one_column_per_figure_and_blank_for_none() -> None:
    start = datetime(2026, 3, 2, tzinfo=MADRID)
    rows = build_rows(
        [contact(1, start + timedelta(hours=9))],
        start=start,
        end=start + timedelta(days=1),
        interval="day",
        by="queue",
        zone=MADRID,
        rules=RULES,
        after=None,
    )
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows, "queue"))))
    assert len(parsed) == 1
    assert parsed[0]["queue"] == "support"
    assert (parsed[0]["start"], parsed[0]["end"]) == ("2026-03-02T00:00:00+01:00", "2026-03-03T00:00:00+01:00")
    assert parsed[0]["service_level"] == "1.0"
    assert parsed[0]["fcr_rate"] == ""


def test_the_shipped_kpis_yaml_is_valid() -> None:
    config = load_kpi_config(REPO_ROOT / "dialplans", {"sales": 30, "support": 20})
    assert config.service_level_of("sales") == 30  # from routing.yaml's SLA
    assert config.service_level_of("gone") == config.service_level_of(None) == config.service_level_s
    assert config.thresholds_of("support").waiting_above is not None


def test_config_errors_name_file_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "kpis.yaml").write_text("timezone: Mars/Olympus\n")
    with pytest.raises(ConfigError, match=r"kpis.yaml:1: timezone: .*unknown IANA time zone"):
        load_kpi_config(tmp_path)
    (tmp_path / "kpis.yaml").write_text("queues:\n  support:\n    alerts:\n      service_level_below_pct: 120\n")
    with pytest.raises(ConfigError, match=r"kpis.yaml:4: queues.support.alerts.service_level_below_pct"):
        load_kpi_config(tmp_path)
    (tmp_path / "kpis.yaml").write_text("queues:\n  support: {}\n  billing: {}\n")
    with pytest.raises(ConfigError, match=r"kpis.yaml:3: queues.billing: no such queue in routing.yaml"):
        load_kpi_config(tmp_path, {"support": 20})


def test_no_file_means_defaults(tmp_path: Path) -> None:
    assert load_kpi_config(tmp_path) == KpiConfig()


def test_survey_answers_are_on_their_scale_and_errors_name_the_field() -> None:
    assert parse_answer({"question": "ces", "score": 7}).score == 7
    for data, where in [
        ({"question": "nps", "score": 11}, "survey.answer score: .*from 0 to 10"),
        ({"question": "csat", "score": 0}, "survey.answer score: .*from 1 to 5"),
        ({"question": "csat", "score": True}, "survey.answer score"),
        ({"question": "mood", "score": 3}, "survey.answer question"),
        ({"question": "csat", "score": 3, "note": "x"}, "survey.answer note"),
    ]:
        with pytest.raises(InvalidSurveyAnswer, match=where):
            parse_answer(data)
