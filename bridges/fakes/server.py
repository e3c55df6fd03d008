"""What both provider fakes share: an aiohttp server on loopback, and failures queued by the test."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Failure:
    """What the next request gets instead of success: an HTTP status with the provider's error `code`
    (and Retry-After seconds), or no answer at all (`hang`: the client times out)."""

    status: int = 500
    code: int | None = None
    message: str = "Internal error"
    retry_after: float | None = None
    hang: bool = False


class FakeServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.app = web.Application()
        self.received: list[dict[str, Any]] = []  # every accepted or refused request, in order
        self.failures: list[Failure] = []
        self._runner: web.AppRunner | None = None
        self._released = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self.base_url = ""
        # Statuses reported back to Hilo after each accepted message, like the provider's callbacks
        # (the demo sets ["sent", "delivered"]; the tests send theirs when and in the order they want).
        self.auto_statuses: list[str] = []

    def fail_next(self, failure: Failure, count: int = 1) -> None:
        self.failures.extend([failure] * count)

    def later(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run `coroutine` after the current answer is sent (a provider's callbacks come afterwards)."""
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def start(self, port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.base_url = f"http://{self.host}:{port}"
        return self.base_url

    async def close(self) -> None:
        self._released.set()  # hanging requests end now
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    async def next_failure(self) -> Failure | None:
        if not self.failures:
            return None
        failure = self.failures.pop(0)
        if failure.hang:
            await self._released.wait()
        return failure
