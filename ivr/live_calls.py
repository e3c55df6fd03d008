"""Calls bridged to an agent on this node right now, and what the agent may do to one while it lasts: put the
caller on hold and take them back.

Hold takes the caller out of the call's bridge and plays them music on hold; the agent stays in the bridge
(and its recording) hearing nothing. Each change is recorded on the timeline (`call.held`, `call.unheld`),
which is what the KPIs' hold time reads. A call that ends on hold simply ends: the hold lasts until the
agent's end, as the KPIs count it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from asterisk.ari import AriClient, AriError
from asterisk.stasis import ChannelState
from crm_bridge.timeline import Interaction, Timeline

log = logging.getLogger(__name__)


class NotLive(LookupError):
    """No call of that interaction is bridged to an agent on this node."""


@dataclass
class LiveCall:
    interaction: Interaction
    agent_id: str
    caller: ChannelState
    agent: ChannelState
    bridge_id: str
    held: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one change at a time per call

    @property
    def gone(self) -> bool:
        return self.caller.gone.is_set() or self.agent.gone.is_set()


class LiveCalls:
    def __init__(self, ari: AriClient, timeline: Timeline) -> None:
        self.ari = ari
        self.timeline = timeline
        self.calls: dict[str, LiveCall] = {}  # interaction id -> the call

    def add(self, call: LiveCall) -> None:
        self.calls[str(call.interaction.id)] = call

    def get(self, interaction_id: str) -> LiveCall:
        call = self.calls.get(interaction_id)
        if call is None or call.gone:
            raise NotLive(f"interaction {interaction_id} has no call with an agent on this server now")
        return call

    async def hold(self, interaction_id: str, by: str) -> bool:
        """Put the caller on hold; False if they already are. `by`: who, an actor (hilo/audit.py)."""
        call = self.get(interaction_id)
        async with call.lock:
            if call.held:
                return False
            await self.ari.remove_from_bridge(call.bridge_id, [call.caller.id])
            await self.ari.start_moh(call.caller.id)
            call.held = True
            await self.timeline.record(call.interaction, "call.held", {"agent": call.agent_id, "by": by})
        return True

    async def unhold(self, interaction_id: str, by: str) -> bool:
        """Take the caller back into the conversation; False if they were not on hold."""
        call = self.get(interaction_id)
        async with call.lock:
            if not call.held:
                return False
            await self.ari.stop_moh(call.caller.id)
            await self.ari.add_to_bridge(call.bridge_id, [call.caller.id])
            call.held = False
            await self.timeline.record(call.interaction, "call.unheld", {"agent": call.agent_id, "by": by})
        return True

    async def ended(self, interaction_id: str) -> None:
        """The agent's part is over: forget the call; a caller still on hold stops hearing music (a survey
        may follow)."""
        call = self.calls.pop(interaction_id, None)
        if call is None:
            return
        async with call.lock:
            if call.held and not call.caller.gone.is_set():
                with contextlib.suppress(AriError):
                    await self.ari.stop_moh(call.caller.id)
