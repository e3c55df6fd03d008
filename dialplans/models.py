"""Schemas of the admin-edited files in this folder."""

from __future__ import annotations

import ipaddress
import re
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
# A PJSIP endpoint's name: it goes into dial strings (`PJSIP/<name>`) and Asterisk's configuration, so nothing
# that could name a trunk URI (`carrier/sip:...@host`), a second channel (`&`), an option (`,`) or a comment.
PHONE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
PhoneName = Annotated[str, StringConstraints(pattern=PHONE_NAME.pattern)]
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
    # Said when the queue's hours say it is closed (and the flow's queue node has no on_closed).
    closed_prompt: str = "Sorry, we are closed now. Please call again during our opening hours. Goodbye."
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
    sip_endpoint: PhoneName  # one of the phones of phones.yaml (checked where the folder or server is known)
    queues: list[Name] = Field(min_length=1)
    skills: Skills = Field(default_factory=dict)
    teams: list[Name] = Field(default_factory=list)
    # How many interactions of each channel the agent handles at once, e.g. {voice: 1, webchat: 3}.
    capacity: dict[Channel, Annotated[int, Field(ge=0, le=50)]] = Field(default_factory=_voice_only)


# E.164 prefixes: "+34", "+44 20" (spaces allowed for reading, ignored)
E164Prefix = Annotated[str, StringConstraints(pattern=r"^\+[0-9][0-9 ]{0,18}$")]
Region = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
# What kind of line a number may be (phonenumbers' number types). Premium-rate, shared-cost, personal,
# pager, voicemail and unknown numbers are never dialled, whatever the configuration says.
DialableType = Literal["fixed_line", "mobile", "fixed_line_or_mobile", "toll_free", "voip", "uan"]


def _personal_lines() -> list[DialableType]:
    return ["fixed_line", "mobile", "fixed_line_or_mobile"]


class OutboundLimit(_Strict):
    max: int = Field(default=3, ge=1, le=1000)
    within_s: int = Field(default=86_400, ge=60, le=30 * 86_400)


class Outbound(_Strict):
    """Where Hilo may dial on its own (routing/outbound.py): a booked callback (to the number the caller
    called from, which anyone can fake) and a flow's transfer to a phone number. A number must be valid, of a
    `countries` region (None: the server's HILO_DEFAULT_REGION only), of one of `number_types`, outside the
    premium and shared-cost ranges Hilo always refuses and outside `block`, and, when `allow` is given, start
    with one of its prefixes. Callbacks are also limited per number (`per_number`) and in all per hour."""

    countries: list[Region] | None = None
    number_types: list[DialableType] = Field(default_factory=_personal_lines, min_length=1)
    allow: list[E164Prefix] = Field(default_factory=list)
    block: list[E164Prefix] = Field(default_factory=list)
    per_number: OutboundLimit = Field(default_factory=OutboundLimit)
    per_hour: int = Field(default=60, ge=1, le=100_000)  # callbacks booked in one clock hour, all numbers


class RoutingConfig(_Strict):
    queues: list[Queue]
    agents: list[Agent]
    outbound: Outbound = Field(default_factory=Outbound)

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


class Phone(_Strict):
    """A phone Hilo provisions as a PJSIP endpoint (rendered by `hilo phones render`, asterisk/phones.py), with
    its own digest credentials (the password in the environment, `HILO_PHONE_SECRET_<ENDPOINT>`)."""

    endpoint: PhoneName
    # The caller id it shows on calls it places: `"<caller_name>" <caller_number>`.
    caller_name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 ()._,'-]{1,64}$")]
    caller_number: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.+-]{1,32}$")]
    # Where Asterisk reaches a phone at a fixed address (the demo's SIPp phones): nothing may REGISTER for it.
    # None: the phone REGISTERs with its credentials (one contact; a new registration replaces the old one).
    contact: (
        Annotated[str, StringConstraints(pattern=r"^sips?:[A-Za-z0-9_.+-]{1,64}@[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$")]
        | None
    ) = None
    # Networks the phone may send from (e.g. the office LAN); empty: anywhere, its credentials decide.
    permit: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(default_factory=list)

    @property
    def secret_key(self) -> str:
        """The environment variable that holds its password."""
        return phone_secret_key(self.endpoint)


def phone_secret_key(endpoint: str) -> str:
    return "HILO_PHONE_SECRET_" + re.sub(r"[^A-Z0-9]", "_", endpoint.upper())


class Phones(_Strict):
    phones: list[Phone]

    @model_validator(mode="after")
    def one_each(self) -> Phones:
        for what, values in (
            ("endpoint", [p.endpoint for p in self.phones]),
            ("secret variable (endpoint names that differ only in - . _ or case)", [p.secret_key for p in self.phones]),
        ):
            seen: set[str] = set()
            for value in values:
                if value in seen:
                    raise ValueError(f"two phones have the same {what}: {value}")
                seen.add(value)
        return self

    def endpoints(self) -> frozenset[str]:
        return frozenset(p.endpoint for p in self.phones)

    def get(self, endpoint: str) -> Phone | None:
        return next((p for p in self.phones if p.endpoint == endpoint), None)


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
    """routing.yaml, with the `hours` calendars its queues name checked against hours.yaml beside it, and the
    agents' phones against phones.yaml beside it (when the folder has one: the server's always does)."""
    path = folder / "routing.yaml"
    config = load_model(path, RoutingConfig)
    if (folder / PHONES_FILE).exists():
        provisioned = load_phones(folder).endpoints()
        for i, agent in enumerate(config.agents):
            if agent.sip_endpoint not in provisioned:
                line = Positions(yaml.compose(path.read_text())).line_of(("agents", i, "sip_endpoint"))
                raise ConfigError(
                    f"{path}:{line}: agents.{i}.sip_endpoint: {unprovisioned(agent.sip_endpoint, provisioned)}"
                )
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


PHONES_FILE = "phones.yaml"


def load_phones(folder: Path) -> Phones:
    """The phones Hilo provisions (phones.yaml): the only endpoints an agent may have."""
    return load_model(folder / PHONES_FILE, Phones)


def unprovisioned(endpoint: str, provisioned: frozenset[str]) -> str:
    return (
        f"phone {endpoint!r} is not one Hilo provisions (phones.yaml has: {', '.join(sorted(provisioned)) or 'none'})"
    )


def load_numbers(folder: Path) -> Numbers:
    return load_model(folder / "numbers.yaml", Numbers)
