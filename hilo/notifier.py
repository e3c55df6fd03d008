"""The one place that publishes events. Every fact Hilo learns (a call started, a customer was identified,
an agent answered) is first made durable on the timeline, then fanned out here to consoles, other nodes
and tools over Redis pub/sub on `<namespace>:events`.

Events are sent in batches, one Redis round trip (a pipeline) for all the events published while the batch
before was on its way: a call's opening publishes several at once, and under load every call publishes at
the same time. Each `publish` still returns once its event was sent, and the order of publishing is kept."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import redis.asyncio as aioredis

from hilo.degraded import REDIS_DOWN, Degradations

log = logging.getLogger(__name__)

MAX_BATCH = 500  # events in one pipeline at most (a burst is sent in several)


def events_channel(namespace: str) -> str:
    return f"{namespace}:events"


class Notifier:
    def __init__(self, redis: aioredis.Redis, namespace: str, degradations: Degradations | None = None) -> None:
        self.redis = redis
        self.channel = events_channel(namespace)
        self.degradations = degradations
        # (message, event type, resolved once sent), in the order published
        self._pending: list[tuple[str, str | None, asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None
        self.round_trips = 0  # pipelines sent (for tests and the curious)

    async def publish(self, event: dict[str, Any]) -> None:
        # The event is already on the timeline in PostgreSQL: a failed fan-out loses nothing durable,
        # so it is logged (and counted, Redis being away) rather than allowed to break the call.
        sent = asyncio.get_running_loop().create_future()
        self._pending.append((json.dumps(event, default=str), event.get("type"), sent))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name="notifier")
        await asyncio.shield(sent)  # a publisher cancelled does not cancel the batch it is in

    async def _send(self) -> None:
        """Send the pending events, a pipeline at a time, until none are left."""
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                await self._pipeline([(message, type_) for message, type_, _ in batch])
            finally:
                for _, _, sent in batch:
                    if not sent.done():
                        sent.set_result(None)

    async def _pipeline(self, batch: list[tuple[str, str | None]]) -> None:
        self.round_trips += 1
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for message, _ in batch:
                    pipe.publish(self.channel, message)
                await pipe.execute()
        except REDIS_DOWN as exc:
            for _, type_ in batch:
                if self.degradations is not None:
                    self.degradations.note("redis", "publish", f"{type_}: {type(exc).__name__}")
                else:
                    log.warning("could not publish event %s: %s", type_, exc)
        except Exception:
            log.exception("could not publish %d event(s), the first %s", len(batch), batch[0][1])
