"""One inbound phone call from ring to hang-up: identify the caller, greet, run the menu, queue, ring an
agent, bridge, and record every step on the customer's timeline.

`InboundCalls` owns the calls this node is handling. After the ARI socket reconnects (Asterisk restarted,
network blip) it resyncs: calls whose channel vanished are ended as `dropped`, and channels left in the
Stasis app that no task of ours handles (e.g. after Hilo itself restarted) are hung up and their
interaction closed, so nothing stays open forever."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge

from asterisk.ari import AriClient, AriError
from asterisk.events import StasisStart
from asterisk.stasis import ChannelState, StasisRouter
from crm_bridge import customers, identity, verification
from crm_bridge.timeline import Interaction, Timeline
from dialplans.models import RoutingConfig
from ivr.flows.engine import FlowContext, Services, run_flow
from ivr.flows.live import LiveFlows
from ivr.speech.listener import SpeechService
from ivr.tts import PromptCache, voice_for
from ivr.voice import CallerGone, VoiceSession
from recordings.calls import CallRecorder
from recordings.catalog import Recording
from routing.engine import RoutingEngine
from routing.model import Assignment, RoutingError
from routing.offers import bridge_and_wait, ring_agent

log = logging.getLogger(__name__)

IDENTIFY_DEADLINE_S = 1.0  # identification must never hold up a call
# Said before Hilo itself ends a call it could not serve, so the caller is not met by silence.
TECHNICAL_PROBLEM_PROMPT = (
    "Sorry, we cannot take your call right now because of a technical problem. Please call again later."
)
APOLOGY_OUTCOMES = frozenset({"failed", "no-flow"})
HANDED_OFF_OUTCOMES = frozenset({"transferred"})  # the channel lives on in the dialplan: not ours to hang up
TRANSFER_CONTEXT = "hilo-transfer"  # asterisk/etc/extensions.conf
VOICEMAIL_MAX_S = 120
VOICEMAIL_MAX_SILENCE_S = 5
OFFER_HOOK_DEADLINE_S = 0.5  # the screen-pop may never hold up ringing the agent for longer than this

# (interaction, agent id) -> awaited before the agent's phone rings, e.g. to push the screen-pop.
OfferHook = Callable[[Interaction, str], Awaitable[None]]


async def _no_offer_hook(interaction: Interaction, agent_id: str) -> None:
    return None


# (interaction, customer id, caller's E.164 number) of a caller identified as a new customer -> their name
# if an outside CRM told it within its time box (crm_bridge/connectors.py CallerEnrichment.on_new_caller).
NewCallerHook = Callable[[Interaction, uuid.UUID, str], Awaitable[str | None]]
NEW_CALLER_HOOK_DEADLINE_S = 2.0  # a cap over the hook's own time box, should it ever overrun


@dataclass
class CallMetrics:
    started: Counter
    ended: Counter
    active: Gauge


class InboundCalls:
    def __init__(
        self,
        *,
        ari: AriClient,
        pool: asyncpg.Pool,
        timeline: Timeline,
        engine: RoutingEngine,
        prompts: PromptCache,
        live_flows: Callable[[], LiveFlows],
        routing: RoutingConfig,
        metrics: CallMetrics,
        default_region: str,
        ring_timeout_s: int,
        queue_max_wait_s: int,
        wrapup_s: float,
        on_offer: OfferHook = _no_offer_hook,
        on_new_caller: NewCallerHook | None = None,
        recorder: CallRecorder | None = None,
    ) -> None:
        self.ari = ari
        self.speech: SpeechService | None = None  # set by hilo.app: menus with `speech` listen through it
        self.pool = pool
        self.timeline = timeline
        self.engine = engine  # routing: who gets the call
        self.prompts = prompts
        self.live_flows = live_flows  # read once per call: a call keeps the version it began with
        self.agents = {a.id: a for a in routing.agents}
        self.queues = {q.id: q for q in routing.queues}
        self.metrics = metrics
        self.default_region = default_region
        self.ring_timeout_s = ring_timeout_s
        self.queue_max_wait_s = queue_max_wait_s
        self.wrapup_s = wrapup_s
        self.on_offer = on_offer
        self.on_new_caller = on_new_caller  # settable: None asks no outside CRM
        self.recorder = recorder  # settable: None records nothing (recordings/calls.py)
        self.stasis = StasisRouter(self._on_new_call)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        ari.handlers.append(self.stasis.handle)
        ari.on_connect.append(self.resync)

    # -- entry ------------------------------------------------------------------------------------
    def _on_new_call(self, start: StasisStart) -> None:
        if start.args and start.args[0] == "agent":
            # An agent leg we no longer track (e.g. it answered after the caller left): end it.
            self._spawn(start.channel.id, self._hangup_stray(start.channel.id))
            return
        self._spawn(start.channel.id, self._run_call(start))

    def _spawn(self, channel_id: str, coro: Any) -> None:
        task = asyncio.create_task(coro, name=f"call-{channel_id}")
        self.tasks[channel_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(channel_id, None))

    async def _hangup_stray(self, channel_id: str) -> None:
        self.stasis.forget(channel_id)
        await self.ari.hangup(channel_id)

    async def close(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    # -- the call ---------------------------------------------------------------------------------
    async def _identify(self, raw_number: str) -> tuple[customers.Identification, str | None]:
        try:
            phone = identity.normalize("phone", raw_number, self.default_region)
        except identity.InvalidIdentity:
            return await customers.create_anonymous(self.pool), None
        return await identity.identify_or_create(self.pool, "phone", phone), phone

    async def _enrich_new_caller(
        self, interaction: Interaction, who: customers.Identification, phone: str | None
    ) -> customers.Identification:
        """A caller new to Hilo may be known to the company's CRM. The hook waits at most its time box (a
        slower CRM enriches the customer later, in the background) and can never fail the call. A name that
        came in time makes the caller known to the flow, which greets them by it."""
        if self.on_new_caller is None or not who.created or phone is None:
            return who
        try:
            name = await asyncio.wait_for(
                self.on_new_caller(interaction, who.customer_id, phone), NEW_CALLER_HOOK_DEADLINE_S
            )
        except Exception:
            log.exception("new-caller hook failed for interaction %s", interaction.id)
            return who
        return who if name is None else replace(who, display_name=name, created=False)

    async def _run_call(self, start: StasisStart) -> None:
        channel = self.stasis.watch(start.channel.id)
        dialed = start.args[0] if start.args else start.channel.dialplan.exten
        self.metrics.started.inc()
        self.metrics.active.inc()
        interaction: Interaction | None = None
        outcome, hangup_by = "failed", "system"
        try:
            await self.ari.answer(channel.id)
            identification, phone = await asyncio.wait_for(
                self._identify(start.channel.caller.number), IDENTIFY_DEADLINE_S
            )
            interaction = await self.timeline.start_interaction(
                identification.customer_id,
                "voice",
                "inbound",
                dialed=dialed,
                channel_ref=channel.id,
                context={"caller_number": phone, "dialed": dialed},
            )
            await self.timeline.record(
                interaction, "interaction.started", {"dialed": dialed, "channel_ref": channel.id}
            )
            await self.timeline.record(
                interaction,
                "customer.identified",
                {"by": "caller_number" if phone else "anonymous", "new": identification.created},
            )
            identification = await self._enrich_new_caller(interaction, identification, phone)
            outcome, hangup_by = await self._journey(channel, interaction, identification)
        except CallerGone as gone:
            outcome, hangup_by = ("dropped", "system") if gone.reason == "lost" else ("abandoned", "caller")
        except asyncio.CancelledError:
            outcome, hangup_by = "dropped", "system"
            raise
        except Exception:
            log.exception("call %s failed", channel.id)
        finally:
            await self._finish(channel, interaction, outcome, hangup_by)

    async def _journey(
        self, channel: ChannelState, interaction: Interaction, who: customers.Identification
    ) -> tuple[str, str]:
        dialed = interaction.context.get("dialed", "")
        live = self.live_flows()
        flow = live.for_number(dialed)
        if flow is None:
            log.error("no flow answers number %s (numbers.yaml, flow version %s)", dialed, live.version)
            await self.timeline.record(interaction, "ivr.no_flow", {"dialed": dialed, "version": live.version})
            return "no-flow", "system"
        interaction.context["flow_version"] = live.version
        await self.timeline.record(interaction, "ivr.flow_started", {"flow": flow.flow, "version": live.version})
        session = VoiceSession(
            self.ari,
            self.stasis,
            channel,
            self.prompts,
            voice=voice_for(flow.language, flow.voice),
            language=flow.language,
            speech=self.speech,
        )

        async def record(type_: str, data: dict[str, Any]) -> None:
            await self.timeline.record(interaction, type_, data)

        # A customer made just now is not "known" yet: the flow greets them as new.
        customer = None if who.created else {"id": str(who.customer_id), "name": who.display_name}
        outcome = await run_flow(
            flow,
            session,
            FlowContext(
                caller_number=interaction.context.get("caller_number"),
                channel="voice",
                customer=customer,
                flows=live.flows,
                services=Services(
                    lookup_customer=self._lookup_customer,
                    calendars=live.calendars,
                    verify_customer=self._verify_customer,
                ),
                record=record,
            ),
        )
        # What the caller told the IVR travels with the interaction: to routing, the agent, a transfer.
        # Secret answers (PINs, dates of birth) are masked: they never leave the flow.
        collected = {k: v for k, v in outcome.shown_variables().items() if k not in ("caller", "customer", "now")}
        interaction.context["ivr"] = {"flow": outcome.flow, "node": outcome.node, "variables": collected}
        session.check_alive()
        if outcome.action == "queue" and outcome.target:
            interaction.context["queue"] = outcome.target
            await self.timeline.update(interaction, state="queued", queue=outcome.target)
            await record("routing.queued", {"queue": outcome.target, "priority": outcome.priority})
            return await self._connect_to_agent(session, channel, interaction, outcome.target, outcome.priority)
        if outcome.action == "hangup":
            return "ivr-ended", "system"
        if outcome.action == "error":
            return "failed", "system"
        if outcome.action == "voicemail":
            return await self._take_voicemail(session, channel, interaction)
        if outcome.action == "callback":
            return await self._book_callback(interaction)
        if outcome.action == "transfer" and outcome.target:
            return await self._transfer(channel, interaction, outcome.target)
        await record("ivr.flow_error", {"reason": f"outcome {outcome.action!r} without a target"})
        return "failed", "system"

    async def _take_voicemail(
        self, session: VoiceSession, channel: ChannelState, interaction: Interaction
    ) -> tuple[str, str]:
        name = f"voicemail-{interaction.id}"
        try:
            rec = await session.record_message(
                name, max_duration_s=VOICEMAIL_MAX_S, max_silence_s=VOICEMAIL_MAX_SILENCE_S
            )
        except (AriError, TimeoutError) as exc:
            log.error("voicemail on %s could not be recorded: %s", channel.id, exc)
            await self.timeline.record(interaction, "voicemail.failed", {"reason": type(exc).__name__})
            return "failed", "system"
        if rec.state != "done":
            await self.timeline.record(interaction, "voicemail.failed", {"reason": rec.cause or rec.state})
            return "failed", "system"
        # Asterisk keeps the file in its recording spool as <name>.<format>: `recordings/` takes it from there
        # into the encrypted store (without a recorder it stays in the spool).
        interaction.context["voicemail"] = {"recording": name, "format": rec.format, "duration_s": rec.duration}
        if self.recorder is not None:
            stored = await self.recorder.store_voicemail(interaction, name, rec.duration)
            interaction.context["voicemail"]["recording_id"] = str(stored.id) if stored else None
        await self.timeline.record(interaction, "voicemail.recorded", interaction.context["voicemail"])
        return "voicemail", "caller" if channel.gone.is_set() else "system"

    async def _book_callback(self, interaction: Interaction) -> tuple[str, str]:
        number = interaction.context.get("caller_number")
        if not number:  # withheld or unusable caller number: nobody to call back
            await self.timeline.record(interaction, "callback.refused", {"reason": "no caller number"})
            return "callback-unavailable", "system"
        queue = interaction.context.get("queue")
        booked = await self.pool.fetchval(
            "INSERT INTO callbacks (interaction_id, customer_id, number, queue, context)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (interaction_id) DO NOTHING RETURNING id",
            interaction.id,
            interaction.customer_id,
            number,
            queue,
            interaction.context,
        )
        await self.timeline.record(
            interaction, "callback.requested", {"callback_id": booked, "number": number, "queue": queue}
        )
        return "callback-requested", "system"

    async def _transfer(self, channel: ChannelState, interaction: Interaction, target: str) -> tuple[str, str]:
        """Hand the call to the dialplan's transfer context; the interaction id goes with it as a channel
        variable, so whoever takes the call can fetch everything the caller already said."""
        interaction.context["transfer"] = {"to": target}
        await self.timeline.update(interaction, state="transferred")
        await self.timeline.record(interaction, "ivr.transfer", {"to": target})
        await self.ari.set_variable(channel.id, "HILO_INTERACTION", str(interaction.id))
        await self.ari.continue_in_dialplan(channel.id, TRANSFER_CONTEXT, target)
        return "transferred", "system"

    async def _lookup_customer(self, kind: str, value: str) -> dict[str, Any] | None:
        # `identity: account` (any kind that is not a built-in one) names an outside system's ids,
        # stored as the external identity `account:<value>`.
        if kind not in identity.KINDS:
            kind, value = "external", f"{kind}:{value}"
        try:
            found = await identity.resolve(self.pool, kind, value, self.default_region)
        except identity.InvalidIdentity:
            return None
        if found is None:
            return None
        return {"id": str(found.customer_id), "name": found.display_name}

    async def _verify_customer(self, customer_id: str, field: str, given: str) -> bool:
        if field not in verification.FIELDS:
            return False
        return await verification.verify(self.pool, uuid.UUID(customer_id), field, given)

    async def _connect_to_agent(
        self, session: VoiceSession, channel: ChannelState, interaction: Interaction, queue: str, priority: int = 0
    ) -> tuple[str, str]:
        loop = asyncio.get_running_loop()
        config = self.engine.queues.get(queue) or self.queues.get(queue)
        deadline = loop.time() + ((config.max_wait_s if config else None) or self.queue_max_wait_s)
        iid = str(interaction.id)
        try:
            offer: Assignment | None = await self.engine.enqueue(iid, queue, priority=priority)
        except RoutingError as exc:  # e.g. the queue is closed, or was deleted since the flow was applied
            log.warning("call %s cannot be queued to %s: %s", channel.id, queue, exc)
            await self.timeline.record(interaction, "routing.refused", {"queue": queue, "reason": str(exc)})
            return "failed", "system"
        on_hold = talking = False
        try:
            while loop.time() < deadline:
                session.check_alive()
                if offer is None:
                    offer = await self._wait_for_offer(channel, iid, min(2.0, deadline - loop.time()))
                    session.check_alive()
                if offer is None:
                    if not on_hold and not channel.gone.is_set():
                        await self.ari.start_moh(channel.id)
                        on_hold = True
                    continue
                agent_id = offer.agent_id
                await self.timeline.record(interaction, "routing.offered", {"agent": agent_id, "queue": offer.via})
                await self._before_ringing(interaction, agent_id)
                answered = await ring_agent(
                    self.ari,
                    self.stasis,
                    channel,
                    agent_id=agent_id,
                    endpoint=offer.endpoint,
                    interaction_id=iid,
                    caller_id=str(interaction.context.get("caller_number") or "anonymous"),
                    ring_timeout_s=self.ring_timeout_s,
                )
                if answered is None:
                    if channel.gone.is_set():
                        continue  # the caller left while it rang: not the agent's fault
                    # Not answered: routing rests the agent (away) and puts the caller back in their place.
                    await self.timeline.record(interaction, "routing.not_answered", {"agent": agent_id})
                    offer = await self.engine.not_answered(iid, agent_id)
                    continue
                talking = True
                return await self._talk(channel, interaction, agent_id, answered.channel, on_hold)
        finally:
            if on_hold and not channel.gone.is_set():
                await self.ari.stop_moh(channel.id)
            if not talking:  # out of the queue (an agent it was offered to is free again)
                await self._leave_queue(iid, "abandoned" if channel.gone.is_set() else "timeout")
        session.check_alive()
        await self.timeline.record(interaction, "routing.timeout", {"queue": queue})
        await session.say(config.no_agent_prompt if config else TECHNICAL_PROBLEM_PROMPT, interruptible=False)
        return "no-agent", "system"

    async def _wait_for_offer(self, channel: ChannelState, interaction_id: str, timeout: float) -> Assignment | None:
        """The offer routing makes for this call (any node's decision wakes it), unless the caller leaves."""
        waiting = asyncio.ensure_future(self.engine.wait_for_offer(interaction_id, max(timeout, 0.05)))
        gone = asyncio.ensure_future(channel.gone.wait())
        try:
            await asyncio.wait([waiting, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if waiting.done():
            return waiting.result()
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        return None

    async def _leave_queue(self, interaction_id: str, reason: str) -> None:
        try:
            await self.engine.remove(interaction_id, reason)
        except Exception:  # never hide why the call is ending; a leftover offer expires on its own
            log.exception("could not take interaction %s out of routing", interaction_id)

    async def _before_ringing(self, interaction: Interaction, agent_id: str) -> None:
        try:
            await asyncio.wait_for(self.on_offer(interaction, agent_id), OFFER_HOOK_DEADLINE_S)
        except Exception:  # the pop failing must never cost the caller the agent
            log.exception("offer hook failed for interaction %s", interaction.id)

    async def _talk(
        self,
        channel: ChannelState,
        interaction: Interaction,
        agent_id: str,
        agent_leg: ChannelState,
        on_hold: bool,
    ) -> tuple[str, str]:
        if not await self.engine.answered(str(interaction.id), agent_id):
            log.warning("interaction %s: the offer to %s was withdrawn before the answer", interaction.id, agent_id)
        interaction.context.update({"agent_channel_ref": agent_leg.id})
        if on_hold:
            await self.ari.stop_moh(channel.id)

        talked = False
        bridge_id = f"{self.ari.app}-bridge-{interaction.id}"
        recording: Recording | None = None

        async def connected() -> None:
            nonlocal talked, recording
            talked = True
            await self.timeline.update(interaction, state="connected", agent_id=agent_id, answered_at=datetime.now(UTC))
            await self.timeline.record(interaction, "agent.answered", {"agent": agent_id})
            if self.recorder is not None:  # the conversation, from the moment they are bridged (never fails the call)
                recording = await self.recorder.start_call(interaction, bridge_id, agent_id)

        async def stop_recording() -> None:
            if recording is not None:
                await self.ari.stop_recording(recording.asterisk_name)

        try:
            hangup_by = await bridge_and_wait(self.ari, channel, agent_leg, bridge_id, connected, stop_recording)
        finally:
            await self.ari.hangup(agent_leg.id)
            self.stasis.forget(agent_leg.id)
            self._spawn_release(str(interaction.id))
            if recording is not None and self.recorder is not None:
                # The bridge is gone, so Asterisk is closing the file: it is encrypted and stored beside the call's end.
                self._spawn(f"recording-{recording.id}", self.recorder.finish_call(recording))
        if hangup_by == "system":
            return "dropped", hangup_by
        return ("completed" if talked else "abandoned"), hangup_by

    def _spawn_release(self, interaction_id: str) -> None:
        # The agent gets the wrap-up period routing then ends on its own (its tick), then the next call.
        self._spawn(f"release-{interaction_id}", self.engine.release(interaction_id, self.wrapup_s))

    async def _finish(
        self, channel: ChannelState, interaction: Interaction | None, outcome: str, hangup_by: str
    ) -> None:
        self.metrics.active.dec()
        self.metrics.ended.labels(outcome=outcome).inc()
        if outcome in APOLOGY_OUTCOMES and not channel.gone.is_set():
            await self._apologise(channel)
        try:
            if not channel.gone.is_set() and outcome not in HANDED_OFF_OUTCOMES:
                await self.ari.hangup(channel.id)
        except AriError:
            log.warning("could not hang up %s", channel.id)
        finally:
            self.stasis.forget(channel.id)
        if interaction is not None:
            await self.timeline.end_interaction(interaction, outcome, hangup_by)

    async def _apologise(self, channel: ChannelState) -> None:
        session = VoiceSession(self.ari, self.stasis, channel, self.prompts, voice=voice_for("en", None), language="en")
        try:
            await asyncio.wait_for(session.say(TECHNICAL_PROBLEM_PROMPT, interruptible=False), 10)
        except Exception:  # already failing: the apology is best effort, the hang-up must still happen
            log.warning("could not play the apology on %s", channel.id)

    # -- resync after a reconnect -----------------------------------------------------------------
    async def resync(self) -> None:
        try:
            app = await self.ari.application()
        except AriError as exc:
            log.warning("resync: cannot read the Stasis app: %s", exc)
            return
        in_app = set(app.get("channel_ids", []))
        for channel_id, state in list(self.stasis.channels.items()):
            if channel_id not in in_app and await self.ari.get_channel(channel_id) is None:
                state.mark_gone("lost")
        for channel_id in in_app - set(self.stasis.channels):
            log.warning("resync: channel %s is in the app but no call handles it: ending it", channel_id)
            await self.ari.hangup(channel_id)
        await self._close_orphaned_interactions()

    async def _close_orphaned_interactions(self) -> None:
        rows = await self.pool.fetch(
            "SELECT id, customer_id, channel, context, channel_ref FROM interactions"
            " WHERE ended_at IS NULL AND channel = 'voice' AND channel_ref IS NOT NULL"
        )
        for row in rows:
            if row["channel_ref"] in self.stasis.channels:
                continue
            if await self.ari.get_channel(row["channel_ref"]) is not None:
                continue
            orphan = Interaction(row["id"], row["customer_id"], row["channel"], dict(row["context"]))
            if await self.timeline.end_interaction(orphan, "dropped", "system"):
                log.warning("resync: closed interaction %s whose call no longer exists", row["id"])
