"""One inbound phone call from ring to hang-up: identify the caller, greet, run the menu, queue, ring an
agent, bridge, and record every step on the customer's timeline.

`InboundCalls` owns the calls this node is handling. After the ARI socket reconnects (Asterisk restarted,
network blip) it resyncs: calls whose channel vanished are ended as `dropped`, and channels left in the
Stasis app that no task of ours handles (e.g. after Hilo itself restarted) are hung up. Whatever a call
that is gone left behind (its interaction open, its place in routing, an agent ringing for it) is ended by
the reconciler (ivr/reconcile.py), so nothing stays open forever."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from asterisk.ari import AriClient, AriError
from asterisk.events import ChannelDestroyed, Event, StasisStart
from asterisk.stasis import ChannelState, StasisRouter
from crm_bridge import customers, flow_services, identity
from crm_bridge.timeline import Interaction, Timeline
from dialplans.models import RoutingConfig
from flows.engine import FlowContext, FlowServices, Outcome, run_flow, say_opening
from flows.runtime import LiveFlows
from flows.schema import Flow
from flows.schema import Queue as QueueNode
from flows.templates import render
from hilo.degraded import DOWN, STORE_DOWN, Degradations, part_of
from ivr.agent_leg import bridge_and_wait, ring_agent
from ivr.call_owners import CallOwners
from ivr.callbacks import CUSTOMER_LEG_ARG, CallbackDialer
from ivr.live_calls import LiveCall, LiveCalls
from ivr.reconcile import ReconcileMetrics, Reconciler
from ivr.supervision import SUPERVISOR_LEG_ARGS, Supervisions
from ivr.transfers import Moved, Transfers
from ivr.voice import CallerGone, VoiceSession
from ivr.waiting import CallbackKey, QueueWait
from recordings.calls import CallLegs, CallRecorder
from recordings.catalog import Recording
from recordings.flow import FlowRecording
from reports.survey import answers_of
from routing.engine import QueueClosed, RoutingEngine
from routing.model import Assignment, RoutingError
from routing.outbound import OutboundGuard, OutboundPolicy
from speech.listener import SpeechService
from speech.tts import PromptCache, voice_for

log = logging.getLogger(__name__)

# Identification never holds up a call: it waits this long (HILO_IDENTIFY_BUDGET_S), then the call goes on as
# not yet identified and the caller is identified when the store answers (ivr/inbound.py `_identify_late`).
IDENTIFY_BUDGET_S = 0.5
IDENTIFY_LATE_MAX_S = 600.0  # how long a late identification keeps trying a store that is down
IDENTIFY_RETRY_S = (0.5, 10.0)  # its first and longest pause between tries
LATE_POP_WAIT_S = 30.0  # the updated pop waits this long for the spool to write the link
FLOW_STORE_BUDGET_S = 2.0  # a flow's lookup or verification against the store; then as for an unknown caller
ROUTING_RETRY_S = (0.5, 5.0)  # first and longest pause between tries to queue a call while routing does not answer
# Said before Hilo itself ends a call it could not serve, so the caller is not met by silence.
TECHNICAL_PROBLEM_PROMPT = (
    "Sorry, we cannot take your call right now because of a technical problem. Please call again later."
)
APOLOGY_OUTCOMES = frozenset({"failed", "no-flow"})
HANDED_OFF_OUTCOMES = frozenset({"transferred"})  # the channel lives on in the dialplan: not ours to hang up
TRANSFER_CONTEXT = "hilo-transfer"  # asterisk/etc/extensions.conf
_PHONE_NUMBER = re.compile(r"^\+?[0-9]+$")  # a transfer target the dialplan sends out through the trunk
TRANSFER_RETURN_ARG = "transfer-failed"  # Stasis argument of a transferred call sent back by hilo-transfer-failed
VOICEMAIL_MAX_S = 120
VOICEMAIL_MAX_SILENCE_S = 5
OFFER_HOOK_DEADLINE_S = 0.5  # the screen-pop may never hold up ringing the agent for longer than this
# An answer ARI refuses while the caller cancels: this long for the channel to be seen going (then the call
# is the caller's abandon); a channel still there after it is a call that failed.
ANSWER_REFUSED_GONE_S = 2.0

# (interaction, agent id) -> awaited before the agent's phone rings, e.g. to push the screen-pop.
OfferHook = Callable[[Interaction, str], Awaitable[None]]


async def _no_offer_hook(interaction: Interaction, agent_id: str) -> None:
    return None


# (interaction, customer id, caller's E.164 number) of a caller identified as a new customer -> their name
# if an outside CRM told it within its time box (crm_bridge/connectors.py CallerEnrichment.on_new_caller).
NewCallerHook = Callable[[Interaction, uuid.UUID, str], Awaitable[str | None]]
NEW_CALLER_HOOK_DEADLINE_S = 2.0  # a cap over the hook's own time box, should it ever overrun


class RoutingUnavailable(RoutingError):
    """Routing did not answer for as long as the caller could wait in the queue."""


def _seen(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: asyncio does not log it as lost (whoever awaits the task still gets it)


@dataclass
class _Opened:
    """A call just opened: its interaction and caller (as `_begin` found them), and its flow with the opening
    being said meanwhile (`greeting`: ends with the node the flow goes on from)."""

    interaction: Interaction
    who: customers.Identification | None
    phone: str | None
    live: LiveFlows
    flow: Flow | None
    session: VoiceSession | None = None
    greeting: asyncio.Task[str] | None = None


@dataclass(frozen=True)
class NotQueued:
    """The queue refused the call (closed by its hours): the flow goes on at `node`, holding no place there."""

    node: str


@dataclass
class CallMetrics:
    started: Counter
    ended: Counter
    active: Gauge
    reconcile: ReconcileMetrics | None = None  # what the reconciler found and ended


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
        identify_budget_s: float = IDENTIFY_BUDGET_S,
        degradations: Degradations | None = None,
        reconcile_interval_s: float = 5.0,
        reconcile_grace_s: float = 10.0,
    ) -> None:
        self.ari = ari
        self.speech: SpeechService | None = None  # set by server.app: menus with `speech` listen through it
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
        self.identify_budget_s = identify_budget_s
        self.degradations = degradations or Degradations(CollectorRegistry())
        # The agent each live call's pop was last published to, and a lock so an updated pop (after a late
        # identification) is never overtaken by an older one still being published.
        self._pops: dict[uuid.UUID, tuple[str | None, asyncio.Lock]] = {}
        # Identifications in flight hold at most half the call path's connections: a stalled identification
        # query (a locked table) can then never take the ones routing and the timeline need.
        self._identify_slots = asyncio.Semaphore(max(1, pool.get_max_size() // 2))
        # Where Hilo may dial on its own (routing.yaml `outbound:`): callbacks and flows' transfers to numbers.
        self.outbound = OutboundGuard(OutboundPolicy(routing.outbound, default_region), engine.redis, engine.namespace)
        self.stasis = StasisRouter(self._on_new_call)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.live = LiveCalls(ari, timeline)  # calls with an agent now: hold, and the supervisors' way in
        self.owners: CallOwners | None = None  # the other workers' calls, when there are workers (server.app)
        self.supervisions = Supervisions(ari, self.stasis, self.live, ring_timeout_s=ring_timeout_s)
        # Booked callbacks are dialled by this node too (configured from settings by server.app).
        self.callbacks = CallbackDialer(
            ari=ari,
            stasis=self.stasis,
            pool=pool,
            timeline=timeline,
            engine=engine,
            on_offer=lambda interaction, agent_id: self.on_offer(interaction, agent_id),
            spawn=self._spawn,
            ring_timeout_s=ring_timeout_s,
            wrapup_s=wrapup_s,
        )
        self.callbacks.outbound = self.outbound
        # Agents handing their calls on, blind or after consulting (ivr/transfers.py).
        self.transfers = Transfers(
            ari=ari,
            stasis=self.stasis,
            engine=engine,
            timeline=timeline,
            live=self.live,
            on_offer=lambda interaction, agent_id: self.on_offer(interaction, agent_id),
            ring_timeout_s=ring_timeout_s,
            wrapup_s=wrapup_s,
        )
        # What is left of calls that are gone is ended by the reconciler: every few seconds, at every ARI
        # (re)connection, and for the routing rebuild (which asks which interactions vanished meanwhile).
        self.reconciler = Reconciler(
            pool=pool,
            engine=engine,
            timeline=timeline,
            channels=lambda: ari.request("GET", "/channels"),
            hang_up=ari.hangup,
            app=ari.app,
            handled=lambda: self.tasks.keys(),
            writes_pending=lambda: timeline.spool is not None and len(timeline.spool) > 0,
            metrics=metrics.reconcile,
            interval_s=reconcile_interval_s,
            grace_s=reconcile_grace_s,
        )
        engine.calls_gone = self.reconciler.gone
        self._transfer_returns: dict[str, asyncio.Future[str]] = {}  # channel -> "returned" | "ended"
        self._transfer_status: dict[str, str] = {}  # channel -> Dial's status of the failed transfer
        ari.handlers.append(self._on_transfer_event)  # before the router: a returning call is not a new one
        ari.handlers.append(self.stasis.handle)
        ari.on_connect.append(self.resync)
        ari.on_connect.append(self.callbacks.start)

    # -- entry ------------------------------------------------------------------------------------
    def _on_new_call(self, start: StasisStart) -> None:
        if start.args and start.args[0] in ("agent", CUSTOMER_LEG_ARG, *SUPERVISOR_LEG_ARGS):
            # A leg we originated and no longer track (e.g. an agent answered after the caller left): end it.
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
        await self.reconciler.close()
        await self.callbacks.close()
        await self.supervisions.close()
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    # -- the call ---------------------------------------------------------------------------------
    async def _begin(
        self,
        channel_id: str,
        raw_number: str,
        dialed: str,
        then: list[tuple[str, dict[str, Any]]] | None = None,
        context: dict[str, Any] | None = None,
    ) -> tuple[Interaction, customers.Identification | None, str | None]:
        """Open the call's interaction at once (its id is Hilo's, so nothing waits on the store for one) and
        identify the caller within the budget. The caller's identification, or None when the store did not
        answer in time: the call goes on as not yet identified (its interaction belongs to a stand-in
        customer) and the caller is identified in the background when the store answers. `then`: events
        written with the opening, after it; `context`: more of the interaction's context."""
        phone = self._phone(raw_number)
        who: customers.Identification | None = None
        identifying: asyncio.Task[customers.Identification] | None = None
        if phone is not None:
            identifying = asyncio.create_task(self._identify(phone))
            await asyncio.wait({identifying}, timeout=self.identify_budget_s)
            if identifying.done() and identifying.exception() is None:
                who = identifying.result()
        stand_in = who is None  # anonymous, or not identified yet: a customer of its own, made with the interaction
        # The opening events go with the interaction, in one transaction: the greeting waits on one commit.
        started = {"dialed": dialed, "channel_ref": channel_id}
        opening: list[tuple[str, dict[str, Any]]] = [("interaction.started", started)]
        if identifying is None:
            opening.append(("customer.identified", {"by": "anonymous", "new": True}))
        elif who is not None:
            opening.append(("customer.identified", {"by": "caller_number", "new": who.created}))
        opening.extend(then or ())
        interaction = await self.timeline.start_interaction(
            uuid.uuid4() if who is None else who.customer_id,
            "voice",
            "inbound",
            interaction_id=uuid.uuid4(),
            new_customer=stand_in,
            events=opening,
            dialed=dialed,
            channel_ref=channel_id,
            context={"caller_number": phone, "dialed": dialed, **(context or {})},
        )
        if identifying is None:
            who = customers.Identification(interaction.customer_id, None, created=True)
        elif who is None:
            assert phone is not None
            await self._degraded(interaction, "store", "identify")
            self._spawn(f"identify-{interaction.id}", self._identify_late(interaction, identifying, phone))
        return interaction, who, phone

    def _phone(self, raw_number: str) -> str | None:
        try:
            return identity.normalize("phone", raw_number, self.default_region)
        except identity.InvalidIdentity:
            return None

    async def _open(self, channel: ChannelState, raw_number: str, dialed: str) -> _Opened:
        """Open the call (`_begin`) while its flow's opening is said: the caller hears the first prompt at once,
        not after identification and the store's writes (flows/opening.py says which prompts need neither).
        `ivr.flow_started` is written with the interaction; the opening's own steps as soon as it is open."""
        live = self.live_flows()  # read once per call: a call keeps the version it began with
        flow = live.for_number(dialed)
        if flow is None:
            interaction, who, phone = await self._begin(channel.id, raw_number, dialed)
            return _Opened(interaction, who, phone, live, None)
        session = VoiceSession(
            self.ari,
            self.stasis,
            channel,
            self.prompts,
            voice=voice_for(flow.language, flow.voice),
            language=flow.language,
            speech=self.speech,
        )
        held: list[tuple[str, dict[str, Any]]] = []
        recorded_on: Interaction | None = None

        async def record(type_: str, data: dict[str, Any]) -> None:
            if recorded_on is None:
                held.append((type_, data))  # the interaction is not open yet: written, in order, once it is
            else:
                await self.timeline.record(recorded_on, type_, data)

        before = FlowContext(caller_number=self._phone(raw_number), record=record, flows=live.flows)
        greeting = asyncio.create_task(say_opening(flow, session, before), name=f"opening-{channel.id}")
        greeting.add_done_callback(_seen)  # a call that ends before it goes on never awaits it
        try:
            interaction, who, phone = await self._begin(
                channel.id,
                raw_number,
                dialed,
                then=[("ivr.flow_started", {"flow": flow.flow, "version": live.version})],
                # e.g. the language of the call's transcripts
                context={"flow_version": live.version, "flow_language": flow.language},
            )
            while held:  # steps held while this writes are appended to `held` and written too
                type_, data = held.pop(0)
                await self.timeline.record(interaction, type_, data)
            recorded_on = interaction
        except BaseException:
            greeting.cancel()
            await asyncio.gather(greeting, return_exceptions=True)
            raise
        return _Opened(interaction, who, phone, live, flow, session, greeting)

    async def _identify(self, phone: str) -> customers.Identification:
        async with self._identify_slots:
            return await identity.identify_or_create(self.pool, "phone", phone)

    async def _identify_late(
        self, interaction: Interaction, identifying: asyncio.Task[customers.Identification], phone: str
    ) -> None:
        """The caller identified after the call began: the interaction is linked to the customer (a
        `customer.identified` event with `late: true`) and the agent's pop, if any, is published again."""
        loop = asyncio.get_running_loop()
        give_up, pause = loop.time() + IDENTIFY_LATE_MAX_S, IDENTIFY_RETRY_S[0]
        while True:
            try:
                who = await identifying
                break
            except STORE_DOWN as exc:
                if loop.time() > give_up:
                    log.error("interaction %s: the caller could not be identified: %s", interaction.id, exc)
                    return
            except Exception:
                log.exception("interaction %s: identifying the caller failed", interaction.id)
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, IDENTIFY_RETRY_S[1])
            identifying = asyncio.create_task(self._identify(phone))
        event = await self.timeline.identified_late(
            interaction, who.customer_id, {"by": "caller_number", "new": who.created, "late": True}
        )
        if event["id"] is None and not await self.timeline.written(LATE_POP_WAIT_S):
            return  # still in the spool: the next pop will show the customer
        await self._refresh_pop(interaction)
        if who.created and self.on_new_caller is not None:
            await self._enrich_new_caller(interaction, who, phone)  # the outside CRM, for the record

    async def _enrich_new_caller(
        self, interaction: Interaction, who: customers.Identification | None, phone: str | None
    ) -> customers.Identification | None:
        """A caller new to Hilo may be known to the company's CRM. The hook waits at most its time box (a
        slower CRM enriches the customer later, in the background) and can never fail the call. A name that
        came in time makes the caller known to the flow, which greets them by it."""
        if self.on_new_caller is None or who is None or not who.created or phone is None:
            return who
        try:
            name = await asyncio.wait_for(
                self.on_new_caller(interaction, who.customer_id, phone), NEW_CALLER_HOOK_DEADLINE_S
            )
        except Exception:
            log.exception("new-caller hook failed for interaction %s", interaction.id)
            return who
        return who if name is None else replace(who, display_name=name, created=False)

    async def _degraded(self, interaction: Interaction, part: str, what: str) -> None:
        """A moment the call went on without a dependency: counted, and on the call's timeline (the caller
        hears nothing of it)."""
        self.degradations.note(part, what, f"interaction {interaction.id}")
        await self.timeline.record(interaction, "call.degraded", {"part": part, "what": what})

    async def _run_call(self, start: StasisStart) -> None:
        channel = self.stasis.watch(start.channel.id)
        dialed = start.args[0] if start.args else start.channel.dialplan.exten
        self.metrics.started.inc()
        self.metrics.active.inc()
        interaction: Interaction | None = None
        opened: _Opened | None = None
        outcome, hangup_by = "failed", "system"
        try:
            await self._answer(channel)
            opened = await self._open(channel, start.channel.caller.number, dialed)
            interaction = opened.interaction
            self._pops[interaction.id] = (None, asyncio.Lock())
            identification = await self._enrich_new_caller(interaction, opened.who, opened.phone)
            outcome, hangup_by = await self._journey(channel, opened, identification)
        except CallerGone as gone:
            outcome, hangup_by = ("dropped", "system") if gone.reason == "lost" else ("abandoned", "caller")
        except asyncio.CancelledError:
            outcome, hangup_by = "dropped", "system"
            raise
        except Exception:
            log.exception("call %s failed", channel.id)
        finally:
            if opened is not None and opened.greeting is not None:
                opened.greeting.cancel()  # ended already, unless the call ended before the flow went on
            if interaction is not None:
                self._pops.pop(interaction.id, None)
            await self._finish(channel, interaction, outcome, hangup_by)

    async def _answer(self, channel: ChannelState) -> None:
        """Answer the call. A caller who hangs up (CANCEL) as Hilo answers makes ARI refuse the answer (404,
        409: the channel is going): that call is the caller's abandon, not a failure, once its channel is seen
        gone within ANSWER_REFUSED_GONE_S."""
        try:
            await self.ari.answer(channel.id)
        except AriError as refused:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(channel.gone.wait(), ANSWER_REFUSED_GONE_S)
            if not channel.gone.is_set() and await self.ari.get_channel(channel.id) is None:
                channel.mark_gone("hangup")  # gone, its StasisEnd not come (yet)
            if not channel.gone.is_set():
                raise
            log.info("call %s: the caller hung up before the answer (%s)", channel.id, refused)
            raise CallerGone(channel.gone_reason) from None

    async def _journey(
        self, channel: ChannelState, opened: _Opened, who: customers.Identification | None
    ) -> tuple[str, str]:
        interaction, live, flow, session = opened.interaction, opened.live, opened.flow, opened.session
        dialed = interaction.context.get("dialed", "")
        if flow is None or session is None or opened.greeting is None:
            log.error("no flow answers number %s (numbers.yaml, flow version %s)", dialed, live.version)
            await self.timeline.record(interaction, "ivr.no_flow", {"dialed": dialed, "version": live.version})
            return "no-flow", "system"
        resume = await opened.greeting  # the opening said (CallerGone if the caller left meanwhile)

        async def record(type_: str, data: dict[str, Any]) -> None:
            await self.timeline.record(interaction, type_, data)

        # A customer made just now is not "known" yet: the flow greets them as new; so is a caller the store
        # has not identified yet (`who` None), and the flow's lookups then behave as for an unknown caller.
        customer = None if who is None or who.created else {"id": str(who.customer_id), "name": who.display_name}
        context = FlowContext(
            caller_number=interaction.context.get("caller_number"),
            channel="voice",
            customer=customer,
            flows=live.flows,
            services=FlowServices(
                lookup_customer=self._within_budget(
                    interaction,
                    "lookup",
                    partial(flow_services.lookup_customer, self.pool, default_region=self.default_region),
                    None,
                ),
                calendars=live.calendars,
                verify_customer=self._within_budget(
                    interaction, "verify", partial(flow_services.verify_customer, self.pool), False
                ),
            ),
            record=record,
            # `record` and `consent` nodes (recordings/flow.py); none when nothing is recorded here
            recording=FlowRecording(self.recorder, self.stasis, interaction, channel.id, self._spawn)
            if self.recorder is not None
            else None,
        )
        context.services.save_survey_answer = answers_of(self.pool, self.timeline.publish, interaction.id)
        outcome = await run_flow(flow, session, context, start=resume)
        # Set while the interaction still holds its place in a queue after the wait there ended (the
        # caller asked for a callback, or waited too long) and the flow goes on: a callback booked then
        # keeps the place; any other end of the flow gives it up.
        kept: list[str] = []
        try:
            while True:
                # What the caller told the IVR travels with the interaction: to routing, the agent, a
                # transfer. Secret answers (PINs, dates of birth) are masked: they never leave the flow.
                collected = {
                    k: v for k, v in outcome.shown_variables().items() if k not in ("caller", "customer", "now")
                }
                interaction.context["ivr"] = {"flow": outcome.flow, "node": outcome.node, "variables": collected}
                session.check_alive()
                node = live.flows[outcome.flow].nodes.get(outcome.node) if outcome.flow in live.flows else None
                if outcome.action == "callback":
                    queue = interaction.context.get("queue") if kept else getattr(node, "queue", None)
                    booked = await self._book_callback(interaction, queue, keeps_place=bool(kept))
                    kept.clear()  # the place is the callback's now (or given up if it could not be booked)
                    return booked
                if kept:
                    await self._leave_queue(kept.pop(), "timeout")
                if outcome.action == "queue" and outcome.target:
                    ended = await self._queue_call(session, channel, interaction, outcome, node)
                    if isinstance(ended, NotQueued):
                        context.variables = collected
                        outcome = await run_flow(live.flows[outcome.flow], session, context, start=ended.node)
                        continue
                    if isinstance(ended, tuple):
                        after = node.after_agent if isinstance(node, QueueNode) else None
                        if after is not None and ended == ("completed", "agent") and not channel.gone.is_set():
                            context.variables = collected
                            await self._after_agent(session, context, live.flows[outcome.flow], after)
                        return ended
                    kept.append(str(interaction.id))
                    context.variables = collected
                    outcome = await run_flow(live.flows[outcome.flow], session, context, start=ended)
                    continue
                if outcome.action == "hangup":
                    return "ivr-ended", "system"
                if outcome.action == "error":
                    return "failed", "system"
                if outcome.action == "voicemail":
                    return await self._take_voicemail(session, channel, interaction)
                if outcome.action == "transfer" and outcome.target:
                    handed = await self._transfer(
                        channel, interaction, outcome.target, getattr(node, "on_failure", None)
                    )
                    if isinstance(handed, tuple):
                        return handed
                    context.variables = collected
                    outcome = await run_flow(live.flows[outcome.flow], session, context, start=handed)
                    continue
                await record("ivr.flow_error", {"reason": f"outcome {outcome.action!r} without a target"})
                return "failed", "system"
        finally:
            if kept:  # the caller left (or the call failed) while the flow went on: the place goes
                await self._leave_queue(kept.pop(), "abandoned" if channel.gone.is_set() else "ended")

    async def _queue_call(
        self, session: VoiceSession, channel: ChannelState, interaction: Interaction, outcome: Outcome, node: Any
    ) -> tuple[str, str] | str | NotQueued:
        """Queue the call and connect it to an agent: the call's end, or the node where the flow goes on
        (still holding its place in the queue) after the callback key or the end of the wait, or (holding no
        place) because the queue is closed."""
        assert outcome.target is not None
        interaction.context["queue"] = outcome.target
        await self.timeline.update(interaction, state="queued", queue=outcome.target)
        await self.timeline.record(
            interaction, "routing.queued", {"queue": outcome.target, "priority": outcome.priority}
        )
        callback = None
        offer_spec = node.callback_offer if isinstance(node, QueueNode) else None
        if offer_spec is not None:
            text = render(offer_spec.prompt, outcome.variables)
            callback = CallbackKey(offer_spec.every_s, offer_spec.key, text)
        return await self._connect_to_agent(
            session,
            channel,
            interaction,
            outcome.target,
            outcome.priority,
            max_wait_s=node.max_wait_s if isinstance(node, QueueNode) else None,
            on_timeout=node.on_timeout if isinstance(node, QueueNode) else None,
            on_closed=node.on_closed if isinstance(node, QueueNode) else None,
            callback=callback,
            callback_next=offer_spec.next if offer_spec is not None else None,
        )

    async def _after_agent(self, session: VoiceSession, context: FlowContext, flow: Flow, start: str) -> None:
        """The agent hung up first and the caller is still there: the flow goes on at the queue node's
        `after_agent` (e.g. a post-call survey). The call keeps its outcome (completed, ended by the agent);
        how this part ends, even the caller hanging up, changes nothing."""
        try:
            await run_flow(flow, session, context, start=start)
        except CallerGone:
            pass

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

    async def _book_callback(
        self, interaction: Interaction, queue: str | None, *, keeps_place: bool
    ) -> tuple[str, str]:
        """Store the callback before the caller hears it confirmed. `keeps_place`: the interaction still
        waits in `queue` at its place, and the callback dialler (ivr/callbacks.py) calls when an agent is
        offered it; otherwise it is queued now (when the callback node names a queue)."""
        iid = str(interaction.id)
        number = interaction.context.get("caller_number")
        if not number:  # withheld or unusable caller number: nobody to call back
            await self.timeline.record(interaction, "callback.refused", {"reason": "no caller number"})
            if keeps_place:
                await self._leave_queue(iid, "callback-refused")
            return "callback-unavailable", "system"
        # Caller ids are easy to fake: a premium, foreign or too often booked number is never booked (so never
        # dialled); the reason is on the timeline.
        refusal = await self.outbound.callback_refusal(number)
        if refusal is not None:
            await self.timeline.record(interaction, "callback.refused", {"reason": refusal})
            if keeps_place:
                await self._leave_queue(iid, "callback-refused")
            return "callback-unavailable", "system"
        booked = await self.pool.fetchval(
            "INSERT INTO callbacks (interaction_id, customer_id, number, queue, context, max_attempts)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (interaction_id) DO NOTHING RETURNING id",
            interaction.id,
            interaction.customer_id,
            number,
            queue,
            interaction.context,
            self.callbacks.max_attempts,
        )
        # The pop of the callback shows the booking (kept with the interaction when the call ends).
        interaction.context["callback"] = {"id": booked, "number": number, "queue": queue, "keeps_place": keeps_place}
        await self.timeline.record(
            interaction,
            "callback.requested",
            {"callback_id": booked, "number": number, "queue": queue, "keeps_place": keeps_place},
        )
        if queue is not None and not keeps_place:
            try:
                await self.engine.enqueue(iid, queue)
            except RoutingError as exc:  # e.g. the queue is closed now: the booking stays for a person to see
                log.warning("callback %s cannot be queued to %s: %s", booked, queue, exc)
                await self.timeline.record(interaction, "routing.refused", {"queue": queue, "reason": str(exc)})
        return "callback-requested", "system"

    async def _transfer(
        self, channel: ChannelState, interaction: Interaction, target: str, on_failure: str | None = None
    ) -> tuple[str, str] | str:
        """Hand the call to the dialplan's transfer context; the interaction id goes with it as a channel
        variable, so whoever takes the call can fetch everything the caller already said. With `on_failure`,
        a target that does not answer sends the call back here (hilo-transfer-failed in extensions.conf) and
        that node is returned, for the flow to go on; a transfer that was answered ends the call's part here
        when the channel ends. A phone number the outbound policy refuses is not dialled (`ivr.transfer_refused`
        with the reason): the flow goes on at `on_failure`, or the call ends."""
        if _PHONE_NUMBER.fullmatch(target):
            refusal = self.outbound.refusal(target)
            if refusal is not None:
                await self.timeline.record(interaction, "ivr.transfer_refused", {"to": target, "reason": refusal})
                return on_failure if on_failure is not None else ("transfer-refused", "system")
        interaction.context["transfer"] = {"to": target}
        await self.timeline.update(interaction, state="transferred")
        await self.timeline.record(interaction, "ivr.transfer", {"to": target})
        back: asyncio.Future[str] | None = None
        if on_failure is not None:
            back = self._transfer_returns[channel.id] = asyncio.get_running_loop().create_future()
            await self.ari.set_variable(channel.id, "HILO_TRANSFER_RETURN", TRANSFER_RETURN_ARG)
            await self.ari.set_variable(channel.id, "HILO_OWNER", self.ari.app)  # back to this worker's app
            await self.ari.subscribe(f"channel:{channel.id}")  # its ChannelDestroyed after it left the app
        try:
            await self.ari.set_variable(channel.id, "HILO_INTERACTION", str(interaction.id))
            await self.ari.continue_in_dialplan(channel.id, TRANSFER_CONTEXT, target)
            if back is None or await back != "returned":
                return "transferred", "system"
        finally:
            self._transfer_returns.pop(channel.id, None)
        # The same channel is back in the app: it is the caller again, not gone.
        channel.gone.clear()
        channel.gone_reason = ""
        channel.digits.clear()
        status = self._transfer_status.pop(channel.id, "")
        interaction.context["transfer"] = {"to": target, "failed": status}
        await self.timeline.update(interaction, state="ivr")
        await self.timeline.record(interaction, "ivr.transfer_failed", {"to": target, "status": status})
        assert on_failure is not None  # only then does the call come back
        return on_failure

    def _on_transfer_event(self, event: Event) -> None:
        """A transferred call coming back (its target did not answer) or ending (it did)."""
        if not isinstance(event, StasisStart | ChannelDestroyed):
            return
        waiting = self._transfer_returns.get(event.channel.id)
        if waiting is None or waiting.done():
            return
        if isinstance(event, StasisStart) and event.args[:1] == [TRANSFER_RETURN_ARG]:
            self._transfer_status[event.channel.id] = event.args[2] if len(event.args) > 2 else ""
            waiting.set_result("returned")
        elif isinstance(event, ChannelDestroyed):
            waiting.set_result("ended")

    async def _connect_to_agent(
        self,
        session: VoiceSession,
        channel: ChannelState,
        interaction: Interaction,
        queue: str,
        priority: int = 0,
        *,
        max_wait_s: int | None = None,
        on_timeout: str | None = None,
        on_closed: str | None = None,
        callback: CallbackKey | None = None,
        callback_next: str | None = None,
    ) -> tuple[str, str] | str | NotQueued:
        loop = asyncio.get_running_loop()
        config = self.engine.queues.get(queue) or self.queues.get(queue)
        wait_s = max_wait_s or (config.max_wait_s if config else None) or self.queue_max_wait_s
        deadline = loop.time() + wait_s
        iid = str(interaction.id)
        try:
            offer: Assignment | None = await self._enqueue(session, interaction, queue, priority, deadline)
        except BaseException as exc:
            # Whatever an attempt left in routing goes with it (one whose record failed after Redis had queued
            # it; then the caller left, or routing did not answer again in time): nobody waits there for nobody.
            await self._leave_queue(iid, "abandoned" if channel.gone.is_set() else "failed")
            if not isinstance(exc, RoutingError):
                raise
            await self.timeline.record(interaction, "routing.refused", {"queue": queue, "reason": str(exc)})
            if isinstance(exc, QueueClosed):  # as designed: the flow's on_closed, else the queue's closed prompt
                log.info("call %s: queue %s is closed now", channel.id, queue)
                if on_closed:
                    return NotQueued(on_closed)
                session.check_alive()
                await session.say(config.closed_prompt if config else TECHNICAL_PROBLEM_PROMPT, interruptible=False)
                return "closed", "system"
            # e.g. the queue was deleted since the flow was applied
            log.warning("call %s cannot be queued to %s: %s", channel.id, queue, exc)
            return "failed", "system"
        wait = QueueWait(
            self.ari,
            session,
            self.engine,
            iid,
            announce=config.announce if config else None,
            callback=callback,
            on_degraded=partial(self._degraded, interaction),
        )
        talking = keep_place = False
        try:
            while True:
                session.check_alive()
                if offer is None:
                    ended = await wait.until_offer(deadline)
                    if ended.kind == "callback" and callback_next:
                        await wait.unhold()
                        await self.timeline.record(
                            interaction, "routing.callback_chosen", {"queue": queue, "next": callback_next}
                        )
                        keep_place = True
                        return callback_next
                    if ended.kind == "timeout":
                        keep_place = on_timeout is not None  # until the flow's end says otherwise
                        break
                    offer = ended.offer
                    if offer is None:
                        continue
                agent_id = offer.agent_id
                await self.timeline.record(interaction, "routing.offered", {"agent": agent_id, "queue": offer.via})
                await self._before_ringing(interaction, agent_id)
                # Right before the phone rings: the caller still there (else the finally frees the agent), the
                # offer still standing (not withdrawn, expired or moved meanwhile: back to waiting for routing).
                session.check_alive()
                if not await self.engine.holds_offer(iid, agent_id):
                    log.warning("interaction %s: the offer to %s was withdrawn before ringing", iid, agent_id)
                    offer = None
                    continue
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
                    offer = None
                    if channel.gone.is_set():
                        continue  # the caller left while it rang: not the agent's fault
                    # Not answered: routing rests the agent (away) and puts the caller back in their place.
                    await self.timeline.record(interaction, "routing.not_answered", {"agent": agent_id})
                    offer = await self.engine.not_answered(iid, agent_id)
                    continue
                leg = answered.channel
                if channel.gone.is_set():  # the caller left as the agent answered: no talk, no wrap-up
                    await self._hang_up_leg(leg)
                    continue
                while True:
                    talked = await self._talk(channel, interaction, agent_id, leg, wait.on_hold)
                    if not isinstance(talked, Moved):
                        talking = True
                        return talked
                    wait.on_hold = talked.on_hold
                    if talked.leg is None or talked.agent_id is None:
                        break
                    agent_id, leg = talked.agent_id, talked.leg  # attended: the new agent is on the line
                # Blind: the caller waits again (in the target queue), or rings the agent it was offered to.
                queue, offer = talked.queue or queue, talked.offer
                config = self.engine.queues.get(queue) or self.queues.get(queue)
                wait_s = (config.max_wait_s if config else None) or self.queue_max_wait_s
                deadline = loop.time() + wait_s
                wait.announce = config.announce if config else None
        finally:
            if wait.on_hold and not talking:
                await wait.unhold()
            if not talking and not keep_place:  # out of the queue (an agent it was offered to is free again)
                await self._leave_queue(iid, "abandoned" if channel.gone.is_set() else "timeout")
        await self.timeline.record(interaction, "routing.timeout", {"queue": queue, "waited_s": wait_s})
        if on_timeout:
            return on_timeout  # the flow goes on, still holding the place (the journey gives it up if need be)
        session.check_alive()
        await session.say(config.no_agent_prompt if config else TECHNICAL_PROBLEM_PROMPT, interruptible=False)
        return "no-agent", "system"

    async def _enqueue(
        self, session: VoiceSession, interaction: Interaction, queue: str, priority: int, deadline: float
    ) -> Assignment | None:
        """Queue the call with routing. While routing (Redis, or its record in PostgreSQL) does not answer, the
        caller hears the queue's music and routing is asked again, until the wait's `deadline`: then
        RoutingUnavailable (the call is not dropped for a routing that is slow or away a while)."""
        loop = asyncio.get_running_loop()
        pause, held = ROUTING_RETRY_S[0], False
        try:
            while True:
                try:
                    return await self.engine.enqueue(str(interaction.id), queue, priority=priority)
                except DOWN as exc:
                    if not held:
                        await self._degraded(interaction, part_of(exc), "enqueue")
                        await self.ari.start_moh(session.channel.id)
                        held = True
                    if loop.time() + pause > deadline:
                        raise RoutingUnavailable(f"routing did not answer until the end of the wait ({exc!r})") from exc
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(session.channel.gone.wait(), pause)
                session.check_alive()
                pause = min(pause * 2, ROUTING_RETRY_S[1])
        finally:
            if held and not session.channel.gone.is_set():
                await self.ari.stop_moh(session.channel.id)  # the wait's own music takes over

    async def _leave_queue(self, interaction_id: str, reason: str) -> None:
        try:
            await self.engine.remove(interaction_id, reason)
        except Exception:  # never hide why the call is ending; the reconciler ends what is left of it
            log.exception("could not take interaction %s out of routing", interaction_id)

    async def _hang_up_leg(self, leg: ChannelState) -> None:
        with contextlib.suppress(Exception):  # gone already, or Asterisk unreachable: it times out on its own
            await self.ari.hangup(leg.id)
        self.stasis.forget(leg.id)

    async def _before_ringing(self, interaction: Interaction, agent_id: str) -> None:
        _, lock = self._pops.get(interaction.id) or (None, asyncio.Lock())
        self._pops[interaction.id] = (agent_id, lock)
        try:
            async with lock:
                await asyncio.wait_for(self.on_offer(interaction, agent_id), OFFER_HOOK_DEADLINE_S)
        except Exception:  # the pop failing must never cost the caller the agent
            log.exception("offer hook failed for interaction %s", interaction.id)

    async def _refresh_pop(self, interaction: Interaction) -> None:
        """Publish the pop again to the agent the live call was last offered to (e.g. the caller is known
        now); after any pop still being published for it."""
        agent_id, lock = self._pops.get(interaction.id) or (None, None)
        if agent_id is None or lock is None:
            return  # not offered yet (its pop will show the customer), or over
        try:
            async with lock:
                await asyncio.wait_for(self.on_offer(interaction, agent_id), LATE_POP_WAIT_S)
        except Exception:
            log.exception("could not update the pop of interaction %s", interaction.id)

    def _within_budget(
        self, interaction: Interaction, what: str, ask: Callable[..., Awaitable[Any]], otherwise: Any
    ) -> Callable[..., Awaitable[Any]]:
        """A flow's question to the customer store, answered within FLOW_STORE_BUDGET_S; past that (or with
        the store down) the answer is `otherwise` (nobody found, not verified), as for an unknown caller."""

        async def asked(*args: Any) -> Any:
            try:
                return await asyncio.wait_for(ask(*args), FLOW_STORE_BUDGET_S)
            except STORE_DOWN:
                await self._degraded(interaction, "store", what)
                return otherwise

        return asked

    async def _talk(
        self,
        channel: ChannelState,
        interaction: Interaction,
        agent_id: str,
        agent_leg: ChannelState,
        on_hold: bool,
    ) -> tuple[str, str] | Moved:
        talked = False
        bridge_id = f"{self.ari.app}-bridge-{interaction.id}"
        if handed := len(interaction.context.get("transfers") or []):
            bridge_id += f"-{handed}"  # after a transfer: the previous bridge may still be on its way out
        recording: Recording | None = None

        async def connected() -> None:
            nonlocal talked, recording
            talked = True
            await self.timeline.update(interaction, state="connected", agent_id=agent_id, answered_at=datetime.now(UTC))
            # Live before it is announced: whoever hears `agent.answered` may hold or supervise the call at once.
            self.live.add(LiveCall(interaction, agent_id, channel, agent_leg, bridge_id))
            await self.timeline.record(interaction, "agent.answered", {"agent": agent_id})
            if self.recorder is not None:  # the conversation, from the moment they are bridged (never fails the call)
                legs = CallLegs(self.stasis, caller=channel.id, agent=agent_leg.id)  # if the queue records legs
                recording = await self.recorder.start_call(interaction, bridge_id, agent_id, legs)

        async def stop_recording() -> None:
            if recording is not None and self.recorder is not None:
                await self.recorder.stop(recording)

        try:  # from the answer on, whatever fails, the agent's leg is hung up and routing lets the agent go
            try:
                took = await self.engine.answered(str(interaction.id), agent_id)
            except DOWN as exc:  # the agent has picked up: they talk, and routing hears of it when it answers again
                await self._degraded(interaction, part_of(exc), "answered")
                took = True
            if not took:
                log.warning("interaction %s: the offer to %s was withdrawn before the answer", interaction.id, agent_id)
            interaction.context.update({"agent_channel_ref": agent_leg.id})
            if on_hold:
                await self.ari.stop_moh(channel.id)
            hangup_by = await bridge_and_wait(self.ari, channel, agent_leg, bridge_id, connected, stop_recording)
        finally:
            await self.live.ended(str(interaction.id))  # no more hold or supervision (a held caller's music stops)
            moved = await self.transfers.handoff(str(interaction.id))  # transferred: the caller goes on
            await self._hang_up_leg(agent_leg)
            if moved is None:  # a transfer has released the agent already
                # no wrap-up after a call that never connected (the caller left as the agent answered)
                self._spawn_release(str(interaction.id), self.wrapup_s if talked else 0)
            if recording is not None and self.recorder is not None:
                # The bridge is gone, so Asterisk is closing the file: it is encrypted and stored beside the call's end.
                self._spawn(f"recording-{recording.id}", self.recorder.finish_call(recording))
        if talked:  # the agent's part ends here, even if the caller stays on (a post-call survey)
            await self.timeline.record(interaction, "agent.call_ended", {"agent": agent_id, "hangup_by": hangup_by})
        if moved is not None:
            if not channel.gone.is_set():
                return moved
            await self._leave_queue(str(interaction.id), "abandoned")  # transferred, then the caller left
            if moved.leg is not None:  # an attended transfer's new agent, on the line for nobody now
                await self._hang_up_leg(moved.leg)
        if hangup_by == "system":
            return "dropped", hangup_by
        return ("completed" if talked else "abandoned"), hangup_by

    def _spawn_release(self, interaction_id: str, wrapup_s: float) -> None:
        # The agent gets the wrap-up period routing then ends on its own (its tick), then the next call.
        self._spawn(f"release-{interaction_id}", self.engine.release(interaction_id, wrapup_s))

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
        except Exception as exc:  # whatever it was, the interaction below is still closed
            log.warning("could not hang up %s: %s", channel.id, exc)
        finally:
            self.stasis.forget(channel.id)
        if interaction is not None:
            try:
                await self.timeline.end_interaction(interaction, outcome, hangup_by)
            except Exception:  # the store failing now: the reconciler closes it once the grace is over
                log.exception("could not close interaction %s (%s)", interaction.id, outcome)

    async def _apologise(self, channel: ChannelState) -> None:
        session = VoiceSession(self.ari, self.stasis, channel, self.prompts, voice=voice_for("en", None), language="en")
        try:
            await asyncio.wait_for(session.say(TECHNICAL_PROBLEM_PROMPT, interruptible=False), 10)
        except Exception:  # already failing: the apology is best effort, the hang-up must still happen
            log.warning("could not play the apology on %s", channel.id)

    # -- resync after a reconnect -----------------------------------------------------------------
    async def resync(self) -> None:
        """Asterisk does not replay the events missed while the socket was down: calls whose channel left
        the app are marked gone (their tasks end them), channels in the app that no task handles are hung up,
        and the reconciler runs at once (interactions and routing left behind by calls that are gone)."""
        self.reconciler.start()
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
        self.reconciler.wake()


CALLS = web.AppKey("calls", InboundCalls)
