"""Business hours as flows see them: the calendars of dialplans/hours.yaml (their schema and loading are
dialplans/hours.py's, since routing.yaml's queues name them too) and the flow variable `now`."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from dialplans.hours import (
    WEEKDAYS,
    Calendar,
    Calendars,
    Holiday,
    Span,
    UnknownCalendar,
    hours_json_schema,
    load_calendars,
    load_calendars_file,
    parse_span,
    weekdays_of,
)

__all__ = [
    "WEEKDAYS",
    "Calendar",
    "Calendars",
    "Holiday",
    "Span",
    "UnknownCalendar",
    "hours_json_schema",
    "load_calendars",
    "load_calendars_file",
    "now_variables",
    "parse_span",
    "weekdays_of",
]


def now_variables(now: dt.datetime, timezone: str | None) -> dict[str, Any]:
    """The flow variable `now`: the moment in calendar-free terms, in `timezone` (UTC when None)."""
    zone_name = timezone or "UTC"
    local = now.astimezone(ZoneInfo(zone_name))
    return {
        "date": local.date().isoformat(),
        "time": f"{local.hour:02d}:{local.minute:02d}",
        "weekday": WEEKDAYS[local.weekday()],
        "hour": local.hour,
        "minute": local.minute,
        "timezone": zone_name,
    }
