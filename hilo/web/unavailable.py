"""A request whose handler found PostgreSQL restarting or away is answered 503 with Retry-After and a clear
reason, not 500 with a stack trace in the log: the console's pages and API clients try again, and the log
says what was missing in one line. Errors that are not a dependency being away pass through untouched."""

from __future__ import annotations

import logging

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
# PostgreSQL restarting or unreachable (the server going down or not accepting yet: OperatorInterventionError;
# a connection lost or refused: PostgresConnectionError, InterfaceError, ConnectionError; too many clients).
# Not TimeoutError nor OSError at large: a slow query or a file error is the handler's own to answer.
AWAY: tuple[type[BaseException], ...] = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


@web.middleware
async def unavailable(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AWAY as exc:
        log.warning(
            "%s %s: a dependency does not answer (%s); answered 503", request.method, request.path, type(exc).__name__
        )
        return web.json_response(
            {"error": "unavailable", "reason": "a store Hilo depends on does not answer; try again later"},
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
