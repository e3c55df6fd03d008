"""The one place that publishes events. Every fact Hilo learns (a call started, a customer was identified,
an agent answered) is first made durable on the timeline, then fanned out here to consoles, other nodes
and tools over Redis pub/sub on `<namespace>:events`."""

from __future__ import annotations

import json
import logging
from typing import Any

import redis.asyncio as aioredis

from hilo.degraded import REDIS_DOWN, Degradations

log = logging.getLogger(__name__)


def events_channel(namespace: str) -> str:
    return f"{namespace}:events"


class Notifier:
    def __init__(self, redis: aioredis.Redis, namespace: str, degradations: Degradations | None = None) -> None:
        self.redis = redis
        self.channel = events_channel(namespace)
        self.degradations = degradations

    async def publish(self, event: dict[str, Any]) -> None:
        # The event is already on the timeline in PostgreSQL: a failed fan-out loses nothing durable,
        # so it is logged (and counted, Redis being away) rather than allowed to break the call.
        try:
            await self.redis.publish(self.channel, json.dumps(event, default=str))
        except REDIS_DOWN as exc:
            if self.degradations is not None:
                self.degradations.note("redis", "publish", f"{event.get('type')}: {type(exc).__name__}")
            else:
                log.warning("could not publish event %s: %s", event.get("type"), exc)
        except Exception:
            log.exception("could not publish event %s", event.get("type"))
