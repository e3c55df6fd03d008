"""Dialling the callbacks callers booked (flow node `callback`, table `callbacks`, migrations 006 and 015).

A booking keeps its interaction in routing: when the caller chose it while waiting in a queue, at the place
they had (their first queued time and priority); otherwise queued at booking. When routing offers it to an
agent, the dialler rings the agent first, then — once the agent answered, hearing music meanwhile — dials
the customer and bridges the two. Agent first, as most centres do: the customer who picks up is never left
waiting for an agent who may not answer, and an agent who does not answer costs the customer nothing (the
agent is set away and the booking keeps its place for the next agent, as for a call).

The row's states: pending -> dialing -> done | failed. A customer who does not answer is tried again after
`retry_s`, up to `max_attempts` dials; each retry returns to the queue at the original place. The row is the
durable truth: after a restart, bookings left `dialing` longer than any ring could take are put back to
pending. Timeline events on the booking interaction: `callback.dialing` (an attempt begins),
`callback.connected` (the customer answered and is bridged with the agent), `callback.no_answer` (tried
again later), `callback.failed` (given up), `callback.refused` (the outbound policy refuses the number: never
offered to an agent, never dialled)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from asterisk.ari import AriClient, AriError
from asterisk.stasis import ChannelState, StasisRouter
from crm_bridge.timeline import Interaction, Timeline
from ivr.agent_leg import bridge_and_wait, ring_agent
from routing.engine import NotQueued, RoutingEngine
from routing.model import Assignment, RoutingError
from routing.outbound import OutboundGuard

log = logging.getLogger(__name__)

RETRY_REASON = "callback-retry"  # routing's end reason while a booking waits for its next attempt
FAILED_REASON = "callback-failed"
CUSTOMER_LEG_ARG = "callback"  # Stasis argument of the customer's leg
OFFER_HOOK_DEADLINE_S = 0.5

OfferHook = Callable[[Interaction, str], Awaitable[None]]
Spawn = Callable[[str, Any], None]


class CallbackDialer:
    def __init__(
        self,
        *,
        ari: AriClient,
        stasis: StasisRouter,
        pool: asyncpg.Pool,
        timeline: Timeline,
        engine: RoutingEngine,
        on_offer: OfferHook,
        spawn: Spawn,
        ring_timeout_s: int,
        wrapup_s: float,
    ) -> None:
        self.ari = ari
        self.stasis = stasis
        self.pool = pool
        self.timeline = timeline
        self.engine = engine
        self.on_offer = on_offer
        self.spawn = spawn  # runs a dial as one of the node's call tasks
        self.ring_timeout_s = ring_timeout_s
        self.wrapup_s = wrapup_s
        # Configuration (hilo/settings.py HILO_CALLBACK_*): `{number}` is the customer's E.164 number.
        self.dial = "Local/{number}@hilo-callback"
        self.customer_ring_s = 30
        self.max_attempts = 3
        self.retry_s = 300.0
        self.poll_s = 1.0
        # The outbound policy (routing/outbound.py; set by InboundCalls): a booking whose number it refuses now
        # (booked before the policy, or the policy changed) is never offered to an agent nor dialled.
        self.outbound: OutboundGuard | None = None
        self._active: set[int] = set()  # callback ids this node is dialling now
        self._loop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin working through the bookings (idempotent: called at every ARI (re)connection)."""
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._run(), name="callback-dialler")

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.resume_stale()
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("callback dialler round failed")
            await asyncio.sleep(self.poll_s)

    @property
    def stale_after(self) -> timedelta:
        """Longer than one attempt can stay `dialing` (the agent rings, then the customer)."""
        return timedelta(seconds=self.ring_timeout_s + self.customer_ring_s + 30)

    async def resume_stale(self) -> None:
        """Bookings left `dialing` by a node that died mid-attempt: back to pending, and in routing back in
        their place with the agent freed (who then takes the best waiting, most likely this booking again)."""
        rows = await self.pool.fetch(
            "UPDATE callbacks SET state = 'pending', agent_id = NULL, next_attempt_at = NULL,"
            " last_result = 'interrupted', updated_at = now()"
            " WHERE state = 'dialing' AND updated_at < $1 AND NOT (id = ANY($2::bigint[])) RETURNING interaction_id",
            datetime.now(UTC) - self.stale_after,
            list(self._active),
        )
        for row in rows:
            log.warning("callback of interaction %s was interrupted mid-attempt: trying again", row["interaction_id"])
            await self.engine.requeue(str(row["interaction_id"]))

    async def tick(self) -> None:
        """Every due booking: back in its queue if it was waiting for a retry, then dialled if routing has
        offered it to an agent."""
        rows = await self.pool.fetch(
            "SELECT * FROM callbacks WHERE state = 'pending' AND queue IS NOT NULL"
            " AND (next_attempt_at IS NULL OR next_attempt_at <= now()) ORDER BY requested_at, id"
        )
        for row in rows:
            if row["id"] in self._active:
                continue
            iid = str(row["interaction_id"])
            refusal = self.outbound.refusal(str(row["number"])) if self.outbound is not None else None
            if refusal is not None:
                await self._refuse(row, refusal)
                continue
            try:
                if row["next_attempt_at"] is not None:
                    with contextlib.suppress(NotQueued):  # another node put it back a moment ago
                        await self.engine.reopen(iid, RETRY_REASON)
                    await self.pool.execute("UPDATE callbacks SET next_attempt_at = NULL WHERE id = $1", row["id"])
                offer = await self.engine.try_assign(iid)
            except NotQueued:
                # Its offer expired while no node was dialling it (all were down): back to its place, if
                # that is what ended it; otherwise there is nothing left to call back for.
                try:
                    offer = await self.engine.reopen(iid, "offer-expired")
                except NotQueued:
                    await self._give_up(row, "routing no longer holds the interaction")
                    continue
            if offer is None or offer.state != "offered":
                continue
            claimed = await self.pool.fetchrow(
                "UPDATE callbacks SET state = 'dialing', agent_id = $2, updated_at = now()"
                " WHERE id = $1 AND state = 'pending' RETURNING *",
                row["id"],
                offer.agent_id,
            )
            if claimed is None:
                continue  # another node took it
            self._active.add(row["id"])
            self.spawn(f"callback-{row['id']}", self._attempt(claimed, offer))

    async def _attempt(self, row: asyncpg.Record, offer: Assignment) -> None:
        try:
            await self._dial(row, offer)
        except Exception:
            log.exception("callback %s: the attempt failed", row["id"])
            with contextlib.suppress(Exception):
                await self._after_no_answer(row, _interaction(row), "error")
        finally:
            self._active.discard(row["id"])

    async def _dial(self, row: asyncpg.Record, offer: Assignment) -> None:
        interaction = _interaction(row)
        iid, agent_id = str(row["interaction_id"]), offer.agent_id
        attempt = row["attempts"] + 1
        await self.timeline.record(
            interaction,
            "callback.dialing",
            {"callback_id": row["id"], "agent": agent_id, "attempt": attempt, "queue": row["queue"]},
        )
        try:  # the screen-pop shows the booked context before the agent's phone rings
            await asyncio.wait_for(self.on_offer(interaction, agent_id), OFFER_HOOK_DEADLINE_S)
        except Exception:
            log.exception("offer hook failed for callback %s", row["id"])
        nobody = ChannelState(f"callback-{row['id']}")  # no caller on the line yet: nothing else stops the ringing
        answered = await ring_agent(
            self.ari,
            self.stasis,
            nobody,
            agent_id=agent_id,
            endpoint=offer.endpoint,
            interaction_id=iid,
            caller_id=str(row["number"]),
            ring_timeout_s=self.ring_timeout_s,
        )
        if answered is None:  # as for a call: the agent rests (away), the booking keeps its place
            await self.timeline.record(interaction, "routing.not_answered", {"agent": agent_id})
            await self.pool.execute(
                "UPDATE callbacks SET state = 'pending', agent_id = NULL, last_result = 'agent-no-answer',"
                " updated_at = now() WHERE id = $1",
                row["id"],
            )
            await self.engine.not_answered(iid, agent_id)
            return
        agent_leg = answered.channel
        await self.engine.answered(iid, agent_id)
        await self.pool.execute(
            "UPDATE callbacks SET attempts = attempts + 1, updated_at = now() WHERE id = $1", row["id"]
        )
        customer = await self._call_customer(row, agent_leg)
        if customer is None:
            with contextlib.suppress(AriError):
                await self.ari.hangup(agent_leg.id)
            self.stasis.forget(agent_leg.id)
            await self._after_no_answer(row, interaction, "no-answer", attempt=attempt)
            return
        await self._talk(row, interaction, agent_id, agent_leg, customer)

    async def _call_customer(self, row: asyncpg.Record, agent_leg: ChannelState) -> ChannelState | None:
        """Dial the customer while the agent hears music; their answered leg, or None (no answer, busy,
        unreachable, or the agent hung up meanwhile)."""
        with contextlib.suppress(AriError):
            await self.ari.start_moh(agent_leg.id)
        channel_id = f"{self.ari.app}-callback-{uuid.uuid4()}"
        leg = self.stasis.watch(channel_id)
        try:
            await self.ari.originate(
                self.dial.format(number=row["number"]),
                app=self.ari.app,
                app_args=f"{CUSTOMER_LEG_ARG},{row['interaction_id']}",
                timeout_s=self.customer_ring_s,
                channel_id=channel_id,
                other_channel_id=f"{channel_id}-far",
            )
        except AriError as exc:
            log.warning("callback %s: could not dial the customer: %s", row["id"], exc)
            self.stasis.forget(channel_id)
            return None
        waiters = [asyncio.ensure_future(e.wait()) for e in (leg.in_stasis, leg.gone, agent_leg.gone)]
        try:
            await asyncio.wait(waiters, timeout=self.customer_ring_s + 5, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if leg.in_stasis.is_set() and not leg.gone.is_set() and not agent_leg.gone.is_set():
            with contextlib.suppress(AriError):
                await self.ari.stop_moh(agent_leg.id)
            return leg
        with contextlib.suppress(AriError):
            await self.ari.hangup(channel_id)
        self.stasis.forget(channel_id)
        return None

    async def _talk(
        self,
        row: asyncpg.Record,
        interaction: Interaction,
        agent_id: str,
        agent_leg: ChannelState,
        customer: ChannelState,
    ) -> None:
        iid = str(row["interaction_id"])

        async def connected() -> None:
            await self.pool.execute(
                "UPDATE callbacks SET state = 'done', last_result = 'connected', updated_at = now() WHERE id = $1",
                row["id"],
            )
            await self.timeline.record(
                interaction,
                "callback.connected",
                {"callback_id": row["id"], "agent": agent_id, "attempt": row["attempts"] + 1},
            )

        try:
            hangup_by = await bridge_and_wait(
                self.ari, customer, agent_leg, f"{self.ari.app}-callback-{iid}", connected
            )
            log.info("callback %s ended (hung up by %s)", row["id"], hangup_by)
        finally:
            for leg in (customer, agent_leg):
                with contextlib.suppress(AriError):
                    await self.ari.hangup(leg.id)
                self.stasis.forget(leg.id)
            await self.engine.release(iid, self.wrapup_s)

    async def _after_no_answer(
        self, row: asyncpg.Record, interaction: Interaction, result: str, *, attempt: int | None = None
    ) -> None:
        iid = str(row["interaction_id"])
        attempts = attempt if attempt is not None else row["attempts"]
        if attempts >= row["max_attempts"]:
            await self._give_up(row, result, attempts=attempts)
            return
        retry_at = datetime.now(UTC) + timedelta(seconds=self.retry_s)
        await self.pool.execute(
            "UPDATE callbacks SET state = 'pending', agent_id = NULL, next_attempt_at = $2, last_result = $3,"
            " updated_at = now() WHERE id = $1",
            row["id"],
            retry_at,
            result,
        )
        await self.engine.remove(iid, RETRY_REASON)  # the agent is free now; the place comes back at retry_at
        await self.timeline.record(
            interaction,
            "callback.no_answer",
            {"callback_id": row["id"], "attempt": attempts, "retry_at": retry_at.isoformat()},
        )

    async def _refuse(self, row: asyncpg.Record, reason: str) -> None:
        """A booking the outbound policy refuses: failed, out of routing, `callback.refused`; never dialled."""
        done = await self.pool.fetchval(
            "UPDATE callbacks SET state = 'failed', agent_id = NULL, next_attempt_at = NULL, last_result = 'refused',"
            " updated_at = now() WHERE id = $1 AND state = 'pending' RETURNING true",
            row["id"],
        )
        if not done:
            return
        log.warning("callback %s refused by the outbound policy: %s", row["id"], reason)
        with contextlib.suppress(RoutingError):
            await self.engine.remove(str(row["interaction_id"]), FAILED_REASON)
        await self.timeline.record(_interaction(row), "callback.refused", {"callback_id": row["id"], "reason": reason})

    async def _give_up(self, row: asyncpg.Record, reason: str, *, attempts: int | None = None) -> None:
        done = await self.pool.fetchval(
            "UPDATE callbacks SET state = 'failed', agent_id = NULL, last_result = $2, updated_at = now()"
            " WHERE id = $1 AND state IN ('pending', 'dialing') RETURNING true",
            row["id"],
            reason,
        )
        if not done:
            return
        with contextlib.suppress(RoutingError):
            await self.engine.remove(str(row["interaction_id"]), FAILED_REASON)
        await self.timeline.record(
            _interaction(row),
            "callback.failed",
            {"callback_id": row["id"], "attempts": row["attempts"] if attempts is None else attempts, "reason": reason},
        )


def _interaction(row: asyncpg.Record) -> Interaction:
    return Interaction(row["interaction_id"], row["customer_id"], "voice", dict(row["context"]))
