"""AMI over panoramisk: login, the event stream and reconnection (panoramisk retries the connection and
queues actions while disconnected). Hilo uses AMI for what ARI does not carry: system events such as
FullyBooted, device/endpoint state and CDRs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from panoramisk import Manager

log = logging.getLogger(__name__)

AmiHandler = Callable[[dict[str, Any]], None]


class _Manager(Manager):  # type: ignore[misc]
    closing = False

    def connection_lost(self, exc: Exception | None) -> None:
        # panoramisk schedules a reconnect on every lost connection, even after close(): not on shutdown.
        if self.closing:
            return
        super().connection_lost(exc)


class AmiClient:
    def __init__(self, host: str, port: int, user: str, secret: str) -> None:
        self._manager = _Manager(
            host=host,
            port=port,
            username=user,
            secret=secret,
            ping_delay=5,
            ping_interval=5,
            reconnect_timeout=1,
            on_login=self._logged_in,
            on_disconnect=self._disconnected,
        )
        self.handlers: list[AmiHandler] = []
        self.logged_in = asyncio.Event()
        self.fully_booted = asyncio.Event()
        self._manager.register_event("*", self._on_event)

    async def start(self) -> None:
        self._manager.loop = asyncio.get_running_loop()
        self._manager.connect()

    async def close(self) -> None:
        self._manager.closing = True
        self._manager.close()

    async def ping(self, timeout: float = 2.0) -> bool:
        if not self.logged_in.is_set():
            return False
        reply = await asyncio.wait_for(self._manager.send_action({"Action": "Ping"}), timeout)
        return bool(reply.success)

    async def action(self, action: dict[str, Any], timeout: float = 5.0) -> Any:
        return await asyncio.wait_for(self._manager.send_action(action), timeout)

    def _logged_in(self, manager: Manager) -> None:
        log.info("AMI logged in")
        self.logged_in.set()

    def _disconnected(self, manager: Manager, exc: Exception | None) -> None:
        log.warning("AMI disconnected: %s", exc)
        self.logged_in.clear()
        self.fully_booted.clear()

    def _on_event(self, manager: Manager, message: Any) -> None:
        event = dict(message)
        if event.get("Event") == "FullyBooted":
            self.fully_booted.set()
        for handler in self.handlers:
            try:
                handler(event)
            except Exception:
                log.exception("AMI handler failed on %s", event.get("Event"))
