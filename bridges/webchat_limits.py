"""Rate limits of the public web chat socket: connection attempts and messages, per visitor and per address.

The socket is open to anyone, so each of these is counted in a fixed window of `window_s` seconds, in Redis
(one count for all Hilo nodes: a visitor who reconnects to another node is still the same visitor):

- connections per client address (before the hello: a flood of new sockets costs a counter, nothing more)
  and per visitor (after the hello: one token reconnecting in a loop);
- messages per visitor and per client address (every frame but `ping` and `delivered`, which the widget
  sends by itself): over the limit, the frame is refused with an error naming the limit and when to try
  again, and nothing is stored (the widget may send it again later with the same id: no duplicate).

A visitor without a token gets a new one on every connection, so the per-address limits are what stop a
script; the per-visitor ones keep one busy visitor from using up their whole address's share (an office
behind one NAT). The client address is the socket's peer, or the last address in X-Forwarded-For before
it when the peer is one of HILO_TRUSTED_PROXIES."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web

from hilo.settings import Settings
from hilo.web.forwarded import Network as Network  # the type of HILO_TRUSTED_PROXIES entries
from hilo.web.forwarded import Proxies


@dataclass(frozen=True)
class ChatLimits:
    """HILO_WEBCHAT_* settings; 0 turns that limit off."""

    window_s: int = 60
    connects_per_address: int = 60
    connects_per_visitor: int = 20
    messages_per_address: int = 120
    messages_per_visitor: int = 30


def webchat_limits(settings: Settings) -> ChatLimits:
    return ChatLimits(
        window_s=settings.webchat_rate_window_s,
        connects_per_address=settings.webchat_connects_per_address,
        connects_per_visitor=settings.webchat_connects_per_visitor,
        messages_per_address=settings.webchat_messages_per_address,
        messages_per_visitor=settings.webchat_messages_per_visitor,
    )


@dataclass(frozen=True)
class Refusal:
    field: str  # "rate"
    reason: str
    retry_after: int  # seconds until the window that counted it ends


def client_address(request: web.Request, trusted_proxies: list[Network]) -> str:
    """The visitor's address: the peer, unless the peer is a trusted proxy; then the last address the proxies
    added to X-Forwarded-For that is not itself a trusted proxy (earlier entries are the client's own word)."""
    return Proxies(tuple(trusted_proxies)).client_address(request)


class ChatLimiter:
    def __init__(self, redis: aioredis.Redis, namespace: str, limits: ChatLimits) -> None:
        self.redis = redis
        self.namespace = namespace
        self.limits = limits

    async def connection(self, address: str, visitor: str | None = None) -> Refusal | None:
        """One connection attempt from `address` (before the hello), or by `visitor` (after it)."""
        if visitor is None:
            limit, what = self.limits.connects_per_address, "connections from your address"
            return await self._count("connect:addr", address, limit, what)
        limit, what = self.limits.connects_per_visitor, "connections of this chat"
        return await self._count("connect:visitor", visitor, limit, what)

    async def message(self, address: str, visitor: str) -> Refusal | None:
        """One frame from a visitor: counted for the visitor and for their address."""
        refused = await self._count("msg:visitor", visitor, self.limits.messages_per_visitor, "messages of this chat")
        if refused is not None:
            return refused
        return await self._count("msg:addr", address, self.limits.messages_per_address, "messages from your address")

    async def _count(self, kind: str, who: str, limit: int, what: str) -> Refusal | None:
        if limit <= 0:
            return None
        window = self.limits.window_s
        now = time.time()
        slot = int(now // window)
        key = f"{self.namespace}:webchat:rate:{kind}:{who}:{slot}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window + 1)
            count, _ = await pipe.execute()
        if int(count) <= limit:
            return None
        retry_after = max(1, math.ceil((slot + 1) * window - now))
        reason = f"too many {what}: at most {limit} in {window} s; try again in {retry_after} s"
        return Refusal("rate", reason, retry_after)
