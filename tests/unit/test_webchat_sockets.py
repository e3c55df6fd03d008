"""The public web chat socket's costs: how many may be open at once (per address, IPv6 by /64, per visitor,
in all), and the node's one live feed that fans replies out to its sockets, resubscribing after a Redis
failure and telling the sockets to reconnect meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import fakeredis

from bridges.messages import OutboundMessage
from bridges.webchat import VisitorFeed, WebChatSender
from bridges.webchat_limits import ChatLimits, OpenSockets, Refusal, SocketSlot
from hilo.web.forwarded import address_bucket


def test_ipv6_addresses_count_by_their_64() -> None:
    assert address_bucket("2001:db8:1:2:aaaa::1") == address_bucket("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_bucket("2001:db8:1:3::1") != address_bucket("2001:db8:1:2::1")
    assert address_bucket("::ffff:192.0.2.7") == address_bucket("192.0.2.7") == "192.0.2.7"
    assert address_bucket("unknown") == "unknown"


def test_open_sockets_are_capped_per_address_per_visitor_and_in_all() -> None:
    sockets = OpenSockets(ChatLimits(sockets_per_address=3, sockets_per_visitor=2, sockets_total=5))
    mine = [sockets.admit(f"2001:db8::{i}") for i in range(3)]  # one /64
    assert all(isinstance(s, SocketSlot) for s in mine)
    refused = sockets.admit("2001:db8::99")
    assert isinstance(refused, Refusal) and refused.field == "sockets" and refused.retry_after > 0
    assert refused.reason.startswith("too many open chats from your address: at most 3 at once")
    slots = cast(list[SocketSlot], mine)
    assert slots[0].join("v1-a") is None and slots[1].join("v1-a") is None
    again = slots[2].join("v1-a")
    assert isinstance(again, Refusal) and "open windows of this chat: at most 2" in again.reason
    others = [sockets.admit(f"192.0.2.{i}") for i in range(2)]
    assert all(isinstance(s, SocketSlot) for s in others)
    full = sockets.admit("198.51.100.1")
    assert isinstance(full, Refusal) and "open chats on this server: at most 5" in full.reason
    slots[0].release()
    slots[0].release()  # twice is once
    assert isinstance(sockets.admit("2001:db8::1"), SocketSlot)  # a place was freed
    assert sockets.by_visitor["v1-a"] == 1 and sockets.total == 5
    for slot in [*slots[1:], *cast(list[SocketSlot], others)]:
        slot.release()
    assert sockets.total == 1 and "v1-a" not in sockets.by_visitor


async def _next(local: Any, within: float = 2) -> str | None:
    body: str | None = await asyncio.wait_for(local.queue.get(), within)
    return body


async def test_one_subscription_serves_every_socket_of_the_node() -> None:
    redis = fakeredis.FakeAsyncRedis()
    feed = VisitorFeed(redis, "t[1]")  # a namespace with glob characters matches only itself
    feed.start()
    try:
        await asyncio.wait_for(feed.ready.wait(), 2)
        ana, ana_too, bob = feed.attach("v1-ana"), feed.attach("v1-ana"), feed.attach("v1-bob")
        sender = WebChatSender(redis, "t[1]")
        await sender.send(
            OutboundMessage(
                channel="webchat", provider="webchat", sender="web", recipient="v1-ana", text="hi", conversation_id="c"
            ),
            7,
        )
        await redis.publish("t1:webchat:visitor:v1-bob", "not ours")
        assert '"text": "hi"' in str(await _next(ana)) and '"id": 7' in str(await _next(ana_too))
        await redis.publish("t[1]:webchat:visitor:v1-bob", "for bob")
        assert await _next(bob) == "for bob"  # and nothing of the other namespace before it
        feed.detach(ana)
        feed.detach(ana_too)
        assert list(feed._local) == ["v1-bob"]
        assert feed.subscriptions == 1
    finally:
        await feed.close()
        await redis.aclose()


class BrokenPubSub:
    """A subscription whose connection fails on the test's word."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[dict[str, Any] | Exception] = asyncio.Queue()
        self.closed = False

    async def psubscribe(self, pattern: str) -> None:
        self.pattern = pattern

    async def listen(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            event = await self.events.get()
            if isinstance(event, Exception):
                raise event
            yield event

    async def aclose(self) -> None:
        self.closed = True


class FlakyRedis:
    def __init__(self) -> None:
        self.made: list[BrokenPubSub] = []

    def pubsub(self) -> BrokenPubSub:
        self.made.append(BrokenPubSub())
        return self.made[-1]


def reply(visitor: str, body: str) -> dict[str, Any]:
    return {
        "type": "pmessage",
        "pattern": b"t:webchat:visitor:*",
        "channel": f"t:webchat:visitor:{visitor}",
        "data": body,
    }


async def test_a_redis_blip_closes_the_sockets_and_the_feed_comes_back() -> None:
    redis = FlakyRedis()
    feed = VisitorFeed(cast(Any, redis), "t", retry_s=0.01)
    feed.start()
    try:
        await asyncio.wait_for(feed.ready.wait(), 2)
        ana = feed.attach("v1-ana")
        redis.made[0].events.put_nowait(reply("v1-ana", "one"))
        assert await _next(ana) == "one"
        redis.made[0].events.put_nowait(ConnectionError("Connection closed by server."))
        assert await _next(ana) is None  # the socket is told to reconnect (and then reads its mailbox)
        assert redis.made[0].closed and not feed.ready.is_set()
        await asyncio.wait_for(feed.ready.wait(), 2)  # subscribed again
        assert feed.subscriptions == 2
        again = feed.attach("v1-ana")
        redis.made[1].events.put_nowait(reply("v1-ana", "two"))
        assert await _next(again) == "two"
    finally:
        await feed.close()
