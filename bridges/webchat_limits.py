"""Limits of the public web chat socket: how many may be open at once, and the rate of connection attempts
and messages, per visitor and per address.

Open sockets are counted on each node, in memory (`OpenSockets`): per client address (an IPv6 address by
its /64, what one subscriber gets), per visitor, and in all. A socket costs the node a file descriptor and
a queue (the replies come through one Redis subscription per node, bridges/webchat.py); over a cap the
connection is refused like an over-rate one (an error frame naming the limit, then close code 4429).

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
from collections import Counter
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web

from hilo.settings import Settings
from hilo.web.forwarded import Network as Network  # the type of HILO_TRUSTED_PROXIES entries
from hilo.web.forwarded import Proxies, address_bucket


@dataclass(frozen=True)
class ChatLimits:
    """HILO_WEBCHAT_* settings; 0 turns that limit off."""

    window_s: int = 60
    connects_per_address: int = 60
    connects_per_visitor: int = 20
    messages_per_address: int = 120
    messages_per_visitor: int = 30
    sockets_per_address: int = 20  # open at once, on one node
    sockets_per_visitor: int = 5
    sockets_total: int = 5000


def webchat_limits(settings: Settings) -> ChatLimits:
    return ChatLimits(
        window_s=settings.webchat_rate_window_s,
        connects_per_address=settings.webchat_connects_per_address,
        connects_per_visitor=settings.webchat_connects_per_visitor,
        messages_per_address=settings.webchat_messages_per_address,
        messages_per_visitor=settings.webchat_messages_per_visitor,
        sockets_per_address=settings.webchat_sockets_per_address,
        sockets_per_visitor=settings.webchat_sockets_per_visitor,
        sockets_total=settings.webchat_sockets_total,
    )


@dataclass(frozen=True)
class Refusal:
    field: str  # "rate" (too many in a window) or "sockets" (too many open at once)
    reason: str
    retry_after: int  # seconds until the window that counted it ends


def client_address(request: web.Request, trusted_proxies: list[Network]) -> str:
    """The visitor's address: the peer, unless the peer is a trusted proxy; then the last address the proxies
    added to X-Forwarded-For that is not itself a trusted proxy (earlier entries are the client's own word)."""
    return Proxies(tuple(trusted_proxies)).client_address(request)



SOCKETS_RETRY_S = 30  # a refused socket is told to try again this much later


class OpenSockets:
    """The web chat sockets open on this node: `admit` one (per address and in all), then `join` it to its
    visitor once the hello says who it is; `release` when it closes. No await between a check and its count,
    so concurrent connections cannot all pass the same check."""

    def __init__(self, limits: ChatLimits) -> None:
        self.limits = limits
        self.total = 0
        self.by_address: Counter[str] = Counter()
        self.by_visitor: Counter[str] = Counter()

    def admit(self, address: str) -> SocketSlot | Refusal:
        key = address_bucket(address)
        if 0 < self.limits.sockets_total <= self.total:
            return self._refusal("open chats on this server", self.limits.sockets_total)
        if 0 < self.limits.sockets_per_address <= self.by_address[key]:
            return self._refusal("open chats from your address", self.limits.sockets_per_address)
        self.total += 1
        self.by_address[key] += 1
        return SocketSlot(self, key)

    def _refusal(self, what: str, limit: int) -> Refusal:
        reason = f"too many {what}: at most {limit} at once; try again in {SOCKETS_RETRY_S} s"
        return Refusal("sockets", reason, SOCKETS_RETRY_S)


class SocketSlot:
    """One admitted socket's place in the counts."""

    def __init__(self, owner: OpenSockets, address: str) -> None:
        self.owner = owner
        self.address = address
        self.visitor: str | None = None
        self.released = False

    def join(self, visitor: str) -> Refusal | None:
        owner = self.owner
        if 0 < owner.limits.sockets_per_visitor <= owner.by_visitor[visitor]:
            return owner._refusal("open windows of this chat", owner.limits.sockets_per_visitor)
        owner.by_visitor[visitor] += 1
        self.visitor = visitor
        return None

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        owner = self.owner
        owner.total -= 1
        _decrement(owner.by_address, self.address)
        if self.visitor is not None:
            _decrement(owner.by_visitor, self.visitor)


def _decrement(counts: Counter[str], key: str) -> None:
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]  # the counters hold only who has a socket open now



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
