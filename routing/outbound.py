"""Where Hilo may dial out on its own: the outbound policy of routing.yaml (`outbound:`, dialplans/models.py).

A booked callback dials the number the caller called from, and caller ids are easy to fake: without a policy,
someone calling repeatedly "from" premium-rate or far-away numbers has the centre pay for the calls (and tie up
its agents: the agent is rung first). A flow's transfer to a number is written by an admin, but the admin API
applies flows too. So both go through `OutboundPolicy.refusal`:

- the number must be valid (phonenumbers) and of an allowed region (`countries`, default: the server's own);
- of an allowed line type (`number_types`, default fixed and mobile lines): premium-rate, shared-cost,
  personal, pager, voicemail and unknown numbers never are;
- outside the premium and shared-cost ranges refused whatever phonenumbers says (`PREMIUM_PREFIXES`) and
  outside the configured `block` prefixes; and, when `allow` prefixes are given, inside one of them.

Callbacks are also counted in Redis (`OutboundGuard`): at most `per_number.max` bookings per number within
`per_number.within_s`, and `per_hour` bookings in all per clock hour. Counters expire on their own."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers
import redis.asyncio as aioredis
from phonenumbers import PhoneNumberType

from dialplans.models import Outbound

# Ranges refused whatever the configuration and phonenumbers' metadata say (defence in depth: the metadata
# lags behind new ranges). ES: 80x and 90x (premium 803/806/807/905/907, shared cost 901/902, freephone
# 800/900); GB: 09 (premium), 087 and 084 (revenue-sharing service numbers), 070 (personal numbers, a classic
# of fraud); NANP: 900 (premium).
PREMIUM_PREFIXES = ("+3480", "+3490", "+449", "+4487", "+4484", "+4470", "+1900")
TYPE_NAMES = {
    "fixed_line": PhoneNumberType.FIXED_LINE,
    "mobile": PhoneNumberType.MOBILE,
    "fixed_line_or_mobile": PhoneNumberType.FIXED_LINE_OR_MOBILE,
    "toll_free": PhoneNumberType.TOLL_FREE,
    "voip": PhoneNumberType.VOIP,
    "uan": PhoneNumberType.UAN,
}
_NAMES = {v: k for k, v in vars(PhoneNumberType).items() if isinstance(v, int) and not k.startswith("_")}


def _prefix(text: str) -> str:
    return text.replace(" ", "")


@dataclass(frozen=True)
class OutboundPolicy:
    config: Outbound
    default_region: str  # HILO_DEFAULT_REGION: national numbers, and the allowed country when none is named

    @property
    def countries(self) -> frozenset[str]:
        return frozenset(self.config.countries or [self.default_region])

    def e164(self, number: str) -> str | None:
        try:
            parsed = phonenumbers.parse(number, self.default_region)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_valid_number(parsed):
            return None
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)

    def refusal(self, number: str) -> str | None:
        """Why Hilo may not dial `number` (E.164, or national in the default region); None if it may."""
        try:
            parsed = phonenumbers.parse(number, self.default_region)
        except phonenumbers.NumberParseException:
            return "not a phone number"
        e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        for prefix in (*PREMIUM_PREFIXES, *(_prefix(p) for p in self.config.block)):
            if e164.startswith(prefix):
                return f"blocked range {prefix}"
        if not phonenumbers.is_valid_number(parsed):
            return "not a valid number"
        region = phonenumbers.region_code_for_number(parsed) or "none"
        if region not in self.countries:
            return f"country {region} is not allowed (allowed: {', '.join(sorted(self.countries))})"
        kind = phonenumbers.number_type(parsed)
        if kind not in {TYPE_NAMES[name] for name in self.config.number_types}:
            return f"number type {_NAMES.get(kind, str(kind)).lower()} is not allowed"
        if self.config.allow and not any(e164.startswith(_prefix(p)) for p in self.config.allow):
            return "not in the allowed ranges"
        return None


class OutboundGuard:
    """The policy, plus the callback limits counted in Redis (shared by every node of the namespace)."""

    def __init__(
        self,
        policy: OutboundPolicy,
        redis: aioredis.Redis,
        namespace: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.redis = redis
        self.prefix = f"{namespace}:outbound"
        self.clock = clock

    def refusal(self, number: str) -> str | None:
        return self.policy.refusal(number)

    async def callback_refusal(self, number: str) -> str | None:
        """Why a callback to `number` may not be booked now; None if it may (and it is counted)."""
        reason = self.policy.refusal(number)
        if reason is not None:
            return reason
        limits = self.policy.config
        e164 = self.policy.e164(number) or number
        # The number itself stays out of Redis's key names.
        digest = hashlib.sha256(e164.encode()).hexdigest()[:24]
        if await self._count(f"{self.prefix}:number:{digest}", limits.per_number.within_s) > limits.per_number.max:
            return f"more than {limits.per_number.max} callbacks to this number within {limits.per_number.within_s}s"
        hour = int(self.clock() // 3600)
        if await self._count(f"{self.prefix}:hour:{hour}", 7200) > limits.per_hour:
            return f"more than {limits.per_hour} callbacks booked this hour"
        return None

    async def _count(self, key: str, ttl_s: int) -> int:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=ttl_s, nx=True)
            pipe.incr(key)
            _, count = await pipe.execute()
        return int(count)
