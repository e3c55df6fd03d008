"""A supervisor on a live call: listen, whisper (coach the agent) or barge in, from the supervisor's phone.

Hilo rings the supervisor's phone (a PJSIP endpoint, or a Local channel) and, once answered, connects it:

- listen:  a snoop on the caller's channel with spy=both (the supervisor hears the caller and what the caller
           hears, the agent) and whisper=none, bridged with the phone: the supervisor hears both, says nothing;
- whisper: the same snoop with whisper=in: what the supervisor says is mixed into the audio coming *from* the
           caller's channel, so it reaches the agent through the call's bridge and never the caller (audio
           sent to the caller is not touched). Whispering into the agent's channel ("out") would do the same
           for the agent's ear but leave nothing a spy could check: Asterisk hands frames to spies before it
           mixes whispers in (main/audiohook.c), so the whisper into the caller's side is the one the
           tests can measure on both legs;
- barge:   the phone joins the call's bridge: all three hear each other (and the call's recording has it).

The mode can change while connected (the phone stays up). The supervision ends when the supervisor hangs up,
asks to stop, or the call ends (either side). It lives on the node handling the call (`LiveCalls`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Literal

from asterisk.ari import AriClient, AriError
from asterisk.stasis import ChannelState, StasisRouter
from hilo import audit
from ivr.live_calls import LiveCall, LiveCalls

log = logging.getLogger(__name__)

Mode = Literal["listen", "whisper", "barge"]
MODES: tuple[Mode, ...] = ("listen", "whisper", "barge")
# PJSIP/<endpoint>, or a simulated phone of the dialplan's hilo-phone-sim context (tests, demos). Nothing else:
# a supervisor must not make Asterisk dial anywhere else (a Local channel into hilo-transfer is a trunk call).
PHONE = re.compile(r"^(PJSIP/[A-Za-z0-9_.-]{1,64}|Local/[A-Za-z0-9_-]{1,64}@hilo-phone-sim)$")
# Stasis arguments of the channels a supervision makes (the phone, the snoop): never taken for a new call.
SUPERVISOR_LEG_ARGS = ("supervisor", "supervision")
SNOOP_START_S = 5.0  # for Asterisk to start a snoop channel in the app
_WHISPER = {"listen": "none", "whisper": "in"}


class SupervisionError(Exception):
    """The supervision could not be set up (phone not answered, call gone, Asterisk refused)."""


@dataclass
class Supervision:
    id: str
    interaction_id: str
    supervisor: str  # who, as an actor (hilo/audit.py)
    phone: str
    mode: Mode
    phone_leg: ChannelState
    bridge_id: str  # the supervisor's own bridge: phone + snoop
    snoop: ChannelState | None = None
    barged: bool = False  # the phone is in the call's bridge
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def as_dict(self) -> dict[str, str | bool]:
        return {
            "id": self.id,
            "interaction_id": self.interaction_id,
            "supervisor": self.supervisor,
            "phone": self.phone,
            "mode": self.mode,
            "active": not self.ended.is_set(),
        }


def _caller_number(supervisor: str) -> str:
    """What the supervisor's phone shows: their name from the actor (hilo/audit.py), never ':' or '@'."""
    try:
        name = audit.parse(supervisor).name
    except ValueError:
        name = supervisor
    return "".join(c for c in name if c.isalnum() or c in "._-")[:40] or "supervisor"


class Supervisions:
    def __init__(self, ari: AriClient, stasis: StasisRouter, live: LiveCalls, *, ring_timeout_s: int) -> None:
        self.ari = ari
        self.stasis = stasis
        self.live = live
        self.ring_timeout_s = ring_timeout_s
        self.active: dict[str, Supervision] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, supervision_id: str) -> Supervision:
        found = self.active.get(supervision_id)
        if found is None or found.ended.is_set():
            raise LookupError(f"no supervision {supervision_id} in progress on this server")
        return found

    async def start(self, interaction_id: str, mode: Mode, phone: str, supervisor: str) -> Supervision:
        """Ring the supervisor's phone and, once answered, connect it to the call in `mode`. NotLive if the
        call is not with an agent on this node; SupervisionError if the phone is not answered."""
        call = self.live.get(interaction_id)
        sid = str(uuid.uuid4())
        leg_id = f"{self.ari.app}-supervisor-{sid}"
        leg = self.stasis.watch(leg_id)
        try:
            await self.ari.originate(
                phone,
                app=self.ari.app,
                app_args=f"supervisor,{interaction_id}",
                caller_id=f'"Supervising" <{_caller_number(supervisor)}>',
                timeout_s=self.ring_timeout_s,
                channel_id=leg_id,
            )
        except AriError as exc:
            self.stasis.forget(leg_id)
            raise SupervisionError(f"cannot ring {phone}: {exc}") from exc
        ends = (leg.in_stasis, leg.gone, call.caller.gone, call.agent.gone)
        waiters = [asyncio.ensure_future(e.wait()) for e in ends]
        try:
            await asyncio.wait(waiters, timeout=self.ring_timeout_s + 5, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if not leg.in_stasis.is_set() or leg.gone.is_set() or call.gone:
            with contextlib.suppress(AriError):
                await self.ari.hangup(leg_id)
            self.stasis.forget(leg_id)
            raise SupervisionError(f"{phone} did not answer" if not call.gone else "the call ended meanwhile")
        sup = Supervision(sid, interaction_id, supervisor, phone, mode, leg, f"{self.ari.app}-supervision-{sid}")
        self.active[sid] = sup
        try:
            await self.ari.create_bridge(sup.bridge_id)
            await self.ari.add_to_bridge(sup.bridge_id, [leg_id])
            await self._connect(sup, call, mode)
        except (AriError, SupervisionError) as exc:
            await self._teardown(sup, call)
            raise SupervisionError(f"cannot connect the supervisor: {exc}") from exc
        task = asyncio.create_task(self._watch(sup, call), name=f"supervision-{sid}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return sup

    async def change(self, supervision_id: str, mode: Mode) -> Supervision:
        sup = self.get(supervision_id)
        call = self.live.get(sup.interaction_id)
        async with sup.lock:
            if sup.mode != mode:
                await self._connect(sup, call, mode)
        return sup

    async def end(self, supervision_id: str) -> Supervision:
        sup = self.get(supervision_id)
        sup.stop.set()
        await asyncio.wait_for(sup.ended.wait(), 10)
        return sup

    async def close(self) -> None:
        for sup in list(self.active.values()):
            sup.stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connect(self, sup: Supervision, call: LiveCall, mode: Mode) -> None:
        """Undo the current mode's wiring, then wire `mode`."""
        if sup.snoop is not None:
            await self.ari.hangup(sup.snoop.id)
            self.stasis.forget(sup.snoop.id)
            sup.snoop = None
        if sup.barged:
            await self.ari.remove_from_bridge(call.bridge_id, [sup.phone_leg.id])
            await self.ari.add_to_bridge(sup.bridge_id, [sup.phone_leg.id])
            sup.barged = False
        if mode == "barge":
            await self.ari.remove_from_bridge(sup.bridge_id, [sup.phone_leg.id])
            await self.ari.add_to_bridge(call.bridge_id, [sup.phone_leg.id])
            sup.barged = True
        else:
            snoop_id = f"{self.ari.app}-snoop-{uuid.uuid4()}"
            snoop = self.stasis.watch(snoop_id)
            await self.ari.snoop(
                call.caller.id, snoop_id, spy="both", whisper=_WHISPER[mode], app_args=f"supervision,{sup.id}"
            )
            sup.snoop = snoop
            try:
                await asyncio.wait_for(snoop.in_stasis.wait(), SNOOP_START_S)
            except TimeoutError as exc:
                raise SupervisionError("the snoop channel did not start") from exc
            await self.ari.add_to_bridge(sup.bridge_id, [snoop_id])
        sup.mode = mode

    async def _watch(self, sup: Supervision, call: LiveCall) -> None:
        waiters = [
            asyncio.ensure_future(e.wait()) for e in (sup.stop, sup.phone_leg.gone, call.caller.gone, call.agent.gone)
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            async with sup.lock:
                await self._teardown(sup, call)

    async def _teardown(self, sup: Supervision, call: LiveCall) -> None:
        """Everything the supervision made goes, each step on its own (one failing must not leave the rest)."""
        steps = []
        if sup.barged and not call.gone:
            steps.append(self.ari.remove_from_bridge(call.bridge_id, [sup.phone_leg.id]))
        if sup.snoop is not None:
            steps.append(self.ari.hangup(sup.snoop.id))
        steps += [self.ari.hangup(sup.phone_leg.id), self.ari.destroy_bridge(sup.bridge_id)]
        for step in steps:
            try:
                await step
            except Exception as exc:  # cleaning up goes on whatever one step says
                log.warning("supervision %s: cleaning up: %s", sup.id, exc)
        if sup.snoop is not None:
            self.stasis.forget(sup.snoop.id)
        self.stasis.forget(sup.phone_leg.id)
        self.active.pop(sup.id, None)
        sup.ended.set()
