"""Whether each agent's SIP phone can take a call, from Asterisk's own view of its PJSIP endpoint.

Asterisk qualifies every agent phone (OPTIONS every few seconds, asterisk/etc/pjsip.conf); a phone that
stops answering makes the endpoint `offline`, and ARI says so with an EndpointStateChange event to apps
subscribed to `endpoint:PJSIP`. Events are missed while the ARI socket is down, so every (re)connection
also reads the state of every agent endpoint."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from asterisk.ari import AriClient, AriError
from asterisk.events import Event

log = logging.getLogger(__name__)

# (agent id, reachable) -> e.g. keep the agent out of routing while their phone is gone
OnChange = Callable[[str, bool], Awaitable[None]]


def reachable(state: str) -> bool:
    # "unknown" is what a phone that is never qualified reports: it is trusted rather than kept offline.
    return state in ("online", "unknown")


class EndpointPresence:
    def __init__(self, ari: AriClient, agents_by_endpoint: Mapping[str, str], on_change: OnChange) -> None:
        self.ari = ari
        self.agents = dict(agents_by_endpoint)  # PJSIP endpoint name -> agent id
        self.on_change = on_change
        self.known: dict[str, bool] = {}  # agent id -> reachable, as last reported
        ari.handlers.append(self.handle)
        ari.on_connect.append(self.resync)

    async def resync(self) -> None:
        try:
            await self.ari.request(
                "POST", f"/applications/{self.ari.app}/subscription", params={"eventSource": "endpoint:PJSIP"}
            )
            endpoints = await self.ari.request("GET", "/endpoints/PJSIP")
        except AriError as exc:
            log.warning("presence: cannot read agent endpoints: %s", exc)
            return
        for endpoint in endpoints or []:
            await self._update(endpoint)

    def handle(self, event: Event) -> None:
        if event.type == "EndpointStateChange":
            self.ari.spawn(self._update(event.raw.get("endpoint", {})))

    async def _update(self, endpoint: Mapping[str, Any]) -> None:
        agent_id = self.agents.get(str(endpoint.get("resource", "")))
        if agent_id is None or endpoint.get("technology") != "PJSIP":
            return
        now = reachable(str(endpoint.get("state", "")))
        if self.known.get(agent_id) == now:
            return
        self.known[agent_id] = now
        log.info("agent %s phone is %s", agent_id, "reachable" if now else "unreachable")
        await self.on_change(agent_id, now)


PHONE_UNREACHABLE = "phone-unreachable"


class _Engine(Protocol):
    async def agent(self, agent_id: str) -> dict[str, str]: ...

    async def set_state(self, agent_id: str, state: str, reason: str | None = None) -> bool: ...


def routing_presence(engine: _Engine) -> OnChange:
    """Take an agent whose phone is gone out of routing (offline, reason phone-unreachable), and put them back
    when it answers again — only if it was the phone that took them out, never over an agent's own choice."""

    async def on_change(agent_id: str, up: bool) -> None:
        live = await engine.agent(agent_id)
        if not up:
            if live.get("presence") != "offline":
                await engine.set_state(agent_id, "offline", reason=PHONE_UNREACHABLE)
        elif live.get("presence") == "offline" and live.get("reason") == PHONE_UNREACHABLE:
            await engine.set_state(agent_id, "available")

    return on_change
