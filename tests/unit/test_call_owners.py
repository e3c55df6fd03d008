"""Acting on a call another worker owns (ivr/call_owners.py), over fakeredis' pub/sub: the owner answers and
acts, a worker without the call says so, and a question nobody owns ends at once (or at the bound)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import fakeredis
import pytest

from asterisk.ari import AriError
from ivr.call_owners import CallOwners, OwnerFailed
from ivr.live_calls import LiveCalls, NotLive


class Live(LiveCalls):
    """Calls by interaction id -> agent; hold/unhold change a flag (an AriError for agent 'broken')."""

    def __init__(self, calls: dict[str, str]) -> None:  # no ARI or timeline: only what CallOwners uses
        self.agents = calls
        self.held: set[str] = set()

    def get(self, interaction_id: str) -> object:  # type: ignore[override]
        if interaction_id not in self.agents:
            raise NotLive(f"interaction {interaction_id} is not here")
        return type("Call", (), {"agent_id": self.agents[interaction_id]})()

    async def hold(self, interaction_id: str, by: str) -> bool:
        self.get(interaction_id)
        if self.agents[interaction_id] == "broken":
            raise AriError(404, "DELETE", "/bridges/x", "Channel not in bridge")
        changed = interaction_id not in self.held
        self.held.add(interaction_id)
        return changed

    async def unhold(self, interaction_id: str, by: str) -> bool:
        self.get(interaction_id)
        changed = interaction_id in self.held
        self.held.discard(interaction_id)
        return changed


@pytest.fixture
async def workers() -> AsyncIterator[tuple[CallOwners, CallOwners, Live]]:
    server = fakeredis.FakeServer()
    w1 = CallOwners(fakeredis.FakeAsyncRedis(server=server), "t", "t-w1", Live({}), wait_s=1)
    owner_live = Live({"call-a": "bob", "call-b": "broken"})
    w2 = CallOwners(fakeredis.FakeAsyncRedis(server=server), "t", "t-w2", owner_live, wait_s=1)
    await w1.start()
    await w2.start()
    yield w1, w2, owner_live
    await w1.close()
    await w2.close()


async def test_the_owner_names_the_agent_and_holds_the_call(workers: tuple[CallOwners, CallOwners, Live]) -> None:
    w1, _, owner_live = workers
    assert await w1.agent("call-a") == "bob"
    assert await w1.hold("call-a", "user:bob@api") is True
    assert owner_live.held == {"call-a"}
    assert await w1.hold("call-a", "user:bob@api") is False  # already held: nothing changed
    assert await w1.unhold("call-a", "user:bob@api") is True
    assert owner_live.held == set()


async def test_a_call_no_worker_has_is_not_live_without_waiting_for_the_bound(
    workers: tuple[CallOwners, CallOwners, Live],
) -> None:
    w1, _, _ = workers
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(NotLive, match="on any worker now"):
        await w1.agent("call-z")
    assert loop.time() - started < 0.5, "every worker said no: the answer comes before the 1 s bound"


async def test_the_owners_failure_is_its_own_error(workers: tuple[CallOwners, CallOwners, Live]) -> None:
    w1, _, _ = workers
    with pytest.raises(OwnerFailed, match=r"worker t-w2: ARI DELETE /bridges/x -> 404"):
        await w1.hold("call-b", "user:x@api")


async def test_a_worker_that_does_not_answer_ends_the_wait_at_the_bound() -> None:
    server = fakeredis.FakeServer()
    asker = CallOwners(fakeredis.FakeAsyncRedis(server=server), "t", "t-w1", Live({}), wait_s=0.3)
    await asker.start()
    silent = fakeredis.FakeAsyncRedis(server=server).pubsub()
    await silent.subscribe(asker.ask_channel)  # a worker that hears the question but never answers
    try:
        with pytest.raises(NotLive, match=r"answered within 0\.3 s"):
            await asker.agent("call-a")
    finally:
        await silent.aclose()
        await asker.close()
