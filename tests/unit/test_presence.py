"""Agent phone presence from endpoint states: initial read, changes, repeats and unknown endpoints."""

from __future__ import annotations

import asyncio
from typing import Any

from asterisk.events import parse_event
from routing.presence import EndpointPresence


class FakeAri:
    app = "hilo-test"

    def __init__(self, endpoints: list[dict[str, Any]]) -> None:
        self.endpoints = endpoints
        self.handlers: list[Any] = []
        self.on_connect: list[Any] = []
        self.requests: list[tuple[str, str, Any]] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def request(self, method: str, path: str, *, params: Any = None) -> Any:
        self.requests.append((method, path, params))
        return self.endpoints if method == "GET" else None

    def spawn(self, coro: Any) -> None:
        self.tasks.append(asyncio.ensure_future(coro))


def _endpoint(name: str, state: str) -> dict[str, Any]:
    return {"technology": "PJSIP", "resource": name, "state": state, "channel_ids": []}


async def test_reads_every_agent_endpoint_on_connect_and_follows_changes() -> None:
    ari = FakeAri([_endpoint("agent-alice", "online"), _endpoint("agent-bob", "offline"), _endpoint("trunk", "online")])
    changes: list[tuple[str, bool]] = []

    async def on_change(agent: str, up: bool) -> None:
        changes.append((agent, up))

    presence = EndpointPresence(ari, {"agent-alice": "alice", "agent-bob": "bob"}, on_change)  # type: ignore[arg-type]
    await presence.resync()
    assert ("POST", "/applications/hilo-test/subscription", {"eventSource": "endpoint:PJSIP"}) in ari.requests
    assert changes == [("alice", True), ("bob", False)]

    for state in ("online", "online", "offline"):
        presence.handle(parse_event({"type": "EndpointStateChange", "endpoint": _endpoint("agent-bob", state)}))
        await asyncio.gather(*ari.tasks)
    presence.handle(parse_event({"type": "EndpointStateChange", "endpoint": _endpoint("trunk", "offline")}))
    await asyncio.gather(*ari.tasks)
    assert changes[2:] == [("bob", True), ("bob", False)]  # a repeated state is reported once
