"""The KPIs as Prometheus metrics, in Hilo's registry: the wallboard's live figures per queue, and today's
KPIs (since midnight in the configured zone) overall and per queue, channel and agent — the same numbers
as the reporting API, read from the monitor's last computation (at most a few seconds old) so a scrape
never queries the database.

Per-agent series (`by="agent"`) are employee performance data: `AggregatesOnly` is the registry without
them, what an unauthenticated scrape gets (server/health.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reports.monitor import WallboardMonitor

# KPI field -> (metric name, help)
TODAY_FIGURES = {
    "contacts": ("hilo_kpi_contacts", "Interactions started today"),
    "offered": ("hilo_kpi_offered", "Queued contacts answered or ended today, callbacks left out"),
    "answered": ("hilo_kpi_answered", "Offered contacts answered by an agent today"),
    "abandoned": ("hilo_kpi_abandoned", "Offered contacts abandoned in the queue today"),
    "service_level": ("hilo_kpi_service_level_ratio", "Answered within the threshold / offered, today"),
    "asa_s": ("hilo_kpi_asa_seconds", "Average speed of answer today"),
    "aht_s": ("hilo_kpi_aht_seconds", "Average handle time (talk + hold + wrap-up) today"),
    "abandonment_rate": ("hilo_kpi_abandonment_ratio", "Abandoned / offered, today"),
    "transfer_rate": ("hilo_kpi_transfer_ratio", "Transferred / ended, today"),
    "fcr_rate": ("hilo_kpi_fcr_ratio", "First-contact resolution of today's contacts whose window is over"),
    "channel_switch_rate": ("hilo_kpi_channel_switch_ratio", "Next contact on another channel / contacts, today"),
    "csat": ("hilo_kpi_csat_ratio", "Share of csat answers of 4-5, today"),
    "nps": ("hilo_kpi_nps", "Net promoter score of today's answers (-100..100)"),
    "ces": ("hilo_kpi_ces", "Mean customer effort score of today's answers (1-7)"),
}


class KpiCollector(Collector):
    def __init__(self, monitor: Callable[[], WallboardMonitor | None]) -> None:
        self.monitor = monitor  # None until the server has started it

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = self._families()
        monitor = self.monitor()
        if monitor is None:
            yield from families
            return
        by_name = {f.name: f for f in families}
        for by, groups in monitor.today.items():
            for group, kpis in groups.items():
                figures = kpis.as_dict()
                for field, (name, _) in TODAY_FIGURES.items():
                    if figures[field] is not None:
                        by_name[name].add_metric([by, group or "all"], float(figures[field]))
        picture: dict[str, Any] = monitor.latest or {}
        for queue in picture.get("queues", []):
            q = queue["queue"]
            by_name["hilo_queue_waiting"].add_metric([q], queue["waiting"])
            if queue["service_level"] is not None:
                by_name["hilo_queue_rolling_service_level_ratio"].add_metric([q], queue["service_level"])
            for state, count in queue["agents"].items():
                by_name["hilo_queue_agents"].add_metric([q, state], count)
        for alert in picture.get("alerts", []):
            by_name["hilo_queue_alert"].add_metric([alert["queue"], alert["kind"]], 1)
        yield from families

    def _families(self) -> list[GaugeMetricFamily]:
        today = [GaugeMetricFamily(name, text, labels=["by", "key"]) for name, text in TODAY_FIGURES.values()]
        return [
            *today,
            GaugeMetricFamily("hilo_queue_waiting", "Contacts waiting in the queue now", labels=["queue"]),
            GaugeMetricFamily(
                "hilo_queue_rolling_service_level_ratio",
                "Service level over the wallboard's rolling window",
                labels=["queue"],
            ),
            GaugeMetricFamily("hilo_queue_agents", "Agents of the queue by live state", labels=["queue", "state"]),
            GaugeMetricFamily(
                "hilo_queue_alert", "1 while the queue is in alert of this kind", labels=["queue", "kind"]
            ),
        ]


def names_an_agent(labels: dict[str, str]) -> bool:
    """A series about one agent: today's KPIs grouped by agent."""
    return labels.get("by") == "agent" or "agent" in labels


class AggregatesOnly:
    """A registry seen without any series that names an agent (for `generate_latest`)."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            family.samples = [s for s in family.samples if not names_an_agent(s.labels)]
            yield family
