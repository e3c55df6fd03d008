"""An agent transfers the call they are on (console: POST /api/calls/{id}/transfer).

- **Blind** to a queue or to another agent: the caller leaves the agent's bridge for music on hold, the
  agent's leg is hung up (their wrap-up starts), and routing takes the interaction back (routing/engine.py
  `transfer`): waiting from now in the target queue, or offered at once to the target agent (when they can
  take it now; otherwise the request is refused and nothing changes). The call's task (ivr/inbound.py)
  then rings whoever routing offers it to, as for any queued call: an agent who does not answer is set
  away and the caller waits in the queue — never dropped.
- **Attended** to an agent: the caller is put on hold (ivr/live_calls.py), the target agent is reserved
  (away, reason `consulting`, so routing offers them nothing else), their phone rings (screen-pop first)
  and, once answered, they join the transferring agent in the call's bridge to consult.
  `complete` hands the caller to the target (routing assigns the interaction to them, the transferring
  agent leaves for wrap-up); `cancel` ends the consultation and takes the caller back. The target not
  answering, or hanging up while consulting, brings the caller back to the transferring agent; the
  transferring agent hanging up while consulting completes the transfer.

Every transfer records `routing.transferred` {kind: blind|attended, from_agent, to_agent|to_queue, by} on the
timeline: `from_agent` is the agent whose call it was, `by` who handed it on (an actor of hilo/audit.py: the
agent themselves, or a supervisor or admin acting on their call; `routing.consulting` and a cancelled
transfer's `routing.transfer_failed` say `by` too); the collected context (context.ivr, verification, the
agent's note in context.transfers) stays with the interaction, so the receiving agent's screen-pop shows it.
Transfers act on calls bridged on this node (like hold); a request reaching another node is refused (409)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from asterisk.ari import AriClient, AriError
from asterisk.stasis import ChannelState, StasisRouter
from crm_bridge.timeline import Interaction, Timeline
from ivr.agent_leg import ring_agent
from ivr.live_calls import LiveCall, LiveCalls
from routing.engine import AgentBusy, RoutingEngine
from routing.model import Assignment, RoutingError

log = logging.getLogger(__name__)

OFFER_HOOK_DEADLINE_S = 0.5
CONSULTING = "consulting"  # the away reason of an agent being consulted (reserved for the transfer)
OfferHook = Callable[[Interaction, str], Awaitable[None]]


class TransferError(Exception):
    """The transfer cannot be done (said plainly, with the request field at fault); nothing changed."""

    def __init__(self, message: str, field: str, status: int = 409) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


@dataclass
class Moved:
    """What the call's task does next after its agent's part ended in a transfer."""

    queue: str
    offer: Assignment | None  # blind: routing's offer, if made at once
    agent_id: str | None = None  # attended: the agent who took the caller ...
    leg: ChannelState | None = None  # ... already on the line
    on_hold: bool = False  # the caller hears music now


@dataclass
class Consult:
    call: LiveCall
    to_agent: str
    leg: ChannelState
    note: str | None
    watcher: asyncio.Task[None] | None = None
    by: str | None = None  # who started it (an actor); completing it on its own (the agent hung up) is theirs


class Transfers:
    def __init__(
        self,
        *,
        ari: AriClient,
        stasis: StasisRouter,
        engine: RoutingEngine,
        timeline: Timeline,
        live: LiveCalls,
        on_offer: OfferHook,
        ring_timeout_s: int,
        wrapup_s: float,
    ) -> None:
        self.ari = ari
        self.stasis = stasis
        self.engine = engine
        self.timeline = timeline
        self.live = live
        self.on_offer = on_offer
        self.ring_timeout_s = ring_timeout_s
        self.wrapup_s = wrapup_s
        self.moved: dict[str, Moved] = {}  # interaction id -> where the caller goes, read by the call's task
        self.consults: dict[str, Consult] = {}

    # Blind ----------------------------------------------------------------------------------------

    async def blind(
        self,
        interaction_id: str,
        by_agent: str | None,
        *,
        to_queue: str | None,
        to_agent: str | None,
        note: str | None,
        by: str | None = None,
    ) -> Moved:
        """`by_agent`: the agent asking, limited to their own call (None: a supervisor or admin); `by`: who,
        an actor (hilo/audit.py), for the timeline."""
        call = self._call(interaction_id, by_agent)
        if interaction_id in self.consults:
            raise TransferError("a consultation is in progress: complete or cancel it first", "kind")
        async with call.lock:
            try:
                offer = await self.engine.transfer(
                    interaction_id, call.agent_id, to_queue=to_queue, to_agent=to_agent, wrapup_s=self.wrapup_s
                )
            except AgentBusy as exc:
                raise TransferError(str(exc), "to_agent") from exc
            except RoutingError as exc:
                raise TransferError(str(exc), "to_queue" if to_queue else "to_agent") from exc
            queue = to_queue or str(call.interaction.context.get("queue") or "")
            await self._note(call, "blind", to_queue=to_queue, to_agent=to_agent, note=note, by=by)
            moved = self.moved[interaction_id] = Moved(queue, offer, on_hold=True)
            # The caller to music, the agent off the call: the call's task picks it up from there.
            with contextlib.suppress(AriError):
                if not call.held:
                    await self.ari.remove_from_bridge(call.bridge_id, [call.caller.id])
                    await self.ari.start_moh(call.caller.id)
                call.held = False  # the music is the queue's now, not a hold to end with the agent's part
                await self.ari.hangup(call.agent.id)
        return moved

    # Attended -------------------------------------------------------------------------------------

    async def consult(
        self, interaction_id: str, by_agent: str | None, to_agent: str, note: str | None, by: str | None = None
    ) -> Consult:
        """Hold the caller and ring `to_agent`; returns once they answered (then they talk with the
        transferring agent). TransferError when they cannot be rung or do not answer: the caller is back."""
        call = self._call(interaction_id, by_agent)
        if interaction_id in self.consults:
            raise TransferError("a consultation is in progress already", "kind")
        target = await self.engine.agent(to_agent)
        if not target:
            raise TransferError(f"unknown agent {to_agent!r}", "to_agent", 400)
        if to_agent == call.agent_id or target.get("state") != "available":
            raise TransferError(f"agent {to_agent} cannot take it now ({target.get('state')})", "to_agent")
        # Reserved while rung and consulting: routing offers the target nothing else meanwhile.
        await self.engine.set_state(to_agent, "away", CONSULTING)
        await self.live.hold(interaction_id, by or by_agent or call.agent_id)
        try:
            await asyncio.wait_for(self.on_offer(call.interaction, to_agent), OFFER_HOOK_DEADLINE_S)
        except Exception:  # the pop failing must never cost the transfer
            log.exception("offer hook failed for the transfer of %s", interaction_id)
        consulting = {"from_agent": call.agent_id, "to_agent": to_agent, **({"by": by} if by else {})}
        await self.timeline.record(call.interaction, "routing.consulting", consulting)
        answered = await ring_agent(
            self.ari,
            self.stasis,
            call.caller,
            agent_id=to_agent,
            endpoint=target.get("endpoint", ""),
            interaction_id=interaction_id,
            caller_id=str(call.interaction.context.get("caller_number") or "anonymous"),
            ring_timeout_s=self.ring_timeout_s,
        )
        if answered is None or call.gone:
            # As when routing rings them: an agent who does not answer rests (away) until they say otherwise.
            await self.engine.set_state(to_agent, "away", "no-answer")
            await self._back_to_agent(call, to_agent, "no-answer")
            raise TransferError(f"agent {to_agent} did not answer; the caller is back with you", "to_agent", 502)
        await self.ari.add_to_bridge(call.bridge_id, [answered.channel.id])
        consult = self.consults[interaction_id] = Consult(call, to_agent, answered.channel, note, by=by)
        consult.watcher = asyncio.create_task(self._watch(interaction_id, consult), name=f"consult-{interaction_id}")
        return consult

    async def complete(self, interaction_id: str, by_agent: str | None, by: str | None = None) -> None:
        consult = self._consult(interaction_id, by_agent)
        await self._complete(consult, by)
        # The transferring agent leaves: the call's task hands the caller to the target (ivr/inbound.py).
        with contextlib.suppress(AriError):
            await self.ari.hangup(consult.call.agent.id)

    async def cancel(self, interaction_id: str, by_agent: str | None, by: str | None = None) -> None:
        consult = self._consult(interaction_id, by_agent)
        await self._end_consult(consult, "cancelled", by)

    # For the call's task --------------------------------------------------------------------------

    async def handoff(self, interaction_id: str) -> Moved | None:
        """Called when the agent's part of a call ended: where the caller goes next, if transferred. An agent
        hanging up while consulting completes that transfer."""
        consult = self.consults.get(interaction_id)
        if consult is not None and interaction_id not in self.moved:
            if consult.leg.gone.is_set() or consult.call.caller.gone.is_set():
                await self._end_consult(consult, "ended")
            else:
                await self._complete(consult)
        return self.moved.pop(interaction_id, None)

    # Inside ---------------------------------------------------------------------------------------

    def _call(self, interaction_id: str, by_agent: str | None) -> LiveCall:
        call = self.live.get(interaction_id)  # NotLive: not bridged to an agent on this node
        if by_agent is not None and call.agent_id != by_agent:
            raise TransferError("an agent transfers only their own calls", "interaction_id", 403)
        return call

    def _consult(self, interaction_id: str, by_agent: str | None) -> Consult:
        consult = self.consults.get(interaction_id)
        if consult is None:
            raise TransferError("no consultation in progress for this call", "interaction_id")
        if by_agent is not None and consult.call.agent_id != by_agent:
            raise TransferError("an agent transfers only their own calls", "interaction_id", 403)
        return consult

    async def _complete(self, consult: Consult, by: str | None = None) -> None:
        call, iid = consult.call, str(consult.call.interaction.id)
        if self.consults.pop(iid, None) is None:
            return
        if consult.watcher is not None and consult.watcher is not asyncio.current_task():
            consult.watcher.cancel()
        # Under the call's lock: the call's task, if the caller hangs up meanwhile, waits for the hand-over to
        # be whole (LiveCalls.ended) and then finds it, so it frees the new agent and hangs up their leg.
        async with call.lock:
            try:
                try:
                    await self.engine.set_state(consult.to_agent, "available")  # the reservation ends with the offer
                    await self.engine.transfer(iid, call.agent_id, to_agent=consult.to_agent, wrapup_s=self.wrapup_s)
                    await self.engine.answered(iid, consult.to_agent)
                except RoutingError as exc:  # e.g. routing gave the target other work meanwhile: they talk anyway
                    log.warning("transfer of %s to %s: routing could not follow (%s)", iid, consult.to_agent, exc)
                await self._note(
                    call, "attended", to_queue=None, to_agent=consult.to_agent, note=consult.note, by=by or consult.by
                )
            finally:  # whatever failed, the call's task takes it from here (the new agent is on the line)
                self.moved[iid] = Moved(
                    str(call.interaction.context.get("queue") or ""), None, agent_id=consult.to_agent, leg=consult.leg
                )

    async def _end_consult(self, consult: Consult, why: str, by: str | None = None) -> None:
        """`by`: who ended it, when a person did (a cancel)."""
        iid = str(consult.call.interaction.id)
        if self.consults.pop(iid, None) is None:
            return
        if consult.watcher is not None and consult.watcher is not asyncio.current_task():
            consult.watcher.cancel()
        with contextlib.suppress(AriError):
            await self.ari.hangup(consult.leg.id)
        self.stasis.forget(consult.leg.id)
        await self.engine.set_state(consult.to_agent, "available")  # reserved no longer
        await self._back_to_agent(consult.call, consult.to_agent, why, by)

    async def _back_to_agent(self, call: LiveCall, to_agent: str, why: str, by: str | None = None) -> None:
        """The transfer did not happen: the caller back with the transferring agent."""
        iid = str(call.interaction.id)
        failed = {"kind": "attended", "from_agent": call.agent_id, "to_agent": to_agent, "reason": why}
        await self.timeline.record(
            call.interaction, "routing.transfer_failed", {**failed, **({"by": by} if by else {})}
        )
        if not call.gone:
            with contextlib.suppress(AriError):
                await self.live.unhold(iid, by or call.agent_id)

    async def _watch(self, interaction_id: str, consult: Consult) -> None:
        """The target hanging up while consulting cancels the transfer."""
        await consult.leg.gone.wait()
        if self.consults.get(interaction_id) is consult:
            await self._end_consult(consult, "target-hung-up")

    async def _note(
        self,
        call: LiveCall,
        kind: Literal["blind", "attended"],
        *,
        to_queue: str | None,
        to_agent: str | None,
        note: str | None,
        by: str | None,
    ) -> None:
        data: dict[str, Any] = {"kind": kind, "from_agent": call.agent_id}
        data.update({"to_queue": to_queue} if to_queue else {"to_agent": to_agent})
        transfers = list(call.interaction.context.get("transfers") or [])
        transfers.append({**data, "note": note})
        call.interaction.context["transfers"] = transfers
        await self.timeline.update(call.interaction)  # the context (and the note) for the next agent's pop
        await self.timeline.record(call.interaction, "routing.transferred", {**data, **({"by": by} if by else {})})
