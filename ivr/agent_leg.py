"""Offering a call to an agent's SIP phone and bridging the two once the agent answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from asterisk.ari import AriClient, AriError
from asterisk.stasis import ChannelState, StasisRouter
from dialplans.models import PHONE_NAME

log = logging.getLogger(__name__)


@dataclass
class Offer:
    agent_id: str
    endpoint: str
    channel: ChannelState


async def ring_agent(
    ari: AriClient,
    stasis: StasisRouter,
    caller: ChannelState,
    *,
    agent_id: str,
    endpoint: str,
    interaction_id: str,
    caller_id: str,
    ring_timeout_s: int,
) -> Offer | None:
    """Ring the agent's PJSIP endpoint. Returns the answered leg, or None if it was not answered in time
    (busy, unreachable, no answer). If the caller hangs up meanwhile, the agent's phone stops ringing; a caller
    gone already is never rung for. An endpoint that is not a plain PJSIP endpoint name (a row written before
    names were checked: a trunk URI such as `carrier/sip:+44...@host` would dial out) is never dialled. The
    leg is named after the interaction (<app>-agent-<interaction>-<random>), so the reconciler
    (ivr/reconcile.py) can tell an agent rung for a call that no longer exists."""
    if not PHONE_NAME.fullmatch(endpoint):
        log.error("agent %s: SIP endpoint %r is not a phone's name: not dialled", agent_id, endpoint[:80])
        return None
    if caller.gone.is_set():
        return None
    channel_id = f"{ari.app}-agent-{interaction_id}-{uuid.uuid4().hex[:12]}"
    leg = stasis.watch(channel_id)
    try:
        await ari.originate(
            f"PJSIP/{endpoint}",
            app=ari.app,
            app_args=f"agent,{interaction_id}",
            caller_id=caller_id,
            timeout_s=ring_timeout_s,
            channel_id=channel_id,
        )
    except AriError as exc:
        log.warning("could not ring agent %s: %s", agent_id, exc)
        stasis.forget(channel_id)
        return None
    waiters = [asyncio.ensure_future(e.wait()) for e in (leg.in_stasis, leg.gone, caller.gone)]
    try:
        # Asterisk's own originate timeout ends the ringing; ours is only a safety net.
        await asyncio.wait(waiters, timeout=ring_timeout_s + 5, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    if leg.in_stasis.is_set() and not leg.gone.is_set() and not caller.gone.is_set():
        return Offer(agent_id, endpoint, leg)
    with contextlib.suppress(AriError):
        await ari.hangup(channel_id)
    stasis.forget(channel_id)
    return None


async def _first_gone(*legs: ChannelState, timeout: float | None = None) -> None:
    waiters = [asyncio.ensure_future(leg.gone.wait()) for leg in legs]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def bridge_and_wait(
    ari: AriClient,
    caller: ChannelState,
    agent: ChannelState,
    bridge_id: str,
    on_bridged: Callable[[], Awaitable[None]],
    before_teardown: Callable[[], Awaitable[None]] | None = None,
) -> str:
    """Bridge caller and agent until one hangs up; returns who did ("caller", "agent" or "system").
    `before_teardown` runs before the bridge is destroyed (e.g. stop its recording: a bridge that still
    holds a recorder cannot be destroyed by the app once the callers have left it)."""
    await ari.create_bridge(bridge_id)
    try:
        try:
            await ari.add_to_bridge(bridge_id, [caller.id, agent.id])
        except AriError:
            # Most often one side hung up in the very moment of bridging; its StasisEnd is on its way.
            await _first_gone(caller, agent, timeout=2.0)
            if not (caller.gone.is_set() or agent.gone.is_set()):
                raise
        else:
            await on_bridged()
            await _first_gone(caller, agent)
    finally:
        if before_teardown is not None:
            with contextlib.suppress(AriError):
                await before_teardown()
        with contextlib.suppress(AriError):
            await ari.destroy_bridge(bridge_id)
    if caller.gone_reason == "lost" or agent.gone_reason == "lost":
        return "system"
    return "caller" if caller.gone.is_set() else "agent"
