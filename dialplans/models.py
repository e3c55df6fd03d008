"""Schemas of the admin-edited files in this folder."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hilo.yamlconf import load_model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Queue(_Strict):
    id: str
    name: str
    # Said when nobody could take the call within the queue's maximum wait.
    no_agent_prompt: str = "Sorry, all our agents are busy. Please call again later. Goodbye."


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
    return load_model(folder / "routing.yaml", RoutingConfig)


def load_demo_customers(folder: Path) -> DemoCustomers:
    return load_model(folder / "demo-customers.yaml", DemoCustomers)


def load_numbers(folder: Path) -> Numbers:
    return load_model(folder / "numbers.yaml", Numbers)
