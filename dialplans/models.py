"""Schemas of the admin-edited files in this folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from dialplans.hours import load_calendars_file
from hilo.yamlconf import ConfigError, Positions, load_model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Ids end up inside Redis key names and the routing scripts' encodings, which use ':' ',' '=' '|' ';'.
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Level = Annotated[int, Field(ge=1, le=10)]
# skill -> level: what an agent has (1 beginner .. 10 expert), or the lowest level a queue requires.
Skills = dict[Name, Level]
CHANNELS = ("voice", "sms", "whatsapp", "webchat")  # as interactions.channel
Channel = Literal["voice", "sms", "whatsapp", "webchat"]


class Sla(_Strict):
    """Service level target: `percent` of the interactions answered within `within_s` seconds of queueing."""

    percent: float = Field(default=80, gt=0, le=100)
    within_s: int = Field(default=20, ge=1, le=86_400)


class Escalation(_Strict):
    """What happens to an interaction still waiting `after_s` seconds after it was queued. With `overflow`:
    it also waits in that queue (keeping its place in time and its priority), where agents need `skills`
    if given, else that queue's own skills plus the interaction's. Without: its own queue needs `skills`
    from then on (usually a wider requirement; `{}` is any agent of the queue)."""

    after_s: int = Field(ge=1, le=86_400)
    skills: Skills | None = None
    overflow: Name | None = None

    @model_validator(mode="after")
    def does_something(self) -> Escalation:
        if self.skills is None and self.overflow is None:
            raise ValueError("an escalation step needs skills (the requirement from then on) or overflow (a queue)")
        return self


class QueueRecording(_Strict):
    """Recording of a queue's calls (recordings/): whether the caller-agent conversation is recorded (a flow
    can still leave a caller out with the variable `record_consent: false`) and for how many days the file
    is kept (None: the server's HILO_RECORDING_RETENTION_DAYS). With `legs`, each side of the conversation
    (caller, agent) is also recorded on its own, beside the mixed recording."""

    record: bool = True
    legs: bool = False
    retention_days: int | None = Field(default=None, ge=1, le=36_500)


class QueueAnnounce(_Strict):
    """What a caller waiting in the queue hears over the music on hold, every `every_s` seconds (the first
    time `every_s` after queueing): their place in the queue and/or the estimated wait (routing/estimate.py)."""

    every_s: int = Field(default=30, ge=1, le=3_600)
    position: bool = True
    wait: bool = True


class Queue(_Strict):
    id: Name
    name: str
    # Said when nobody could take the call within the queue's maximum wait.
    no_agent_prompt: str = "Sorry, all our agents are busy. Please call again later. Goodbye."
    # The lowest skill levels an agent of this queue needs to be offered its interactions ({}: any agent).
    skills: Skills = Field(default_factory=dict)
    # Added to the interaction's own priority (0-10); weighs queues against each other for agents in several.
    priority: int = Field(default=0, ge=0, le=10)
    # Aging: one step of priority is worth this many seconds of waiting, so low priority never starves.
    aging_s: int = Field(default=60, ge=1, le=86_400)
    sla: Sla = Field(default_factory=lambda: Sla())
    max_wait_s: int | None = Field(default=None, ge=1, le=86_400)  # None: the server's queue_max_wait_s
    escalation: list[Escalation] = Field(default_factory=list)
    # best_skill: the qualified agent with the highest level in the required skills, then the longest idle;
    # longest_idle: the longest-idle qualified agent, the level breaking ties only.
    agent_order: Literal["best_skill", "longest_idle"] = "best_skill"
    hours: Name | None = None  # a calendar of hours.yaml; interactions are refused while it is closed
    recording: QueueRecording = Field(default_factory=QueueRecording)
    announce: QueueAnnounce | None = None  # None: music on hold only

    @model_validator(mode="after")
    def escalation_in_time_order(self) -> Queue:
        last = 0
        for step in self.escalation:
            if step.after_s <= last:
                raise ValueError(f"queue {self.id}: escalation steps must have increasing after_s")
            if step.overflow == self.id:
                raise ValueError(f"queue {self.id}: cannot overflow into itself")
            last = step.after_s
        return self


def _voice_only() -> dict[Channel, int]:
    return {"voice": 1}


class Agent(_Strict):
    id: Name
    name: str
    sip_endpoint: str
    queues: list[Name] = Field(min_length=1)
    skills: Skills = Field(default_factory=dict)
    teams: list[Name] = Field(default_factory=list)
    # How many interactions of each channel the agent handles at once, e.g. {voice: 1, webchat: 3}.
    capacity: dict[Channel, Annotated[int, Field(ge=0, le=50)]] = Field(default_factory=_voice_only)


class RoutingConfig(_Strict):
    queues: list[Queue]
    agents: list[Agent]

    @model_validator(mode="after")
    def agents_serve_known_queues(self) -> RoutingConfig:
        known = {q.id for q in self.queues}
        for ids, what in (([q.id for q in self.queues], "queue"), ([a.id for a in self.agents], "agent")):
            if len(set(ids)) != len(ids):
                raise ValueError(f"{what} ids must be unique")
        for agent in self.agents:
            for queue in agent.queues:
                if queue not in known:
                    raise ValueError(f"agent {agent.id} serves unknown queue {queue!r}")
        for q in self.queues:
            for step in q.escalation:
                if step.overflow is not None and step.overflow not in known:
                    raise ValueError(f"queue {q.id} overflows into unknown queue {step.overflow!r}")
        return self


class Numbers(_Strict):
    numbers: dict[str, str] = Field(min_length=1)  # dialled number -> flow id


class DemoCustomer(_Strict):
    name: str
    phones: list[str]
    language: str | None = None
    accounts: list[str] = Field(default_factory=list)  # stored as external identities account:<number>
    # What the caller proves identity with in a flow's `verify:` (pin, birth_date as DDMMYYYY); demo only.
    secrets: dict[str, str] = Field(default_factory=dict)


class DemoCustomers(_Strict):
    customers: list[DemoCustomer]


def load_routing(folder: Path) -> RoutingConfig:
    """routing.yaml, with the `hours` calendars its queues name checked against hours.yaml beside it."""
    path = folder / "routing.yaml"
    config = load_model(path, RoutingConfig)
    named = [(i, q.hours) for i, q in enumerate(config.queues) if q.hours is not None]
    if named:
        calendars, _ = load_calendars_file(folder / "hours.yaml")
        known = calendars.ids() if calendars is not None else frozenset()
        for i, calendar in named:
            if calendar not in known:
                line = Positions(yaml.compose(path.read_text())).line_of(("queues", i, "hours"))
                raise ConfigError(
                    f"{path}:{line}: queues.{i}.hours: unknown calendar {calendar!r}"
                    f" (hours.yaml has: {', '.join(sorted(known)) or 'none'})"
                )
    return config


def load_demo_customers(folder: Path) -> DemoCustomers:
    return load_model(folder / "demo-customers.yaml", DemoCustomers)


def load_numbers(folder: Path) -> Numbers:
    return load_model(folder / "numbers.yaml", Numbers)
