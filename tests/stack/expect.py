"""Declared expectations on event streams: "this event, with these fields, within N seconds".

Telephony tests wait on events, never on bare sleeps: each `expect` names the event type and fields it
needs and fails with what it did see if they do not arrive in time."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from asterisk.ari import AriClient
from asterisk.events import Event


def _get(event: dict[str, Any], path: str) -> Any:
    value: Any = event
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


_MISSING = object()


def matches(event: dict[str, Any], type_: str, fields: dict[str, Any]) -> bool:
    if event.get("type") != type_:
        return False
    for path, wanted in fields.items():
        value = _get(event, path.replace("__", "."))
        if callable(wanted) and not isinstance(wanted, str):
            if value is _MISSING or not wanted(value):
                return False
        elif value != wanted:
            return False
    return True


class EventStream:
    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []
        # Where `expect` starts looking unless told otherwise: the stack fixture moves it to the end of
        # the stream before each test, so no test matches another test's events.
        self.baseline = 0
        # Where the stream's source lost events (its follower's subscription failed and was made again): a
        # failed expectation that spans one says so, rather than only what it did not see.
        self.gaps: list[tuple[int, str]] = []
        self._waiters: list[asyncio.Future[None]] = []

    def gap(self, why: str) -> None:
        self.gaps.append((len(self.events), why))

    def add(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def mark(self) -> int:
        return len(self.events)

    async def expect(self, type_: str, *, within: float, since: int | None = None, **fields: Any) -> dict[str, Any]:
        """The first event from position `since` of type `type_` whose dotted fields (`data__digit` for
        data.digit) equal the given values or satisfy the given predicates."""
        return (await self._find(type_, within=within, since=since, fields=fields))[1]

    async def _find(
        self, type_: str, *, within: float, since: int | None, fields: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """`expect`, with the event's position in the stream."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        since = self.baseline if since is None else since
        checked = since
        while True:
            for position in range(checked, len(self.events)):
                if matches(self.events[position], type_, fields):
                    return position, self.events[position]
            checked = max(checked, len(self.events))
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = [e.get("type") for e in self.events[since:]][-25:]
                lost = [why for at, why in self.gaps if at >= since]
                missed = f"; events may have been missed: the follower lost its subscription ({lost})" if lost else ""
                raise AssertionError(f"{self.name}: expected {type_} {fields} within {within}s; saw {seen}{missed}")
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                pass

    async def expect_none(self, type_: str, *, within: float, since: int | None = None, **fields: Any) -> None:
        """A declared absence: no event of type `type_` with these fields from position `since` during
        `within` seconds (e.g. no channel of a call destroyed while a dependency is away)."""
        try:
            event = await self.expect(type_, within=within, since=since, **fields)
        except AssertionError:
            return
        raise AssertionError(f"{self.name}: expected no {type_} {fields} within {within}s; got {event}")

    async def expect_in_order(
        self, steps: list[tuple[str, dict[str, Any]]], *, within: float, since: int | None = None
    ) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        found = []
        position = self.baseline if since is None else since
        for type_, fields in steps:
            at, event = await self._find(type_, within=max(deadline - loop.time(), 0.01), since=position, fields=fields)
            position = at + 1  # (not `events.index(event)`: an equal earlier event would move it back)
            found.append(event)
        return found


FOLLOW_RETRY_S = (0.1, 2.0)  # first and longest pause before subscribing again


async def follow_redis(redis: aioredis.Redis, channel: str, stream: EventStream, ready: asyncio.Event) -> None:
    """Every message of `channel` into `stream`, for the whole session. A subscription that fails or ends (the
    connection dropped, Redis's pub/sub output buffer limit hit) is made again, and the stream is told of the
    gap: a test that then misses an event fails saying the follower lost its subscription, not only that the
    event did not come. The stack fixture checks before each test that this task is still running."""
    pause = FOLLOW_RETRY_S[0]
    while True:
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(channel)
            ready.set()
            pause = FOLLOW_RETRY_S[0]
            async for message in pubsub.listen():
                if message["type"] == "message":
                    stream.add(json.loads(message["data"]))
            stream.gap("the subscription ended")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stream.gap(f"{type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        await asyncio.sleep(pause)  # a pause between tries to subscribe again, not a wait for an event
        pause = min(pause * 2, FOLLOW_RETRY_S[1])


def follow_ari(ari: AriClient, stream: EventStream) -> Callable[[Event], None]:
    def handler(event: Event) -> None:
        stream.add(event.raw)

    ari.handlers.append(handler)
    return handler


async def eventually(check: Callable[[], Any], *, within: float, what: str) -> Any:
    """A declared expectation on state that announces itself by no event (rows in PostgreSQL, routing's
    view, what a fake provider received): `check()`, plain or async, gives something truthy within
    `within` seconds. Returns what it gave."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.05)
