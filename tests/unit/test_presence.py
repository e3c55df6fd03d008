"""Agent phone presence from endpoint states: initial read, changes, repeats and unknown endpoints; the
endpoints are followed by an app of presence's own, never by the call app (whose SIP channels' events would
then come twice)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from asterisk.ari import AriError
from asterisk.events import parse_event
from routing.presence import EndpointPresence


class FakeAri:
    app = "hilo-test"

    def __init__(
        self,
        endpoints: list[dict[str, Any]],
        refused: dict[tuple[str, str], int] | None = None,
        old_subscriptions: int = 0,
    ) -> None:
        self.endpoints = endpoints
        self.refused = refused or {}  # (method, eventSource) -> the status Asterisk answers
        self.old_subscriptions = old_subscriptions  # the call app's to endpoint:PJSIP, as Asterisk counts them
        self.presence_endpoints: list[str] = []  # what presence's app follows already
        self.handlers: list[Any] = []
        self.apps: dict[str, Any] = {}
        self.on_connect: list[Any] = []
        self.requests: list[tuple[str, str, Any]] = []
        self.tasks: list[asyncio.Task[None]] = []

    def add_app(self, app: str, handler: Any) -> None:
        self.apps[app] = handler

    async def request(self, method: str, path: str, *, params: Any = None, body: Any = None) -> Any:
        self.requests.append((method, path, params or body))
        if (method, path) == ("GET", f"/applications/{self.app}-presence"):
            return {"endpoint_ids": self.presence_endpoints}
        if (method, path) == ("DELETE", f"/applications/{self.app}/subscription"):
            if not self.old_subscriptions:
                raise AriError(422, method, path, "Event source was not subscribed to", params)
            self.old_subscriptions -= 1
            return None
        status = self.refused.get((method, (params or {}).get("eventSource", "")))
        if status is not None:
            raise AriError(status, method, path, "refused", params)
        return self.endpoints if method == "GET" else None

    def spawn(self, coro: Any) -> None:
        self.tasks.append(asyncio.ensure_future(coro))


def _endpoint(name: str, state: str) -> dict[str, Any]:
    return {"technology": "PJSIP", "resource": name, "state": state, "channel_ids": []}


async def test_reads_every_agent_endpoint_on_connect_and_follows_changes() -> None:
    ari = FakeAri(
        [_endpoint("agent-alice", "online"), _endpoint("agent-bob", "offline"), _endpoint("trunk", "online")],
        old_subscriptions=2,  # an earlier version subscribed the call app at each of its connections
    )
    changes: list[tuple[str, bool]] = []

    async def on_change(agent: str, up: bool) -> None:
        changes.append((agent, up))

    presence = EndpointPresence(ari, {"agent-alice": "alice", "agent-bob": "bob"}, on_change)  # type: ignore[arg-type]
    assert ari.apps == {"hilo-test-presence": presence.handle} and ari.handlers == []
    await presence.resync()
    unsubscribe = ("DELETE", "/applications/hilo-test/subscription", {"eventSource": "endpoint:PJSIP"})
    assert ari.requests[:6] == [
        # what an earlier version subscribed the call app to is undone (Asterisk keeps and counts it)
        unsubscribe,
        unsubscribe,
        unsubscribe,  # 422: none left
        ("PUT", "/applications/hilo-test-presence/eventFilter", {"allowed": [{"type": "EndpointStateChange"}]}),
        ("GET", "/applications/hilo-test-presence", None),
        (
            "POST",
            "/applications/hilo-test-presence/subscription",
            {"eventSource": "endpoint:PJSIP/agent-alice,endpoint:PJSIP/agent-bob"},
        ),
    ]
    assert ari.old_subscriptions == 0
    assert not [r for r in ari.requests if r[0] == "POST" and r[1] == "/applications/hilo-test/subscription"]
    assert changes == [("alice", True), ("bob", False)]

    for state in ("online", "online", "offline"):
        presence.handle(parse_event({"type": "EndpointStateChange", "endpoint": _endpoint("agent-bob", state)}))
        await asyncio.gather(*ari.tasks)
    presence.handle(parse_event({"type": "EndpointStateChange", "endpoint": _endpoint("trunk", "offline")}))
    await asyncio.gather(*ari.tasks)
    assert changes[2:] == [("bob", True), ("bob", False)]  # a repeated state is reported once


async def test_an_agent_phone_asterisk_lacks_does_not_stop_the_others_being_followed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    both = "endpoint:PJSIP/agent-alice,endpoint:PJSIP/agent-gone"
    ari = FakeAri(
        [_endpoint("agent-alice", "online")],
        # not subscribed (as it should be); one unknown endpoint makes Asterisk refuse the whole list
        {("POST", both): 422, ("POST", "endpoint:PJSIP/agent-gone"): 422},
    )
    changes: list[tuple[str, bool]] = []

    async def on_change(agent: str, up: bool) -> None:
        changes.append((agent, up))

    presence = EndpointPresence(ari, {"agent-alice": "alice", "agent-gone": "gone"}, on_change)  # type: ignore[arg-type]
    await presence.resync()
    subscribed = [r[2]["eventSource"] for r in ari.requests if r[0] == "POST"]
    assert subscribed == [both, "endpoint:PJSIP/agent-alice", "endpoint:PJSIP/agent-gone"]
    assert changes == [("alice", True)]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "endpoint:PJSIP/agent-gone" in warnings[0], warnings


async def test_a_reconnection_subscribes_only_what_asterisk_lacks_and_close_unsubscribes() -> None:
    """Asterisk counts subscriptions (one unsubscription takes one away): one per endpoint, never one more per
    reconnection; closing takes presence's app out of Asterisk."""
    ari = FakeAri([_endpoint("agent-alice", "online"), _endpoint("agent-bob", "online")])
    ari.presence_endpoints = ["PJSIP/agent-alice"]

    async def on_change(agent: str, up: bool) -> None:
        return None

    presence = EndpointPresence(ari, {"agent-alice": "alice", "agent-bob": "bob"}, on_change)  # type: ignore[arg-type]
    await presence.resync()
    subscribed = [r[2]["eventSource"] for r in ari.requests if r[0] == "POST"]
    assert subscribed == ["endpoint:PJSIP/agent-bob"]
    ari.requests.clear()
    await presence.close()
    assert ari.requests == [
        ("DELETE", "/applications/hilo-test-presence/subscription", {"eventSource": f"endpoint:PJSIP/{name}"})
        for name in ("agent-alice", "agent-bob")
    ]
