"""What routing works with at run time: offers, agent state changes, and the compact encodings of skills,
capacities and escalation steps that the Redis script (routing/decide.lua) reads.

The configuration itself (queues, agents) is `dialplans.models.Queue` / `Agent`: the same schema for
routing.yaml and for the admin API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dialplans.models import CHANNELS, Queue

# Presence is what a person sets; the shown state adds what the work does (ringing > wrapup > busy > presence).
PRESENCES = ("offline", "available", "away")
AGENT_STATES = ("offline", "available", "ringing", "busy", "wrapup", "away")
MANUAL_STATES = PRESENCES


class RoutingError(ValueError):
    """A request routing cannot carry out, said plainly (unknown queue, bad id, ...)."""


def encode_levels(levels: dict[str, int]) -> str:
    """{"support": 3, "es": 1} -> "es=1,support=3" (sorted: the same requirement is always the same text);
    no skill at all is "*"."""
    if not levels:
        return "*"
    return ",".join(f"{name}={level}" for name, level in sorted(levels.items()))


def decode_levels(text: str) -> dict[str, int]:
    if not text or text == "*":
        return {}
    return {name: int(level) for name, level in (part.split("=", 1) for part in text.split(","))}


def encode_capacity(capacity: dict[str, int]) -> str:
    unknown = set(capacity) - set(CHANNELS)
    if unknown:
        raise RoutingError(f"capacity for unknown channel(s) {sorted(unknown)}; channels: {', '.join(CHANNELS)}")
    return ",".join(f"{ch}={n}" for ch, n in sorted(capacity.items()) if n > 0) or "*"


def encode_steps(queue: Queue) -> str:
    """Escalation steps as the script reads them: after_ms|skills|overflow;..."""
    return ";".join(
        f"{step.after_s * 1000}|{'' if step.skills is None else encode_levels(step.skills)}|{step.overflow or ''}"
        for step in queue.escalation
    )


def check_interaction_id(interaction_id: str) -> str:
    """Interaction ids are UUIDs (interactions.id); anything else is refused before it reaches Redis."""
    try:
        return str(uuid.UUID(str(interaction_id)))
    except ValueError as exc:
        raise RoutingError(f"interaction id {interaction_id!r} is not a UUID") from exc


def ms_to_datetime(ms: int | float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def datetime_to_ms(at: datetime) -> int:
    if at.tzinfo is None:
        raise RoutingError(f"{at!r} has no time zone")
    return int(at.timestamp() * 1000)


@dataclass(frozen=True)
class Assignment:
    """An interaction offered to an agent (`state` offered), or, when asked again, taken (`assigned`)."""

    interaction_id: str
    agent_id: str
    queue: str  # the queue the interaction was queued to
    via: str  # the queue through which this agent got it (another one after an overflow)
    channel: str
    endpoint: str  # the agent's SIP endpoint
    offered_at_ms: int
    enqueued_at_ms: int
    priority: int  # effective: the interaction's own plus its queue's
    state: str = "offered"

    @classmethod
    def from_script(cls, raw: dict[str, Any]) -> Assignment:
        return cls(
            interaction_id=str(raw["interaction"]),
            agent_id=str(raw["agent"]),
            queue=str(raw["queue"]),
            via=str(raw.get("via") or raw["queue"]),
            channel=str(raw["channel"]),
            endpoint=str(raw.get("endpoint") or ""),
            offered_at_ms=int(raw.get("offered_at") or 0),
            enqueued_at_ms=int(raw.get("enqueued_at") or 0),
            priority=int(raw.get("priority") or 0),
            state=str(raw.get("state") or "offered"),
        )


@dataclass(frozen=True)
class AgentStateChange:
    agent_id: str
    state: str
    presence: str
    reason: str | None
    at_ms: int
    interaction_id: str | None = None
    wrapup_until_ms: int | None = None

    @classmethod
    def from_script(cls, raw: dict[str, Any]) -> AgentStateChange:
        return cls(
            agent_id=str(raw["agent"]),
            state=str(raw["state"]),
            presence=str(raw["presence"]),
            reason=raw.get("reason") or None,
            at_ms=int(raw["at"]),
            interaction_id=raw.get("interaction") or None,
            wrapup_until_ms=int(raw["wrapup_until"]) if raw.get("wrapup_until") else None,
        )


def _as_list(value: Any) -> list[Any]:
    # The script's JSON encoder writes an empty array as {}.
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class Outcome:
    """Everything one script call decided."""

    result: dict[str, Any]
    assignments: list[Assignment]
    states: list[AgentStateChange]
    events: list[dict[str, Any]]

    @classmethod
    def from_script(cls, raw: dict[str, Any]) -> Outcome:
        result = raw.get("result")
        return cls(
            result=result if isinstance(result, dict) else {},
            assignments=[Assignment.from_script(a) for a in _as_list(raw.get("assignments"))],
            states=[AgentStateChange.from_script(s) for s in _as_list(raw.get("states"))],
            events=_as_list(raw.get("events")),
        )

    @property
    def status(self) -> str:
        return str(self.result.get("status", ""))

    def offer_for(self, interaction_id: str) -> Assignment | None:
        return next((a for a in self.assignments if a.interaction_id == interaction_id), None)

    def offer_to(self, agent_id: str) -> Assignment | None:
        return next((a for a in self.assignments if a.agent_id == agent_id), None)
