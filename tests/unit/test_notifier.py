"""Events are published in batches (hilo/notifier.py): those handed over together go in one Redis round trip,
in the order published; each publish returns once its event was sent; Redis away never fails a publisher."""

import asyncio
import json
from typing import Any

import fakeredis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from hilo.degraded import Degradations
from hilo.notifier import Notifier, events_channel
from tests.stack.expect import eventually


async def _received(pubsub: Any, n: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while len(got) < n:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                got.append(json.loads(message["data"]))
    return got


async def test_events_handed_over_together_are_one_round_trip_in_order() -> None:
    redis = fakeredis.FakeAsyncRedis()
    notifier = Notifier(redis, "unit")
    pubsub = redis.pubsub()
    await pubsub.subscribe(events_channel("unit"))
    await pubsub.get_message(timeout=1)  # the subscription's confirmation
    await asyncio.gather(*(notifier.publish({"type": f"e{i}"}) for i in range(5)))
    assert notifier.round_trips == 1
    await notifier.publish({"type": "e5"})  # each awaited alone: sent before publish returns
    await notifier.publish({"type": "e6"})
    assert notifier.round_trips == 3
    assert [e["type"] for e in await _received(pubsub, 7)] == [f"e{i}" for i in range(7)]
    await pubsub.aclose()


async def test_a_publisher_cancelled_does_not_lose_the_others_events() -> None:
    redis = fakeredis.FakeAsyncRedis()
    notifier = Notifier(redis, "unit")
    pubsub = redis.pubsub()
    await pubsub.subscribe(events_channel("unit"))
    await pubsub.get_message(timeout=1)
    first = asyncio.create_task(notifier.publish({"type": "a"}))
    second = asyncio.create_task(notifier.publish({"type": "b"}))
    # The sender runs after both publishers (tasks start in order): once it has begun, both events are in.
    await eventually(lambda: notifier.round_trips >= 1, within=2, what="the batch being sent")
    first.cancel()
    await second
    assert [e["type"] for e in await _received(pubsub, 2)] == ["a", "b"]
    await pubsub.aclose()


async def test_redis_away_is_counted_and_never_raised() -> None:
    redis = aioredis.Redis(host="127.0.0.1", port=9, socket_connect_timeout=0.5)  # nobody listens there
    degradations = Degradations(CollectorRegistry())
    notifier = Notifier(redis, "unit", degradations)
    await asyncio.gather(notifier.publish({"type": "a"}), notifier.publish({"type": "b"}))
    counted = degradations.total.labels(part="redis", what="publish")._value.get()
    assert counted == 2
    await redis.aclose()
