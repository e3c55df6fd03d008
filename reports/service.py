"""KPI reports over a period: read the contacts (contact_facts, derived from the timeline), find each one's
follow-up (for first-contact resolution and channel switch), and cut them into rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from reports.config import KpiConfig
from reports.facts import load_contacts, load_starts
from reports.kpis import Contact, Followup, KpiRules, followups
from reports.report import Interval, Row, build_rows

# A contact's repeat may start up to the window after it *ended*; contacts last less than this.
LONGEST_CONTACT = timedelta(days=1)


def rules_of(config: KpiConfig) -> KpiRules:
    return KpiRules(
        service_level_of=config.service_level_of,
        repeat_window=config.repeat_window,
        wrapup_max_s=config.wrapup_max_s,
    )


class Reports:
    def __init__(
        self, pool: asyncpg.Pool, config: KpiConfig, *, from_timeline: bool = False, timeout: float | None = None
    ) -> None:
        self.pool = pool
        self.config = config
        # Each read's bound, instead of the pool's command timeout (a report over a long period may take long).
        self.timeout = timeout
        # Read the events at query time instead of contact_facts: the benchmark's comparison, same figures.
        self.from_timeline = from_timeline

    async def contacts_with_followups(
        self, start: datetime, end: datetime, now: datetime | None = None
    ) -> tuple[list[Contact], dict[str, Followup]]:
        """The contacts that started in [start, end), and what followed each (looking past `end` for the
        repeats of its last contacts)."""
        now = now or datetime.now(UTC)
        horizon = min(end + self.config.repeat_window + LONGEST_CONTACT, max(now, end))
        contacts = await load_contacts(self.pool, start, end, from_timeline=self.from_timeline, timeout=self.timeout)
        # What came after the period only tells whether a contact in it was repeated: who, where, when.
        customers = {c.customer_id for c in contacts}
        later = (
            await load_starts(
                self.pool, end, horizon, customers, from_timeline=self.from_timeline, timeout=self.timeout
            )
            if horizon > end and customers
            else []
        )
        after = followups([*contacts, *later], self.config.repeat_window, now)
        return contacts, after

    async def rows(
        self,
        start: datetime,
        end: datetime,
        interval: Interval,
        by: str,
        *,
        zone: ZoneInfo | None = None,
        now: datetime | None = None,
        only: Callable[[Contact], bool] | None = None,
    ) -> list[Row]:
        """`only`: the contacts the one asking may see (their scope, routing/scope.py); whether a contact was
        followed by another (first-contact resolution, channel switch) is still judged over every contact."""
        contacts, after = await self.contacts_with_followups(start, end, now)
        if only is not None:
            contacts = [c for c in contacts if only(c)]
        return build_rows(
            contacts,
            start=start,
            end=end,
            interval=interval,
            by=by,
            zone=zone or self.config.zone,
            rules=rules_of(self.config),
            after=after,
        )
