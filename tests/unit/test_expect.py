"""The stack tests' event streams (tests/stack/expect.py): the follower of Hilo's events on Redis survives a
lost subscription and tells the stream, so a test that then misses an event says why; `expect_in_order` moves
on from where each step matched, even past an equal earlier event."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from tests.stack.expect import EventStream, follow_redis


class BreakingPubSub:
    """A subscription whose connection fails on the test's word."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[dict[str, Any] | Exception] = asyncio.Queue()

    async def subscribe(self, channel: str) -> None:
        self.channel = channel

    async def listen(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            event = await self.events.get()
            if isinstance(event, Exception):
                raise event
            yield event

    async def aclose(self) -> None:
        return None


class FlakyRedis:
    def __init__(self) -> None:
        self.made: list[BreakingPubSub] = []
        self.subscribed = asyncio.Event()

    def pubsub(self) -> BreakingPubSub:
        self.made.append(BreakingPubSub())
        self.subscribed.set()
        return self.made[-1]


def message(type_: str) -> dict[str, Any]:
    return {"type": "message", "data": json.dumps({"type": type_})}


async def test_the_follower_subscribes_again_and_a_missed_event_names_the_gap() -> None:
    redis, stream, ready = FlakyRedis(), EventStream("Hilo"), asyncio.Event()
    follower = asyncio.create_task(follow_redis(cast(Any, redis), "t:events", stream, ready))
    try:
        await asyncio.wait_for(ready.wait(), 2)
        redis.made[0].events.put_nowait(message("interaction.started"))
        await stream.expect("interaction.started", within=2)
        redis.subscribed.clear()
        redis.made[0].events.put_nowait(ConnectionError("Connection closed by server."))
        await asyncio.wait_for(redis.subscribed.wait(), 2)  # subscribed again, by itself
        assert stream.gaps == [(1, "ConnectionError: Connection closed by server.")]
        redis.made[1].events.put_nowait(message("agent.answered"))
        await stream.expect("agent.answered", within=2)
        with pytest.raises(AssertionError, match="the follower lost its subscription"):
            await stream.expect("interaction.ended", within=0.1)
        assert not follower.done()
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


async def test_expect_in_order_moves_on_from_each_match_even_past_an_equal_earlier_event() -> None:
    stream = EventStream("Hilo")
    for type_ in ("a", "b", "a", "c"):
        stream.add({"type": type_})
    first, _, again = await stream.expect_in_order([("a", {}), ("b", {}), ("a", {})], within=0.1)
    assert first is not again and first == again  # equal events, the later one found after "b"
    with pytest.raises(AssertionError):  # no "b" after the second "a" (the first "a" is not where it is)
        await stream.expect_in_order([("a", {}), ("b", {}), ("a", {}), ("b", {})], within=0.1)
