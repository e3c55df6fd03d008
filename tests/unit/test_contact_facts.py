"""Migration 018's summary follows the same events the direct read uses: its trigger fires on exactly
reports/facts.py CONTACT_EVENTS, and its view joins exactly those but interaction.started."""

from __future__ import annotations

import re
from importlib import resources

from reports.facts import CONTACT_EVENTS

SQL = (resources.files("hilo") / "migrations" / "018_contact_facts.sql").read_text()


def _types_in(fragment: str) -> set[str]:
    return set(re.findall(r"'([a-z_]+\.[a-z_]+)'", fragment))


def test_the_trigger_fires_on_the_contact_events() -> None:
    when = SQL[SQL.index("CREATE TRIGGER contact_facts_follow_timeline") :]
    assert _types_in(when[: when.index("EXECUTE FUNCTION")]) == set(CONTACT_EVENTS)


def test_the_view_reads_the_contact_events() -> None:
    join = SQL[SQL.index("LEFT JOIN timeline_events e") :]
    assert _types_in(join[: join.index("GROUP BY")]) == set(CONTACT_EVENTS) - {"interaction.started"}
