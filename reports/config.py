"""What the KPIs and the wallboard are configured with (dialplans/kpis.yaml): the window in which a contact
again counts as a repeat, the alert thresholds of each queue, and where report days begin. The
service-level threshold of a queue is its SLA in routing.yaml (`sla.within_s`), given here by the
caller; kpis.yaml's `service_level_s` covers contacts of queues routing.yaml no longer has. Every
problem names the file, the line and the field."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from hilo.yamlconf import ConfigError, load_model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AlertThresholds(_Strict):
    """A queue is in alert while any of these holds; a threshold left out is not watched."""

    waiting_above: int | None = Field(default=None, ge=0)
    longest_wait_above_s: float | None = Field(default=None, ge=0)
    service_level_below_pct: float | None = Field(default=None, ge=0, le=100)


class QueueKpis(_Strict):
    alerts: AlertThresholds = Field(default_factory=AlertThresholds)


class KpiConfig(_Strict):
    timezone: str = "UTC"
    repeat_window_hours: float = Field(default=72, gt=0, le=24 * 90)
    wrapup_max_s: float = Field(default=300, ge=0)
    rolling_window_minutes: float = Field(default=30, gt=0, le=24 * 60)
    refresh_s: float = Field(default=2, ge=0.2, le=60)
    service_level_s: float = Field(default=20, gt=0)
    queues: dict[str, QueueKpis] = Field(default_factory=dict)
    # queue -> routing.yaml's sla.within_s (set by `load_kpi_config`, not read from kpis.yaml)
    _queue_sla_s: dict[str, float] = PrivateAttr(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def repeat_window(self) -> timedelta:
        return timedelta(hours=self.repeat_window_hours)

    @property
    def rolling_window(self) -> timedelta:
        return timedelta(minutes=self.rolling_window_minutes)

    def service_level_of(self, queue: str | None) -> float:
        """The service-level threshold (seconds) of a queue: its SLA in routing.yaml, else the default."""
        return self._queue_sla_s.get(queue or "", self.service_level_s)

    def thresholds_of(self, queue: str) -> AlertThresholds:
        own = self.queues.get(queue)
        return own.alerts if own is not None else AlertThresholds()


def _key_line(text: str, *path: str) -> int:
    node = yaml.compose(text)
    line = 1
    for key in path:
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if k.value == key:
                node, line = v, k.start_mark.line + 1
                break
        else:
            break
    return line


def load_kpi_config(folder: Path, queue_sla_s: Mapping[str, float] | None = None) -> KpiConfig:
    """dialplans/kpis.yaml (defaults if the file is absent), with each routing.yaml queue's SLA threshold in
    seconds. Given those queues, a queue that routing.yaml does not define is refused."""
    path = folder / "kpis.yaml"
    config = load_model(path, KpiConfig) if path.exists() else KpiConfig()
    if queue_sla_s is not None:
        config._queue_sla_s = dict(queue_sla_s)
        for queue in config.queues:
            if queue not in queue_sla_s:
                line = _key_line(path.read_text(), "queues", queue)
                raise ConfigError(
                    f"{path}:{line}: queues.{queue}: no such queue in routing.yaml"
                    f" (queues: {', '.join(sorted(queue_sla_s))})"
                )
    return config
