"""Console sign-in sessions in Redis (the limits on signing in are in hilo/web/signin.py).

A session token is 32 random bytes given to the browser once (cookie, and in the sign-in answer for tools).
Redis keeps only its SHA-256, so a copy of Redis does not hold usable tokens; the key expires on its own
after the session's lifetime. Keys (prefix = namespace):
  <ns>:console:session:<sha256>         hash: username, role, agent_id   (TTL = session lifetime)
  <ns>:console:user-sessions:<username> set of that user's session hashes (to end them all at once)"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from aiohttp import web

from hilo.audit import Door

COOKIE = "hilo_session"
SESSION_TTL_S = 12 * 3600  # one long shift; then the agent signs in again


@dataclass(frozen=True)
class Principal:
    """Who is making a request: from an API token (username None) or a console session; and the door it
    came through (hilo/audit.py): `console` for the session cookie, `api` for a bearer token."""

    role: str
    agent_id: str | None = None
    username: str | None = None
    session: str | None = None  # the session's hash (never the token itself)
    door: Door = "api"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SessionStore:
    def __init__(self, redis: aioredis.Redis, namespace: str, ttl_s: int = SESSION_TTL_S) -> None:
        self.redis = redis
        self.prefix = f"{namespace}:console"
        self.ttl_s = ttl_s

    def _key(self, digest: str) -> str:
        return f"{self.prefix}:session:{digest}"

    def _user_key(self, username: str) -> str:
        return f"{self.prefix}:user-sessions:{username}"

    async def create(self, username: str, role: str, agent_id: str | None) -> tuple[str, Principal]:
        token = secrets.token_urlsafe(32)
        digest = token_hash(token)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(digest), mapping={"username": username, "role": role, "agent_id": agent_id or ""})
            pipe.expire(self._key(digest), self.ttl_s)
            pipe.sadd(self._user_key(username), digest)
            pipe.expire(self._user_key(username), self.ttl_s)
            await pipe.execute()
        return token, Principal(role, agent_id, username, digest)

    async def lookup(self, token: str) -> Principal | None:
        if not token or len(token) > 200:
            return None
        digest = token_hash(token)
        return await self.by_hash(digest)

    async def by_hash(self, digest: str) -> Principal | None:
        raw = cast(dict[Any, Any], await self.redis.hgetall(self._key(digest)))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        return Principal(fields["role"], fields.get("agent_id") or None, fields["username"], digest)

    async def end(self, principal: Principal) -> None:
        if principal.session is None or principal.username is None:
            return
        await self.redis.delete(self._key(principal.session))
        await self.redis.srem(self._user_key(principal.username), principal.session)

    async def end_all(self, username: str) -> int:
        """End every session of a user (password or role changed, user removed)."""
        digests = [_text(d) for d in await self.redis.smembers(self._user_key(username))]
        if digests:
            await self.redis.delete(*(self._key(d) for d in digests))
        await self.redis.delete(self._user_key(username))
        return len(digests)


SESSIONS = web.AppKey("sessions", SessionStore)
