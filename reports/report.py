"""A KPI report: the contacts of a period cut into intervals (15 minutes, days, or the whole period, in the
configured time zone) and groups (channel, queue, agent), with the figures of each; and its CSV form.

A contact belongs to the interval in which it started (its `interaction.started`)."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from reports.kpis import FIGURES, GROUPINGS, Contact, Followup, KpiRules, Kpis, compute

Interval = Literal["15m", "day", "period"]
INTERVALS: tuple[Interval, ...] = ("15m", "day", "period")
QUARTER = timedelta(minutes=15)


def interval_start(at: datetime, interval: Interval, zone: ZoneInfo, period_start: datetime) -> datetime:
    """The start (in UTC) of the interval holding `at`. Everything here computes in UTC: Python compares
    and subtracts two times of one zone by their wall clocks, which is wrong where the clocks change."""
    if interval == "period":
        return period_start.astimezone(UTC)
    local = at.astimezone(zone)
    if interval == "day":
        return datetime(local.year, local.month, local.day, tzinfo=zone).astimezone(UTC)
    # Every zone's offset is a whole number of quarter hours, so local quarters are absolute ones too.
    return local.replace(minute=local.minute - local.minute % 15, second=0, microsecond=0).astimezone(UTC)


def next_start(start: datetime, interval: Interval, zone: ZoneInfo, period_end: datetime) -> datetime:
    if interval == "period":
        return period_end.astimezone(UTC)
    if interval == "day":  # 23 or 25 hours on the days the clocks change
        following = start.astimezone(zone).date() + timedelta(days=1)
        return datetime(following.year, following.month, following.day, tzinfo=zone).astimezone(UTC)
    return start.astimezone(UTC) + QUARTER


def intervals(
    start: datetime, end: datetime, interval: Interval, zone: ZoneInfo
) -> Iterator[tuple[datetime, datetime]]:
    """Every interval touching [start, end), the first and last cut to the period, in UTC."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    at = interval_start(start, interval, zone, start)
    while at < end:
        following = next_start(at, interval, zone, end)
        yield max(at, start), min(following, end)
        at = following


def count_intervals(start: datetime, end: datetime, interval: Interval) -> int:
    seconds = (end - start).total_seconds()
    if interval == "period":
        return 1
    if interval == "day":
        return int(seconds // 86400) + 2
    return int(seconds // 900) + 2


@dataclass(frozen=True)
class Row:
    start: datetime  # UTC
    end: datetime
    group: str | None
    kpis: Kpis
    zone: ZoneInfo  # how the times are shown

    def as_dict(self, by: str) -> dict[str, Any]:
        row: dict[str, Any] = {
            "start": self.start.astimezone(self.zone).isoformat(),
            "end": self.end.astimezone(self.zone).isoformat(),
        }
        if by != "none":
            row[by] = self.group
        return {**row, **self.kpis.as_dict()}


def build_rows(
    contacts: Sequence[Contact],
    *,
    start: datetime,
    end: datetime,
    interval: Interval,
    by: str,
    zone: ZoneInfo,
    rules: KpiRules,
    after: Mapping[str, Followup] | None,
) -> list[Row]:
    """One row per interval and group seen in the period (groups in name order, "no group" last), so a
    chart has a point in every interval."""
    key = GROUPINGS[by].key
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    buckets: dict[tuple[datetime, str | None], list[Contact]] = defaultdict(list)
    groups: set[str | None] = set()
    for contact in contacts:
        if not start <= contact.started_at < end:
            continue
        group = key(contact)
        groups.add(group)
        first = max(interval_start(contact.started_at, interval, zone, start), start)
        buckets[(first, group)].append(contact)
    ordered = sorted(groups, key=lambda g: (g is None, g or ""))
    if not ordered:
        ordered = [None]
    rows = []
    for first, last in intervals(start, end, interval, zone):
        for group in ordered:
            rows.append(Row(first, last, group, compute(buckets.get((first, group), []), rules, after), zone))
    return rows


def to_csv(rows: Iterable[Row], by: str) -> str:
    columns = ["start", "end", *([by] if by != "none" else []), *FIGURES]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.as_dict(by).items()})
    return out.getvalue()
