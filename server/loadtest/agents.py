"""Simulated agents' talk time: `talk_s` after an agent answers one of the run's calls, the agent hangs up.

Whatever answers the agents' phones (the demo's SIPp phones, which stay on the line until the caller
leaves, or real phones) does the answering; this ends the agent's leg over ARI, as the agent putting the
phone down, so agents come free for the next caller at the pace asked. The leg is the channel Hilo
originated into its Stasis app with the arguments `agent,<interaction id>`. The agent then wraps up for
the server's own wrap-up time (HILO_WRAPUP_S), as after any call.

Hilo then ends the caller's call too: the caller hears a hang-up before its hold time is over, which for the
run is the call ending as it should, not the far end failing it. So before hanging up, the caller's SIP
Call-ID is read from their channel (CHANNEL(pjsip,call-id): the Call-ID SIPp logs) and kept in `call_ids`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from server.loadtest.hilo_events import HiloEvents
from server.loadtest.rest import Ari, RestError

log = logging.getLogger(__name__)


class AgentTalk:
    def __init__(self, ari: Ari, namespace: str, talk_s: float, events: HiloEvents, dialed: set[str]) -> None:
        self.ari = ari
        self.prefix = f"{namespace}-agent-"
        self.talk_s = talk_s
        self.events = events
        self.dialed = dialed
        self.ended = 0
        self.missed = 0
        self.call_ids: set[str] = set()  # SIP Call-IDs of the callers whose agent hung up
        self._tasks: set[asyncio.Task[None]] = set()
        events.listeners.append(self.on_event)

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") != "agent.answered":
            return
        iid = str(event.get("interaction_id") or "")
        item = self.events.interactions.get(iid)
        if item is None or item.dialed not in self.dialed:
            return
        task = asyncio.create_task(self._hang_up_later(iid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hang_up_later(self, interaction_id: str) -> None:
        await asyncio.sleep(self.talk_s)
        item = self.events.interactions.get(interaction_id)
        try:
            for channel in await self.ari.channels():
                app_data = str((channel.get("dialplan") or {}).get("app_data", ""))
                if channel["id"].startswith(self.prefix) and interaction_id in app_data:
                    if item is not None and item.channel_ref:
                        call_id = await self.ari.variable(item.channel_ref, "CHANNEL(pjsip,call-id)")
                        if call_id:
                            self.call_ids.add(call_id)
                    await self.ari.hangup(channel["id"])
                    self.ended += 1
                    return
        except RestError as exc:
            log.warning("could not end the agent leg of %s: %s", interaction_id, exc)
        self.missed += 1  # the call had already ended (the caller left first)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
