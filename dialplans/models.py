"""Schemas of the admin-edited files in this folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from hilo.yamlconf import load_model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# One keypad key: what a menu option is chosen with.
DtmfKey = Annotated[str, StringConstraints(pattern=r"^[0-9*#]$")]


class Menu(_Strict):
    prompt: str
    invalid: str
    no_input: str
    retries: int = Field(3, ge=1, le=10)
    timeout_s: float = Field(6, gt=0, le=60)
    options: dict[DtmfKey, str] = Field(min_length=1)


class IvrLine(_Strict):
    numbers: list[str] = Field(min_length=1)
    language: str = "en"
    voice: str = "gmw/en-US"
    greeting: str
    greeting_known: str
    menu: Menu
    queue_hold: str
    no_agent: str
    goodbye: str

    def static_prompts(self) -> list[str]:
        m = self.menu
        return [self.greeting, m.prompt, m.invalid, m.no_input, self.queue_hold, self.no_agent, self.goodbye]


class Queue(_Strict):
    id: str
    name: str


class Agent(_Strict):
    id: str
    name: str
    sip_endpoint: str
    queues: list[str] = Field(min_length=1)


class RoutingConfig(_Strict):
    queues: list[Queue]
    agents: list[Agent]

    @model_validator(mode="after")
    def agents_serve_known_queues(self) -> RoutingConfig:
        known = {q.id for q in self.queues}
        for agent in self.agents:
            for queue in agent.queues:
                if queue not in known:
                    raise ValueError(f"agent {agent.id} serves unknown queue {queue!r}")
        return self


class DemoCustomer(_Strict):
    name: str
    phones: list[str]
    language: str | None = None


class DemoCustomers(_Strict):
    customers: list[DemoCustomer]


def load_ivr(folder: Path) -> IvrLine:
    line = load_model(folder / "demo.yaml", IvrLine)
    return line


def load_routing(folder: Path) -> RoutingConfig:
    return load_model(folder / "routing.yaml", RoutingConfig)


def load_demo_customers(folder: Path) -> DemoCustomers:
    return load_model(folder / "demo-customers.yaml", DemoCustomers)
