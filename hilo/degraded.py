"""Degraded moments: a call (or a write) went on without a dependency that did not answer in time.

A slow or missing store never costs a call: identification goes on without the customer store, timeline
writes go to the node's spool, routing is retried while the caller hears the queue's music. Each such
moment is counted here (`hilo_degraded_total{part, what}` on /metrics) and logged, and the call's timeline
gets a `call.degraded` event from whoever noticed (the caller hears nothing of it)."""

from __future__ import annotations

import logging

import asyncpg
import redis.exceptions
from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger(__name__)

# What a PostgreSQL that is slow, restarting or unreachable raises (a bound passed: TimeoutError on the client,
# on the server QueryCanceledError (an OperatorInterventionError), LockNotAvailableError, a session ended for
# idling in its transaction; a server going down: OperatorInterventionError; no connection: OSError,
# PostgresConnectionError, InterfaceError; too many clients: InsufficientResourcesError). Anything else (a
# constraint, bad data) is a real error.
STORE_DOWN: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
)
# What a Redis that is slow, restarting or unreachable raises (BusyLoadingError is a ConnectionError).
REDIS_DOWN: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    TimeoutError,
    OSError,
)

DOWN = STORE_DOWN + REDIS_DOWN  # routing: Redis, and its record in PostgreSQL

PARTS = ("store", "redis", "spool")


def part_of(exc: BaseException) -> str:
    """Which dependency an error of DOWN came from."""
    return "redis" if isinstance(exc, redis.exceptions.RedisError) else "store"


class Degradations:
    """The counter of degraded moments, by part (store, redis, spool) and what was done without it."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.total = Counter(
            "hilo_degraded",
            "Moments a call or a write went on without a dependency that did not answer in time",
            ["part", "what"],
            registry=registry,
        )

    def note(self, part: str, what: str, detail: str = "") -> None:
        assert part in PARTS, part
        self.total.labels(part=part, what=what).inc()
        log.warning("degraded: %s %s%s", part, what, f" ({detail})" if detail else "")
