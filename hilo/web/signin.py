"""The limits on console sign-in, decided before any password is checked.

A password check costs a scrypt hash (hilo/passwords.py), so every limit is settled first, in one Redis
script, atomically for all Hilo nodes: an attempt *takes* its failure slot before it is judged, so a burst
of parallel guesses gets no more judged than a sequence would. For each attempt, in this order:

1. the client address (hilo/web/forwarded.py; an IPv6 address counts as its /64) spends one of its
   `attempts_per_address` per `window_s`, right password or wrong. Over it: 429 until the window ends.
   This is what bounds guessing and hashing per address, whatever user names it tries.
2. failed sign-ins of this user name from this address (MAX_FAILURES), and of this user name from every
   address (`failures_per_user`), in FAILURE_WINDOW_S from the first: at the limit, 429 until the window
   ends (the right password too). Below it, the attempt adds one to both counts, then is checked.
   Locking per address as well as per user name means one address cannot lock an agent out (it locks
   only itself out of that name); only failures from many addresses lock the name for everybody.
3. on this node at most `concurrent_checks` sign-ins are being checked at once; more are answered 429
   (Retry-After 1) at once, holding nothing.

A right password clears this address's failures for the name and gives its own slot of the name's back;
an attempt that was not judged (the node was busy) gives its slots back. Keys (prefix = namespace):
  <ns>:console:signin:addr:<address>           attempts from an address in its window
  <ns>:console:signin:fail:<user>:<address>    failed sign-ins of a user name from an address
  <ns>:console:signin:fail:<user>              failed sign-ins of a user name from everywhere"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from hilo.settings import Settings
from hilo.web.forwarded import address_bucket

MAX_FAILURES = 5  # failed sign-ins of a user name from one address ...
FAILURE_WINDOW_S = 15 * 60  # ... within this window, before that address is refused for that name


@dataclass(frozen=True)
class SignInLimits:
    """HILO_SIGNIN_* settings."""

    attempts_per_address: int = 20
    window_s: int = 60
    failures_per_user: int = 30
    concurrent_checks: int = 8


def signin_limits(settings: Settings) -> SignInLimits:
    return SignInLimits(
        attempts_per_address=settings.signin_attempts_per_address,
        window_s=settings.signin_rate_window_s,
        failures_per_user=settings.signin_failures_per_user,
        concurrent_checks=settings.signin_concurrent_checks,
    )


# KEYS: address attempts, failures of (user, address), failures of user.
# ARGV: attempts per address, its window, failures per (user, address), failures per user, their window.
# Returns {0, 0}: go ahead (a failure slot taken on both failure counts); {1, ttl}: the address is over its
# budget; {2, ttl}: the user name is locked, for this address or for all.
_BEGIN = """
local function wait_for(key)
  local ttl = redis.call('TTL', key)
  if ttl < 1 then return 1 end
  return ttl
end
local function count(key, window)
  local n = redis.call('INCR', key)
  if n == 1 or redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, window) end
  return n
end
if count(KEYS[1], ARGV[2]) > tonumber(ARGV[1]) then
  return {1, wait_for(KEYS[1])}
end
local wait = 0
for i, limit in ipairs({ARGV[3], ARGV[4]}) do
  local key = KEYS[i + 1]
  if tonumber(redis.call('GET', key) or '0') >= tonumber(limit) then
    wait = math.max(wait, wait_for(key))
  end
end
if wait > 0 then return {2, wait} end
count(KEYS[2], ARGV[5])
count(KEYS[3], ARGV[5])
return {0, 0}
"""

# KEYS: the counts to give one back to (never below 0).
_GIVE_BACK = """
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
end
return 0
"""



@dataclass(frozen=True)
class Attempt:
    username: str
    address: str  # its bucket
    retry_after: int = 0  # 0: may be checked; else refused for this many seconds
    reason: str = ""


class SignInLimiter:
    def __init__(self, redis: aioredis.Redis, namespace: str, limits: SignInLimits | None = None) -> None:
        self.redis = redis
        self.prefix = f"{namespace}:console:signin"
        self.limits = limits or SignInLimits()
        self.checking = 0  # sign-ins being checked on this node
        self._begin: Any = redis.register_script(_BEGIN)
        self._give_back: Any = redis.register_script(_GIVE_BACK)

    def _keys(self, attempt: Attempt) -> tuple[str, str, str]:
        return (
            f"{self.prefix}:addr:{attempt.address}",
            f"{self.prefix}:fail:{attempt.username}:{attempt.address}",
            f"{self.prefix}:fail:{attempt.username}",
        )

    def reserve(self) -> bool:
        """A place among this node's sign-ins being checked, or False when all are taken (`release` after)."""
        if self.checking >= self.limits.concurrent_checks:
            return False
        self.checking += 1
        return True

    def release(self) -> None:
        self.checking -= 1

    async def begin(self, username: str, address: str) -> Attempt:
        """Count one attempt of `username` (normalized) from `address`; refused, or its failure slot taken."""
        attempt = Attempt(username, address_bucket(address))
        kind, wait = await self._begin(
            keys=self._keys(attempt),
            args=[
                self.limits.attempts_per_address,
                self.limits.window_s,
                MAX_FAILURES,
                self.limits.failures_per_user,
                FAILURE_WINDOW_S,
            ],
        )
        if int(kind) == 1:
            reason = f"too many sign-in attempts from your address: try again in {int(wait)} s"
            return Attempt(attempt.username, attempt.address, int(wait), reason)
        if int(kind) == 2:
            reason = f"too many failed sign-ins: try again in {int(wait)} s"
            return Attempt(attempt.username, attempt.address, int(wait), reason)
        return attempt

    async def succeeded(self, attempt: Attempt) -> None:
        """The right password: this address's failures for the name are forgotten, its slot given back."""
        _, pair, user = self._keys(attempt)
        await self.redis.delete(pair)
        await self._give_back(keys=[user])

    async def not_judged(self, attempt: Attempt) -> None:
        """The attempt was never checked: its failure slots are given back (its address attempt stays)."""
        _, pair, user = self._keys(attempt)
        await self._give_back(keys=[pair, user])


SIGNIN = web.AppKey("signin", SignInLimiter)
