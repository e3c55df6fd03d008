"""Whether each agent's SIP phone can take a call, from Asterisk's own view of its PJSIP endpoint.

Asterisk qualifies every agent phone (OPTIONS every few seconds, asterisk/etc/pjsip.conf); a phone that
stops answering makes the endpoint `offline`, and ARI says so with an EndpointStateChange event to apps
subscribed to that endpoint. Events are missed while the ARI socket is down, so every (re)connection
also reads the state of every agent endpoint.

The endpoints are followed by an ARI application of their own, `<app>-presence`, on the call app's socket,
subscribed to the agents' endpoints only and filtered to EndpointStateChange. Were the call app itself
subscribed, ARI would send it every event of each SIP channel twice (once for the channel in the app, once
through its endpoint: a key pressed once read twice), and with several workers every worker would get the
events of every other worker's calls."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

from asterisk.ari import AriClient, AriError
from asterisk.events import Event

log = logging.getLogger(__name__)

STATE_CHANGE = "EndpointStateChange"
MAX_UNSUBSCRIBE = 10_000  # the older call app's subscriptions to take away, one per connection it made

# (agent id, reachable) -> e.g. keep the agent out of routing while their phone is gone
OnChange = Callable[[str, bool], Awaitable[None]]


def reachable(state: str) -> bool:
    # "unknown" is what a phone that is never qualified reports: it is trusted rather than kept offline.
    return state in ("online", "unknown")


class EndpointPresence:
    def __init__(self, ari: AriClient, agents_by_endpoint: Mapping[str, str], on_change: OnChange) -> None:
        self.ari = ari
        self.app = f"{ari.app}-presence"  # per call app: workers do not take each other's events
        self.agents = dict(agents_by_endpoint)  # PJSIP endpoint name -> agent id
        self.on_change = on_change
        self.known: dict[str, bool] = {}  # agent id -> reachable, as last reported
        ari.add_app(self.app, self.handle)
        ari.on_connect.append(self.resync)

    async def resync(self) -> None:
        await self._unfollow_from_call_app()
        await self._follow_agent_endpoints()
        try:
            endpoints = await self.ari.request("GET", "/endpoints/PJSIP")
        except AriError as exc:
            log.warning("presence: cannot read agent endpoints: %s", exc)
            return
        for endpoint in endpoints or []:
            await self._update(endpoint)

    async def _unfollow_from_call_app(self) -> None:
        """Asterisk keeps an app's subscriptions across reconnections and restarts of Hilo, counted: the call
        app of an earlier version subscribed to `endpoint:PJSIP` at every connection (every SIP channel's events
        twice), and each unsubscription takes one away, so it is repeated until Asterisk says there is none."""
        for _ in range(MAX_UNSUBSCRIBE):
            try:
                await self._subscription("DELETE", self.ari.app, ["endpoint:PJSIP"])
            except AriError as exc:
                if exc.status != 422:  # 422: not subscribed (any more), as it should be
                    log.warning("presence: cannot unsubscribe %s from endpoint:PJSIP: %s", self.ari.app, exc)
                return
        log.warning("presence: %s still follows endpoint:PJSIP after %d unsubscriptions", self.ari.app, MAX_UNSUBSCRIBE)

    async def _follow_agent_endpoints(self) -> None:
        try:  # only the state changes are sent: not the events of the agents' own channels
            await self.ari.request(
                "PUT", f"/applications/{quote(self.app)}/eventFilter", body={"allowed": [{"type": STATE_CHANGE}]}
            )
        except AriError as exc:  # the events are still told apart by their application: said, not fatal
            log.warning("presence: cannot filter the events of %s: %s", self.app, exc)
        try:  # Asterisk keeps and counts subscriptions: only those it lacks, so none piles up over reconnections
            app = await self.ari.request("GET", f"/applications/{quote(self.app)}") or {}
            have = set(app.get("endpoint_ids", []))
        except AriError as exc:
            log.warning("presence: cannot read the subscriptions of %s: %s", self.app, exc)
            have = set()
        sources = [f"endpoint:PJSIP/{name}" for name in sorted(self.agents) if f"PJSIP/{name}" not in have]
        if not sources:
            return
        try:
            await self._subscription("POST", self.app, sources)
            return
        except AriError as exc:
            if exc.status != 422:
                log.warning("presence: cannot follow the agents' endpoints: %s", exc)
                return
        # 422: Asterisk lacks one of them and then subscribes none, so one by one, naming the missing ones.
        for source in sources:
            try:
                await self._subscription("POST", self.app, [source])
            except AriError as exc:
                log.warning("presence: cannot follow %s (an agent's phone Asterisk does not have?): %s", source, exc)

    async def close(self) -> None:
        """Unsubscribe presence's app (Asterisk then forgets it): a worker that is gone leaves no app behind."""
        for name in sorted(self.agents):
            with contextlib.suppress(AriError, OSError, TimeoutError):
                await self._subscription("DELETE", self.app, [f"endpoint:PJSIP/{name}"])

    async def _subscription(self, method: str, app: str, sources: list[str]) -> None:
        path = f"/applications/{quote(app)}/subscription"
        await self.ari.request(method, path, params={"eventSource": ",".join(sources)})

    def handle(self, event: Event) -> None:
        if event.type == STATE_CHANGE:
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
