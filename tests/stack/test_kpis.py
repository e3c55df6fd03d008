"""KPIs from the real timeline: a scripted day of contacts written through Timeline (with the times they
happened; survey answers given to the flow's `survey` node), the reporting API (JSON and CSV, roles), survey
answers through the API, and today's figures on /metrics — each checked against values worked out by hand
below."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from crm_bridge import identity
from crm_bridge.timeline import Interaction, Timeline
from flows.engine import FlowContext, FlowServices, run_flow
from flows.schema import Flow
from flows.text_session import TextSession
from reports.config import load_kpi_config
from reports.monitor import WallboardMonitor
from reports.survey import answers_of
from tests.stack.conftest import Stack
from tests.stack.test_screenpop import sign_in

MADRID = ZoneInfo("Europe/Madrid")
# Support answers within 20 s, sales within 30 s; a contact again within 72 h is a repeat.
KPIS_YAML = "timezone: Europe/Madrid\nrepeat_window_hours: 72\nwrapup_max_s: 300\nrolling_window_minutes: 30\n"
SLA = {"support": 20.0, "sales": 30.0}


@pytest.fixture
async def kpi_monitor(stack: Stack, tmp_path: Path) -> AsyncIterator[WallboardMonitor]:
    monitor = stack.services.wallboard
    assert monitor is not None
    before = monitor.config
    (tmp_path / "kpis.yaml").write_text(KPIS_YAML)
    monitor.set_config(load_kpi_config(tmp_path, SLA))
    yield monitor
    monitor.set_config(before)


@dataclass
class Script:
    timeline: Timeline
    day: datetime  # local midnight of the scripted day

    def quarter_hours(self) -> int:
        """How many quarter-hours the scripted day has in its zone: 96, but 92 or 100 on a day the clocks
        change (a report of it has as many 15-minute rows)."""
        midnight = datetime.combine(self.day.date() + timedelta(days=1), time(), tzinfo=self.day.tzinfo)
        return round((midnight.timestamp() - self.day.timestamp()) / 900)

    def at(self, hhmmss: str, days: int = 0) -> datetime:
        h, m, s = (int(p) for p in hhmmss.split(":"))
        return self.day + timedelta(days=days, hours=h, minutes=m, seconds=s)

    async def contact(
        self, customer: Any, channel: str, start: str, *steps: tuple[str, str, dict[str, Any]], days: int = 0
    ) -> Interaction:
        """Start an interaction at `start`, record each (time, type, data), ending on `interaction.ended`."""
        interaction = await self.timeline.start_interaction(
            customer, channel, "inbound", started_at=self.at(start, days)
        )
        await self.timeline.record(interaction, "interaction.started", {}, at=self.at(start, days))
        for when, type_, data in steps:
            if type_ == "interaction.ended":
                await self.timeline.end_interaction(
                    interaction, data["outcome"], "caller", ended_at=self.at(when, days)
                )
                continue
            if type_ == "routing.queued":
                await self.timeline.update(interaction, state="queued", queue=data["queue"])
            await self.timeline.record(interaction, type_, data, at=self.at(when, days))
        return interaction


def ended(when: str, outcome: str = "completed") -> tuple[str, str, dict[str, Any]]:
    return (when, "interaction.ended", {"outcome": outcome})


SURVEY_FLOW = Flow.model_validate(
    {
        "flow": "after",
        "start": "survey",
        "nodes": {
            "survey": {
                "kind": "survey",
                "questions": [
                    {"question": "csat", "prompt": "Satisfied? 1 to 5"},
                    {"question": "nps", "prompt": "Recommend us? 0 to 10"},
                    {"question": "ces", "prompt": "Easy? 1 to 7"},
                ],
                "next": "bye",
            },
            "bye": {"kind": "hangup"},
        },
    }
)


async def survey_by_keypad(stack: Stack, interaction: Interaction, keys: list[str | None]) -> None:
    """The customer answers the `survey` node (None: no answer), saved on the interaction as on a call."""
    assert stack.services.timeline is not None
    save = answers_of(stack.pool, stack.services.timeline.publish, interaction.id)
    await run_flow(SURVEY_FLOW, TextSession(keys), FlowContext(services=FlowServices(save_survey_answer=save)))


def last_clock_change(on_or_before: date) -> date:
    """The latest day, not after the one given, on which Madrid's clocks changed (a 23- or 25-hour day)."""
    day = on_or_before
    while (
        datetime.combine(day + timedelta(days=1), time(), tzinfo=MADRID).timestamp()
        - datetime.combine(day, time(), tzinfo=MADRID).timestamp()
        == 86_400
    ):
        day -= timedelta(days=1)
    return day


async def scripted_day(stack: Stack, day: date | None = None) -> Script:
    """`day` in Madrid, by default ten days ago (at least ten days ago: every repeat window is over by now):

    1 Ana   voice    09:00 support, waits 15 s, bob 300 s of which 40 s on hold, wrap-up 60 s; csat 5, nps 10
    2 Ana   whatsapp 11:00 (back on another channel: 1 is not resolved first time, and a switch)
    3 Bo    voice    10:00 support, waits 40 s (after 20 s), bob talks 90 s and hangs up, Bo answers the survey
                     (30 s more on the line): csat 2, nps 6, no ces; no wrap-up
    4 Cy    voice    10:30 support, hangs up after 60 s in the queue: abandoned
    5 Cy    voice    12:00 support, asks for a callback: left out of service level and abandonment; called back
                     at 12:30 and connected (kept)
    6 Di    voice    13:00 transferred by the IVR
    7 Eva   voice    14:00 sales, waits 25 s (within 30), alice talks 600 s, wrap-up 30 s; survey: csat 4, nps 8,
                     ces 6
    8 Eva   voice    two days later: after the period, but a repeat of 7 (same channel)
    9 Fay   voice    15:00 support, asks for a callback; the dialler gives up at 15:21 (not kept)
    """
    assert stack.services.timeline is not None
    day = day or datetime.now(MADRID).date() - timedelta(days=10)
    script = Script(stack.services.timeline, datetime.combine(day, time(), tzinfo=MADRID))

    async def customer(number: str) -> Any:
        return (await identity.identify_or_create(stack.pool, "phone", number, "ES")).customer_id

    ana, bo, cy, di, eva, fay = [await customer(f"+34 600 70 00 0{n}") for n in range(1, 7)]
    c = script.contact
    await c(
        ana,
        "voice",
        "09:00:00",
        ("09:00:10", "routing.queued", {"queue": "support"}),
        ("09:00:25", "agent.answered", {"agent": "bob"}),
        ("09:01:00", "call.held", {"agent": "bob", "by": "bob"}),
        ("09:01:40", "call.unheld", {"agent": "bob", "by": "bob"}),
        ended("09:05:25"),
        ("09:06:25", "agent.disposition", {"agent": "bob", "disposition": "resolved"}),
        ("09:07:00", "survey.answer", {"question": "csat", "score": 5}),
        ("09:07:05", "survey.answer", {"question": "nps", "score": 10}),
    )
    await c(ana, "whatsapp", "11:00:00", ended("11:10:00"))
    bos = await c(
        bo,
        "voice",
        "10:00:00",
        ("10:00:05", "routing.queued", {"queue": "support"}),
        ("10:00:45", "agent.answered", {"agent": "bob"}),
        ("10:02:15", "agent.call_ended", {"agent": "bob", "hangup_by": "agent"}),
        ended("10:02:45"),
    )
    await survey_by_keypad(stack, bos, ["2", "6", None])
    await c(
        cy, "voice", "10:30:00", ("10:30:05", "routing.queued", {"queue": "support"}), ended("10:31:05", "abandoned")
    )
    await c(
        cy,
        "voice",
        "12:00:00",
        ("12:00:05", "routing.queued", {"queue": "support"}),
        ("12:01:00", "callback.requested", {"queue": "support"}),
        ended("12:01:05", "callback-requested"),
        ("12:30:00", "callback.dialing", {"attempt": 1}),
        ("12:30:20", "callback.connected", {"agent": "bob"}),
    )
    await c(
        di, "voice", "13:00:00", ("13:00:30", "ivr.transfer", {"to": "test-line"}), ended("13:00:30", "transferred")
    )
    evas = await c(
        eva,
        "voice",
        "14:00:00",
        ("14:00:05", "routing.queued", {"queue": "sales"}),
        ("14:00:30", "agent.answered", {"agent": "alice"}),
        ended("14:10:30"),
        ("14:11:00", "agent.disposition", {"agent": "alice", "disposition": "sale"}),
    )
    await survey_by_keypad(stack, evas, ["4", "8", "6"])
    await c(eva, "voice", "10:00:00", ended("10:05:00"), days=2)
    await c(
        fay,
        "voice",
        "15:00:00",
        ("15:00:05", "routing.queued", {"queue": "support"}),
        ("15:00:40", "callback.requested", {"queue": "support"}),
        ended("15:00:45", "callback-requested"),
        ("15:20:00", "callback.dialing", {"attempt": 1}),
        ("15:21:00", "callback.failed", {"reason": "no-answer", "attempts": 3}),
    )
    return script


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def report(stack: Stack, script: Script, **params: str) -> dict[str, Any]:
    query = {"from": script.day.date().isoformat(), "to": (script.day.date() + timedelta(days=1)).isoformat(), **params}
    resp = await stack.client.get("/api/reports/kpis", params=query, headers=headers(stack.token))
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


TEN_DAYS_AGO = datetime.now(MADRID).date() - timedelta(days=10)


@pytest.mark.parametrize(
    "on",
    [TEN_DAYS_AGO, last_clock_change(TEN_DAYS_AGO)],
    ids=["ten days ago", "the last day the clocks changed"],
)
async def test_a_scripted_day_gives_the_figures_worked_out_by_hand(
    stack: Stack, kpi_monitor: WallboardMonitor, on: date
) -> None:
    script = await scripted_day(stack, on)
    whole = await report(stack, script, interval="period")
    assert whole["timezone"] == "Europe/Madrid"
    assert whole["start"] == script.day.isoformat()
    [day] = whole["rows"]
    counts = {k: day[k] for k in ("contacts", "ended", "offered", "answered", "answered_in_sl", "abandoned")}
    assert counts == {"contacts": 8, "ended": 8, "offered": 4, "answered": 3, "answered_in_sl": 2, "abandoned": 1}
    assert (day["transferred"], day["callbacks_requested"]) == (1, 2)
    assert day["service_level"] == pytest.approx(2 / 4)  # 1 and 7 in time, 3 late, 4 abandoned; 5, 9 left out
    assert day["asa_s"] == pytest.approx((15 + 40 + 25) / 3)
    # talk ends when the agent does (3: before Bo's survey) and leaves out the hold (1: 300 - 40)
    assert day["talk_s"] == pytest.approx((260 + 90 + 600) / 3)
    assert day["hold_s"] == pytest.approx((40 + 0 + 0) / 3)
    assert day["wrapup_s"] == pytest.approx((60 + 0 + 30) / 3)
    assert day["aht_s"] == pytest.approx(((260 + 40 + 60) + 90 + (600 + 30)) / 3)
    assert day["abandonment_rate"] == pytest.approx(1 / 4)
    assert day["transfer_rate"] == pytest.approx(1 / 8)
    # callbacks: 5 connected, 9 failed
    assert (day["callbacks_connected"], day["callbacks_failed"]) == (1, 1)
    assert day["callback_kept_rate"] == pytest.approx(1 / 2)
    # answered: 1 (Ana came back), 3 (Bo never did), 7 (Eva came back two days later)
    assert (day["fcr_contacts"], day["fcr_resolved"], day["fcr_pending"]) == (3, 1, 0)
    assert day["fcr_rate"] == pytest.approx(1 / 3)
    # of the 8 ended contacts, only 1 was followed by a contact on another channel (whatsapp)
    assert (day["switch_contacts"], day["switched"]) == (8, 1)
    assert day["channel_switch_rate"] == pytest.approx(1 / 8)
    assert (day["csat"], day["csat_responses"]) == (pytest.approx(2 / 3), 3)  # 5 and 4 satisfied, 2 not
    assert (day["nps"], day["nps_responses"]) == (pytest.approx(0.0), 3)  # one promoter, one detractor
    assert (day["ces"], day["ces_responses"]) == (pytest.approx(6.0), 1)

    by_queue = {r["group"]: r for r in (await report(stack, script, interval="period", by="queue"))["rows"]}
    assert set(by_queue) == {"sales", "support", None}
    assert (by_queue["support"]["contacts"], by_queue["support"]["offered"]) == (5, 3)
    assert by_queue["support"]["callback_kept_rate"] == pytest.approx(1 / 2)
    assert by_queue["support"]["service_level"] == pytest.approx(1 / 3)
    assert by_queue["support"]["abandonment_rate"] == pytest.approx(1 / 3)
    assert by_queue["sales"]["service_level"] == 1.0  # 25 s is within sales' 30
    assert by_queue[None]["contacts"] == 2  # the whatsapp contact and the transfer were never queued

    by_channel = {r["group"]: r for r in (await report(stack, script, interval="period", by="channel"))["rows"]}
    assert (by_channel["voice"]["contacts"], by_channel["whatsapp"]["contacts"]) == (7, 1)
    assert by_channel["voice"]["channel_switch_rate"] == pytest.approx(1 / 7)  # Ana's call, then her whatsapp
    assert by_channel["whatsapp"]["service_level"] is None

    by_agent = {r["group"]: r for r in (await report(stack, script, interval="period", by="agent"))["rows"]}
    assert (by_agent["bob"]["answered"], by_agent["alice"]["answered"]) == (2, 1)
    assert by_agent["bob"]["aht_s"] == pytest.approx((360 + 90) / 2)
    assert by_agent["bob"]["hold_s"] == pytest.approx(40 / 2)
    assert (by_agent["bob"]["csat"], by_agent["alice"]["ces"]) == (pytest.approx(1 / 2), 6.0)

    quarters = (await report(stack, script, interval="15m"))["rows"]
    assert len(quarters) == script.quarter_hours()  # 96; 92 or 100 on a day the clocks change
    if on != TEN_DAYS_AGO:
        assert len(quarters) in (92, 100)  # the second case is such a day, on purpose
    busy = {r["start"][11:16]: r for r in quarters if r["contacts"]}
    assert sorted(busy) == ["09:00", "10:00", "10:30", "11:00", "12:00", "13:00", "14:00", "15:00"]
    assert busy["09:00"]["service_level"] == 1.0
    assert busy["10:00"]["service_level"] == 0.0  # Bo waited 40 s
    assert busy["10:30"]["abandoned"] == 1
    assert busy["12:00"]["offered"] == 0  # the callback

    resp = await stack.client.get(
        "/api/reports/kpis.csv",
        params={
            "from": script.day.date().isoformat(),
            "to": (script.day + timedelta(days=1)).date().isoformat(),
            "interval": "day",
            "by": "queue",
        },
        headers=headers(stack.token),
    )
    assert resp.status == 200
    assert resp.content_type == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    support = next(r for r in rows if r["queue"] == "support")
    assert float(support["service_level"]) == pytest.approx(1 / 3)
    assert next(r for r in rows if r["queue"] == "")["service_level"] == ""


async def test_bad_report_queries_name_the_field(stack: Stack, kpi_monitor: WallboardMonitor) -> None:
    cases = [
        ({"from": "2026-03-02", "to": "2026-03-01"}, "to"),
        ({"from": "2026-03-02", "to": "2026-03-03", "tz": "Mars/Olympus"}, "tz"),
        ({"from": "2026-01-01", "to": "2026-03-01", "interval": "15m"}, "interval"),
        ({"from": "2024-01-01", "to": "2026-03-01"}, "to"),
        ({"from": "yesterday", "to": "2026-03-01"}, "from"),
        ({"from": "2026-03-02", "to": "2026-03-03", "by": "mood"}, "by"),
        ({"from": "2026-03-02", "to": "2026-03-03", "colour": "red"}, "colour"),
    ]
    for params, field in cases:
        resp = await stack.client.get("/api/reports/kpis", params=params, headers=headers(stack.token))
        assert resp.status == 400, params
        assert (await resp.json())["field"] == field, params


async def test_reports_are_for_supervisors_and_admins(stack: Stack, kpi_monitor: WallboardMonitor) -> None:
    params = {"from": "2026-03-02", "to": "2026-03-03"}
    assert (await stack.client.get("/api/reports/kpis", params=params)).status == 401
    agent = await sign_in(stack, "kpi-agent", "agent", "bob")
    assert (await stack.client.get("/api/reports/kpis", params=params, headers=headers(agent))).status == 403
    assert (await stack.client.get("/api/reports/wallboard", headers=headers(agent))).status == 403
    supervisor = await sign_in(stack, "kpi-supervisor", "supervisor")
    assert (await stack.client.get("/api/reports/kpis", params=params, headers=headers(supervisor))).status == 200
    assert (await stack.client.get("/api/reports/kpis.csv", params=params, headers=headers(supervisor))).status == 200


async def test_survey_answers_through_the_api_once_each(stack: Stack, kpi_monitor: WallboardMonitor) -> None:
    assert stack.services.timeline is not None
    who = await identity.identify_or_create(stack.pool, "phone", "+34 600 70 00 09", "ES")
    interaction = await stack.services.timeline.start_interaction(who.customer_id, "webchat", "inbound")
    url = f"/api/interactions/{interaction.id}/survey-answers"
    resp = await stack.client.post(
        url, json={"question": "nps", "score": 9, "survey": "post-chat"}, headers=headers(stack.token)
    )
    assert resp.status == 201, await resp.text()
    event = (await resp.json())["event"]
    assert (event["type"], event["channel"], event["data"]) == (
        "survey.answer",
        "webchat",
        {"question": "nps", "score": 9, "survey": "post-chat"},
    )
    await stack.hilo_events.expect("survey.answer", within=5, id=event["id"])
    again = await stack.client.post(
        url, json={"question": "nps", "score": 9, "survey": "post-chat"}, headers=headers(stack.token)
    )
    assert (again.status, (await again.json())["duplicate"]) == (200, True)
    other = await stack.client.post(
        url, json={"question": "nps", "score": 3, "survey": "post-chat"}, headers=headers(stack.token)
    )
    assert other.status == 409
    for body, field in [
        ({"question": "nps", "score": 11}, "score"),
        ({"question": "mood", "score": 3}, "question"),
        ({"question": "csat", "score": 4.5}, "score"),
        ({"question": "csat", "score": 4, "extra": 1}, "extra"),
    ]:
        bad = await stack.client.post(url, json=body, headers=headers(stack.token))
        assert (bad.status, (await bad.json())["field"]) == (400, field), body
    missing = await stack.client.post(
        "/api/interactions/00000000-0000-4000-8000-000000000000/survey-answers",
        json={"question": "ces", "score": 5},
        headers=headers(stack.token),
    )
    assert missing.status == 404
    supervisor = await sign_in(stack, "kpi-supervisor", "supervisor")
    assert (
        await stack.client.post(url, json={"question": "ces", "score": 5}, headers=headers(supervisor))
    ).status == 403
    count = await stack.pool.fetchval(
        "SELECT count(*) FROM timeline_events WHERE interaction_id = $1 AND type = 'survey.answer'", interaction.id
    )
    assert count == 1


async def test_todays_figures_are_on_metrics_as_in_the_report(
    stack: Stack, kpi_monitor: WallboardMonitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stack.services.timeline is not None
    who = await identity.identify_or_create(stack.pool, "phone", "+34 600 70 00 08", "ES")
    now = datetime.now(UTC)
    midnight = datetime.combine(now.astimezone(MADRID).date(), datetime.min.time(), MADRID)
    start = max(now - timedelta(minutes=3), midnight + timedelta(seconds=1))  # today in Madrid, even at 00:01
    one = await stack.services.timeline.start_interaction(who.customer_id, "voice", "inbound", started_at=start)
    await stack.services.timeline.record(one, "interaction.started", {}, at=start)
    await stack.services.timeline.record(one, "routing.queued", {"queue": "support"}, at=start + timedelta(seconds=5))
    await stack.services.timeline.record(one, "agent.answered", {"agent": "bob"}, at=start + timedelta(seconds=17))
    await stack.services.timeline.end_interaction(one, "completed", "caller", ended_at=start + timedelta(seconds=77))
    await kpi_monitor.refresh_today()

    resp = await stack.client.get("/metrics")  # anonymous: the aggregates only
    text = await resp.text()
    assert 'hilo_kpi_service_level_ratio{by="none",key="all"} 1.0' in text
    assert 'hilo_kpi_asa_seconds{by="queue",key="support"} 12.0' in text
    assert 'hilo_kpi_contacts{by="channel",key="voice"} 1.0' in text
    assert 'by="agent"' not in text
    monkeypatch.setattr(stack.settings, "metrics_token", SecretStr("scrape-token-of-this-test"))
    resp = await stack.client.get("/metrics", headers={"Authorization": "Bearer scrape-token-of-this-test"})
    assert 'hilo_kpi_aht_seconds{by="agent",key="bob"} 60.0' in await resp.text()

    today = datetime.now(MADRID).date()
    api = await stack.client.get(
        "/api/reports/kpis",
        params={"from": today.isoformat(), "to": (today + timedelta(days=1)).isoformat(), "interval": "period"},
        headers=headers(stack.token),
    )
    [row] = (await api.json())["rows"]
    assert (row["service_level"], row["asa_s"], row["aht_s"]) == (1.0, 12.0, 60.0)
