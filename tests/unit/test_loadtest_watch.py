"""The parts of a run that act on or watch the stack, against stand-ins: simulated agents' talk time, the
after-run check, and replies counted at the provider fakes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

from server.loadtest.agents import AgentTalk
from server.loadtest.calls import CallBook
from server.loadtest.checks import wait_at_rest
from server.loadtest.hilo_events import HiloEvents
from server.loadtest.messaging import Replies
from server.loadtest.rest import Ari, HiloApi
from server.loadtest.sipp import LogEvent


class FakeAri:
    def __init__(self, channels: list[dict[str, Any]], trunk: list[list[str]] | None = None) -> None:
        self.live = channels
        self.trunk = trunk or [[]]
        self.hung_up: list[str] = []

    async def channels(self) -> list[dict[str, Any]]:
        return self.live

    async def variable(self, channel_id: str, name: str) -> str | None:
        assert name == "CHANNEL(pjsip,call-id)"
        return f"sip-{channel_id}"

    async def hangup(self, channel_id: str) -> None:
        self.hung_up.append(channel_id)
        self.live = [c for c in self.live if c["id"] != channel_id]

    async def endpoint_channels(self, technology: str, resource: str) -> list[str]:
        return self.trunk.pop(0) if len(self.trunk) > 1 else self.trunk[0]


class FakeApi:
    def __init__(self, boards: list[dict[str, Any]]) -> None:
        self.boards = boards

    async def wallboard(self) -> dict[str, Any]:
        return self.boards.pop(0) if len(self.boards) > 1 else self.boards[0]


def now() -> str:
    return datetime.now(UTC).isoformat()


async def test_an_agent_hangs_up_the_runs_call_after_the_talk_time() -> None:
    ari = FakeAri(
        [
            {"id": "hilo-agent-1", "dialplan": {"app_name": "Stasis", "app_data": "hilo,agent,iid-1"}},
            {"id": "hilo-agent-2", "dialplan": {"app_name": "Stasis", "app_data": "hilo,agent,iid-2"}},
            {"id": "1796675553.12", "dialplan": {"app_data": "hilo,100"}},
        ]
    )
    events = HiloEvents()
    talk = AgentTalk(cast(Ari, ari), "hilo", 0.05, events, {"100"})
    for iid, dialed in (("iid-1", "100"), ("iid-2", "150")):
        started = {"dialed": dialed, "channel_ref": f"caller-{iid}"}
        events.add({"type": "interaction.started", "interaction_id": iid, "at": now(), "data": started})
        events.add({"type": "agent.answered", "interaction_id": iid, "at": now(), "data": {"agent": "bob"}})
    assert len(talk._tasks) == 1  # the other line's call is not the run's: no task for it
    for _ in range(200):  # within 2 s
        if talk.ended:
            break
        await asyncio.sleep(0.01)
    assert ari.hung_up == ["hilo-agent-1"]  # not the other line's call, not the caller's channel
    assert talk.ended == 1
    assert talk.call_ids == {"sip-caller-iid-1"}  # the caller's SIP Call-ID, to count its end as the agent's
    book = CallBook()
    for event in (
        LogEvent("I", "sip-caller-iid-1", 1.0),
        LogEvent("A", "sip-caller-iid-1", 1.1),
        LogEvent("R", "sip-caller-iid-1", 9.0),
    ):
        book.add(event)
    book.agent_ended(talk.call_ids)
    book.close()
    assert book.calls["sip-caller-iid-1"].outcome == "agent_hung_up" and book.counts()["succeeded"] == 1
    await talk.close()


async def test_the_centre_is_at_rest_once_calls_agents_and_queues_are() -> None:
    busy = {"queues": [{"waiting": 1}], "agents": [{"id": "bob", "state": "busy"}, {"id": "alice", "state": "away"}]}
    calm = {
        "queues": [{"waiting": 0}],
        "agents": [{"id": "bob", "state": "available"}, {"id": "alice", "state": "away"}],
    }
    ari = FakeAri([], trunk=[["c1"], []])
    rest = await wait_at_rest(
        cast(Ari, ari),
        cast(HiloApi, FakeApi([busy, calm])),
        trunk="carrier-sim",
        namespace="hilo",
        agents_before={"bob"},  # alice was away before: not expected back
        within_s=5,
    )
    assert rest.at_rest and rest.after_s is not None and rest.after_s < 5
    stuck = await wait_at_rest(
        cast(Ari, FakeAri([{"id": "hilo-agent-9"}])),
        cast(HiloApi, FakeApi([busy])),
        trunk="carrier-sim",
        namespace="hilo",
        agents_before={"bob"},
        within_s=0.3,
    )
    assert not stuck.at_rest
    assert stuck.ghost_channels == ["hilo-agent-9"] and stuck.waiting == 1 and stuck.agents_not_available == ["bob"]


async def test_a_call_that_is_not_the_runs_is_no_ghost_of_it() -> None:
    """The capacity soak's long call outlives the soak: its channels are left out of the after-run check."""
    calm = {"queues": [{"waiting": 0}], "agents": [{"id": "bob", "state": "available"}]}
    long_call = ["caller-long", "hilo-agent-long"]
    rest = await wait_at_rest(
        cast(Ari, FakeAri([{"id": "hilo-agent-long"}], trunk=[["caller-long"]])),
        cast(HiloApi, FakeApi([calm])),
        trunk="carrier-sim",
        namespace="hilo",
        agents_before={"bob"},
        within_s=0.3,
        ignore=long_call,
    )
    assert rest.at_rest and rest.ghost_channels == []
    seen = await wait_at_rest(
        cast(Ari, FakeAri([{"id": "hilo-agent-long"}], trunk=[["caller-long"]])),
        cast(HiloApi, FakeApi([calm])),
        trunk="carrier-sim",
        namespace="hilo",
        agents_before={"bob"},
        within_s=0.3,
    )
    assert seen.ghost_channels == long_call  # without `ignore`, the same channels are the run's ghosts


def test_replies_count_once_the_fake_accepted_them() -> None:
    records: list[dict[str, Any]] = [{"form": {"To": "+447700900001"}, "sid": "SM1"}, {"body": None}]
    replies = Replies(records, lambda r: (r.get("form") or {}).get("To") or (r.get("body") or {}).get("to"))
    replies.poll()
    assert list(replies.times) == ["+447700900001"]
    records[1].update(body={"to": "447700900002"}, id="wamid.x")  # read, then accepted
    replies.poll()
    assert set(replies.times) == {"+447700900001", "447700900002"}
    records.append({"form": {"To": "+447700900003"}})  # refused: never an id
    for _ in range(Replies.PATIENCE + 1):
        replies.poll()
    assert "+447700900003" not in replies.times and not replies.open
