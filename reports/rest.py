"""The reporting API (supervisor and admin): KPIs per interval and group as JSON or CSV, the wallboard's
current picture, the history of queue alerts; and recording a survey answer (admin: survey tools). A
supervisor's figures, wallboard and alerts are cut to their scope (routing/scope.py): their teams' agents
and queues. Declared on this module's route table, served in the one API (hilo.web.api)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, RootModel

from crm_bridge.schemas import EventOut, Timestamp
from crm_bridge.timeline import TIMELINE
from hilo.web.auth import ADMIN, STAFF, principal
from hilo.web.keys import POOL
from hilo.web.openapi import ApiError, Input, Reply, Routes, bad_request, conflict, not_found
from reports.alerts import KINDS
from reports.kpis import Kpis
from reports.monitor import WALLBOARD, WallboardMonitor
from reports.report import Row, count_intervals, to_csv
from reports.survey import AnswerConflict, SurveyAnswerEvent, save_answer
from reports.wallboard_view import ALL
from routing.scope import scope_of

ROUTES = Routes()
MAX_PERIOD = timedelta(days=366)
MAX_INTERVALS = 3000  # 31 days of quarter hours


def _monitor(request: web.Request) -> WallboardMonitor:
    monitor = request.app.get(WALLBOARD)
    if monitor is None:
        raise ApiError(503, "unavailable", "reports are not running on this server")
    return monitor


# KPIs -----------------------------------------------------------------------------------------------


class KpiQuery(Input):
    model_config = ConfigDict(extra="forbid", populate_by_name=False)

    start: datetime = Field(
        alias="from",
        description="start of the period (ISO 8601; without an offset: in `tz`); contacts are in the"
        " interval in which they started",
    )
    end: datetime = Field(alias="to", description="end of the period, excluded")
    interval: Literal["15m", "day", "period"] = Field("day", description="rows per quarter hour, day, or one")
    by: Literal["none", "channel", "queue", "agent"] = Field("none", description="one row per group per interval")
    tz: str | None = Field(None, max_length=64, description="IANA zone of days and quarters (default: kpis.yaml)")


class KpiRow(Kpis):
    start: str = Field(json_schema_extra={"format": "date-time"})
    end: str = Field(json_schema_extra={"format": "date-time"})
    group: str | None = Field(description="the channel, queue or agent (null: none, or not queued/answered)")


class KpiReport(BaseModel):
    start: str = Field(json_schema_extra={"format": "date-time"})
    end: str = Field(json_schema_extra={"format": "date-time"})
    interval: str
    by: str
    timezone: str
    generated_at: Timestamp
    rows: list[KpiRow]


class KpiCsv(RootModel[str]):
    """text/csv: a header line, then one line per row (columns as the JSON rows; empty for null)."""


def _period(request: web.Request, query: KpiQuery) -> tuple[datetime, datetime, ZoneInfo]:
    monitor = _monitor(request)
    zone_name = query.tz or monitor.config.timezone
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise bad_request(f"unknown IANA time zone {zone_name!r}", "tz") from exc
    start, end = (t if t.tzinfo is not None else t.replace(tzinfo=zone) for t in (query.start, query.end))
    if end <= start:
        raise bad_request("must be after from", "to")
    if end - start > MAX_PERIOD:
        raise bad_request(f"a report covers at most {MAX_PERIOD.days} days", "to")
    if count_intervals(start, end, query.interval) > MAX_INTERVALS:
        raise bad_request("too many 15-minute intervals: ask for days, or a shorter period", "interval")
    return start, end, zone


async def _rows(request: web.Request, query: KpiQuery) -> tuple[datetime, datetime, ZoneInfo, list[Row]]:
    """The rows over the contacts in the asker's scope (routing/scope.py): a supervisor's are those their
    teams' agents answered, and those no agent answered that were queued in a queue of their teams."""
    start, end, zone = _period(request, query)
    reports = _monitor(request).reports
    scope = await scope_of(reports.pool, principal(request))
    only = None if scope.everything else (lambda c: scope.has_work(c.agent, c.queue))
    rows = await reports.rows(start, end, query.interval, query.by, zone=zone, only=only)
    return start, end, zone, rows


@ROUTES.route(
    "GET",
    "/api/reports/kpis",
    summary="KPIs of a period per interval and channel, queue or agent",
    tag="reports",
    roles=STAFF,
    ok={200: KpiReport},
    errors={503: "reports are not running on this server"},
)
async def kpi_report(request: web.Request, query: KpiQuery) -> KpiReport:
    """Computed from the timeline at the time of asking; docs/reports.md ("Formulas") gives every formula.
    A supervisor's figures are of their teams' contacts only (answered by an agent of their teams, or never
    answered and queued in a queue those agents serve); one without teams has none."""
    start, end, zone, rows = await _rows(request, query)
    return KpiReport(
        start=start.astimezone(zone).isoformat(),
        end=end.astimezone(zone).isoformat(),
        interval=query.interval,
        by=query.by,
        timezone=zone.key,
        generated_at=datetime.now(UTC),
        rows=[KpiRow(**r.as_dict("group")) for r in rows],
    )


@ROUTES.route(
    "GET",
    "/api/reports/kpis.csv",
    summary="The same KPIs as CSV",
    tag="reports",
    roles=STAFF,
    ok={200: KpiCsv},
    errors={503: "reports are not running on this server"},
    media_type="text/csv",
)
async def kpi_report_csv(request: web.Request, query: KpiQuery) -> web.StreamResponse:
    """The group column is named after `by` (channel, queue or agent)."""
    start, end, zone, rows = await _rows(request, query)
    name = f"hilo-kpis-{start.astimezone(zone):%Y%m%dT%H%M}-{end.astimezone(zone):%Y%m%dT%H%M}-{query.by}.csv"
    return web.Response(
        text=to_csv(rows, query.by),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# The wallboard ---------------------------------------------------------------------------------------


class QueueAgents(BaseModel):
    model_config = ConfigDict(extra="allow")  # one count per live agent state

    available: int = 0
    busy: int = 0


class QueueThresholds(BaseModel):
    waiting_above: int | None
    longest_wait_above_s: float | None
    service_level_below_pct: float | None


class QueueNowOut(BaseModel):
    queue: str
    name: str
    waiting: int
    oldest_queued_at: str | None = Field(json_schema_extra={"format": "date-time"})
    service_level_s: float = Field(description="the queue's service-level threshold")
    offered: int = Field(description="over the rolling window, like the four figures after it")
    answered: int
    abandoned: int
    service_level: float | None
    asa_s: float | None
    abandonment_rate: float | None
    agents: QueueAgents
    thresholds: QueueThresholds
    alerts: list[str] = Field(description="kinds of the queue's open alerts")


class AgentNowOut(BaseModel):
    id: str
    name: str
    queues: list[str]
    state: str
    reason: str | None = Field(description="why the agent is away, if given")
    since: str | None = Field(json_schema_extra={"format": "date-time"})
    handled_today: int


class ChannelNowOut(BaseModel):
    channel: str
    active: int
    waiting: int
    started_today: int
    handled_today: int
    offered: int
    answered: int
    abandoned: int
    service_level: float | None
    asa_s: float | None
    abandonment_rate: float | None


class AlertNowOut(BaseModel):
    id: int
    queue: str
    kind: Literal["waiting", "longest_wait", "service_level"]
    threshold: float
    value: float = Field(description="the figure when the alert was raised")
    raised_at: str = Field(json_schema_extra={"format": "date-time"})


class WallboardOut(BaseModel):
    type: Literal["wallboard"]
    at: str = Field(json_schema_extra={"format": "date-time"})
    timezone: str
    window_minutes: float
    queues: list[QueueNowOut]
    agents: list[AgentNowOut]
    channels: list[ChannelNowOut]
    alerts: list[AlertNowOut]


@ROUTES.route(
    "GET",
    "/api/reports/wallboard",
    summary="The wallboard now: queues, agents, channels, open alerts",
    tag="reports",
    roles=STAFF,
    ok={200: WallboardOut},
    errors={503: "reports are not running on this server"},
)
async def wallboard_now(request: web.Request) -> WallboardOut:
    """What /console/wallboard shows unfiltered, as pushed over its WebSocket; a supervisor gets their teams'
    part only (none without teams)."""
    monitor = _monitor(request)
    scope = await scope_of(monitor.wallboard.pool, principal(request))
    return WallboardOut.model_validate(await monitor.current_for(ALL.limited_to(scope.teams_shown)))


class AlertQuery(Input):
    since: datetime | None = Field(None, description="raised at or after (default: the last 24 hours)")
    queue: str | None = Field(None, max_length=64)
    limit: int = Field(100, ge=1, le=1000)


class AlertOut(BaseModel):
    id: int
    queue: str
    kind: Literal["waiting", "longest_wait", "service_level"]
    threshold: float
    raised_value: float
    raised_at: Timestamp
    cleared_value: float | None
    cleared_at: Timestamp | None


class AlertList(BaseModel):
    alerts: list[AlertOut]


@ROUTES.route(
    "GET",
    "/api/reports/alerts",
    summary="Queue alerts raised, newest first, with when they cleared",
    tag="reports",
    roles=STAFF,
    ok={200: AlertList},
    errors={503: "reports are not running on this server"},
)
async def alert_history(request: web.Request, query: AlertQuery) -> AlertList:
    """A supervisor's are the alerts of their teams' queues (none without teams)."""
    since = query.since or datetime.now(UTC) - timedelta(days=1)
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    pool = _monitor(request).reports.pool
    scope = await scope_of(pool, principal(request))
    rows = await pool.fetch(
        "SELECT * FROM queue_alerts WHERE raised_at >= $1 AND ($2::text IS NULL OR queue = $2)"
        " AND ($4::text[] IS NULL OR queue = ANY($4::text[])) ORDER BY raised_at DESC, id DESC LIMIT $3",
        since,
        query.queue,
        query.limit,
        None if scope.everything else sorted(scope.queues),
    )
    return AlertList(alerts=[AlertOut.model_validate(dict(r)) for r in rows if r["kind"] in KINDS])


# Survey answers --------------------------------------------------------------------------------------


class InteractionPath(Input):
    interaction_id: uuid.UUID


class SurveyAnswerIn(Input, SurveyAnswerEvent):
    pass


class SurveyAnswerOut(BaseModel):
    duplicate: bool = Field(description="true: the same answer was already recorded; nothing changed")
    event: EventOut


@ROUTES.route(
    "POST",
    "/api/interactions/{interaction_id}/survey-answers",
    summary="Record a survey answer (csat 1-5, nps 0-10, ces 1-7) on an interaction's timeline",
    tag="reports",
    roles=ADMIN,
    ok={201: SurveyAnswerOut, 200: SurveyAnswerOut},
    errors={404: "no such interaction", 409: "this question was already answered differently"},
)
async def record_survey_answer(request: web.Request, path: InteractionPath, body: SurveyAnswerIn) -> Reply:
    """One answer per question (and survey) per interaction: the same again is 200 `duplicate`."""
    try:
        saved = await save_answer(request.app[POOL], request.app[TIMELINE].publish, path.interaction_id, body)
    except LookupError as exc:
        raise not_found(str(exc), "interaction_id") from exc
    except AnswerConflict as exc:
        raise conflict(f"{exc}: score {exc.existing['data'].get('score')}", "score") from exc
    return Reply(
        201 if saved.created else 200,
        SurveyAnswerOut(duplicate=not saved.created, event=EventOut.model_validate(saved.event)),
    )


def _ops_event_webhook(ref: Any) -> dict[str, Any]:
    return {
        "post": {
            "summary": "Hilo POSTs each wanted ops event (alert.raised, alert.cleared) to the subscription's URL",
            "description": "Signed and retried like timeline events (see timelineEvent); subscribe with event"
            " types `alert.*`. The body's data: alert_id, queue, kind (waiting, longest_wait, service_level),"
            " value (the figure: waiting contacts, seconds, or percent), threshold; alert.cleared adds raised_at.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": ref(OpsEventOut)}}},
            "responses": {"2XX": {"description": "received; any other answer is retried"}},
        }
    }


class OpsEventOut(BaseModel):
    """A fact about no customer (a queue alert), sent to webhooks like a timeline event."""

    id: int
    type: str
    at: str = Field(json_schema_extra={"format": "date-time"})
    data: dict[str, Any]


ROUTES.webhook("opsEvent", _ops_event_webhook, [OpsEventOut])
