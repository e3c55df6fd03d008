"""Text conversations: the conversation layer behind SMS, WhatsApp and web chat.

`Conversations` is the bridges' `InboundHandler`. For each stored inbound message it finds the customer
(the same one as their phone number: crm_bridge/identity.py), the open conversation of that address (or
starts one: an interaction of channel sms|whatsapp|webchat), and then, by the conversation's state:

- bot: the flow answers (bridges/conversation_flow.py runs it one turn further);
- message: the flow ended in `voicemail`; this message is the customer's written message;
- queued / offered / agent: the flow is silent; the message goes to the agent's console.

A message is handled once (its id is stored with the decision, in one transaction, under a lock on the
conversation's address); replies are written in that same transaction and handed to the outbox in it too
(the outbox row and the reply row commit together, the outbox keyed by the reply row: one send per reply).
A secret the message answered (a PIN, a date of birth) is masked in the stored message in that transaction.

One database connection per message, never two: the transaction's connection is held while the flow runs,
so the flow's customer lookups and verifications, and the outbox, use that same connection. A handler that
held one connection while waiting for a second could deadlock the pool: with the pool's 10 connections held
by 10 of the inbox's concurrent handlers (16), each would wait for an 11th forever. With one connection each,
a handler waits only for a connection it does not yet hold, so the pool cannot deadlock, whatever the pool
size and the inbox's concurrency (those only set how many wait). `_after` (after the commit) uses the pool
again, one connection at a time.

Nodes that only make sense on a call get a text equivalent on a conversation:
- voicemail: the prompt is sent, then the customer's next message is kept as their message
  (`voicemail.recorded` with the text) and the conversation ends;
- callback: booked as on a call when the customer wrote from a phone number (SMS, WhatsApp), with a
  confirmation naming the number; a web chat has no number, so it is refused politely;
- transfer: a chat cannot be transferred to a phone number: the customer is asked to call it instead.

Escalation goes through the routing engine like a call (channel sms|whatsapp|webchat, so an agent's
per-channel capacity counts). The offer reaches the agent's console as a screen-pop; the agent accepts
it, replies, hands the conversation back to the flow (which starts again from its start) or closes it
(routing releases the agent, who then wraps up).

The post-chat survey: when the agent closes a conversation whose flow's queue node has `after_agent`, the
flow goes on at that node over text (state `survey`: e.g. a `survey` node asks each question as a message)
in a new run of the conversation, replayed like any other, on the agent's interaction (which has ended:
the answers are recorded on it, as on a call). The run's start is kept in the journal's first entry. A
customer who does not answer within `survey_wait_s` is left alone: the conversation ends without a word.
A hand-back is not a close: no survey then."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from bridges import conversation_store as store
from bridges.channels import Channels
from bridges.conversation_flow import Reply, TurnResult, run_turn
from bridges.conversation_store import Conversation, ConversationError
from bridges.messages import (
    Choice,
    InboundMessage,
    Outbox,
    OutsideWindow,
)
from crm_bridge import flow_services, identity
from crm_bridge.customers import Identification
from crm_bridge.timeline import Interaction, Publish, event_json
from dialplans.models import Outbound
from flows.engine import FlowServices, Outcome
from flows.runtime import LiveFlows
from flows.schema import Queue as QueueNode
from hilo import audit
from reports.survey import SURVEY_ANSWER
from routing.engine import NotQueued, RoutingEngine
from routing.model import Assignment, RoutingError
from routing.outbound import OutboundGuard, OutboundPolicy

if TYPE_CHECKING:
    from hilo.db import Conn

log = logging.getLogger(__name__)

IDLE_RESTART = dt.timedelta(hours=24)  # a bot conversation left this long starts again from the flow's start
DEFAULT_FLOW = "demo"  # until a channel names its flow
FAILED_TEXT = "Sorry, something went wrong on our side. Please write again later."
NO_AGENT_TEXT = "Sorry, no agent is available right now. Please write again later."
MESSAGE_PROMPT = "Please write your message here and we will get back to you."
MESSAGE_TAKEN = "Thank you, we have your message."
CALLBACK_REFUSED_TEXT = "We cannot call this number back. Please call us, or write here and an agent will answer."
WEBCHAT_NO_CALLBACK = "We cannot call you back from a web chat. Please call us, or write here and an agent will answer."
TEXT_LIMIT = 4096  # one message shown or sent; longer agent replies are refused
OFFER_TIMEOUT_S = 60.0  # an agent accepts an offered conversation within this, else it goes back to the queue
SURVEY_WAIT_S = 3600.0  # a post-chat survey left unanswered this long ends quietly


def _transfer_text(target: str) -> str:
    if target.startswith("+"):
        return f"This request cannot continue in a chat. Please call {target}."
    return "This request cannot continue in a chat. Please call us."


# The first message of a conversation -> the flow id that answers it (dialplans/channels.yaml by the
# message's channel_name); None = DEFAULT_FLOW.
FlowPicker = Callable[[InboundMessage], str | None]


def _demo_flow(message: InboundMessage) -> str | None:
    return None


def flow_by_channel(channels: Channels) -> FlowPicker:
    """The flow of the channels.yaml entry the message arrived on (a web chat site's `webchat` entry; none:
    DEFAULT_FLOW)."""

    def pick(message: InboundMessage) -> str | None:
        config = channels.by_name(message.channel_name) if message.channel_name else None
        return config.flow if config is not None else None

    return pick


@dataclass
class _Work:
    """What a transaction decided that is done after it commits."""

    events: list[dict[str, Any]]
    conversation: Conversation | None = None
    enqueue: bool = False
    verified: list[str] = field(default_factory=list)  # customers the turn's verification proved
    callback_queue: str | None = None  # a callback booked for this queue: routing offers it to the dialler


# The agent's console, as the root wires it (console/screenpop.py for both voice and text): the screen-pop
# published before an offer rings, and anything else said to one agent's console.
OfferHook = Callable[[Interaction, str], Awaitable[None]]
TellAgent = Callable[[str, dict[str, Any]], Awaitable[None]]


class Conversations:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        namespace: str,
        publish: Publish,
        engine: RoutingEngine,
        outbox: Outbox,
        live_flows: Callable[[], LiveFlows],
        on_offer: OfferHook,
        tell_agent: TellAgent,
        pick_flow: FlowPicker = _demo_flow,
        default_region: str = "ES",
        offer_timeout_s: float = OFFER_TIMEOUT_S,
        wrapup_s: float = 0.0,
        queue_max_wait_s: int = 300,
        sweep_s: float = 1.0,
        outside: FlowServices | None = None,
        survey_wait_s: float = SURVEY_WAIT_S,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.namespace = namespace
        self.publish = publish
        self.engine = engine
        self.outbox = outbox
        self.live_flows = live_flows
        self.pick_flow = pick_flow
        self.default_region = default_region
        self.offer_timeout_s = offer_timeout_s
        self.wrapup_s = wrapup_s
        self.queue_max_wait_s = queue_max_wait_s
        self.sweep_s = sweep_s
        self.survey_wait_s = survey_wait_s
        self.outside = outside  # the flows' HTTP and clock; tests give their own, None = the real ones
        self.on_offer = on_offer
        self.tell_agent = tell_agent
        # Where Hilo may call back (routing/outbound.py): the defaults here, routing.yaml's from server.app.
        self.outbound = OutboundGuard(OutboundPolicy(Outbound(), default_region), redis, namespace)
        self._task: asyncio.Task[None] | None = None

    # -- life cycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Hand over replies left behind (by a version that handed them over after its commit), then watch the
        waiting conversations (offers, timeouts)."""
        for conversation_id in await self.pool.fetch(
            "SELECT DISTINCT conversation_id FROM conversation_replies WHERE outbox_id IS NULL"
        ):
            await self.flush(conversation_id["conversation_id"])
        self._task = asyncio.create_task(self._sweep_loop(), name="conversations-sweep")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- the inbound handler ------------------------------------------------------------------------

    async def __call__(self, message: InboundMessage) -> None:
        try:
            who, phone = await self._identify(message)
        except identity.InvalidIdentity as exc:  # e.g. an SMS from an alphanumeric sender: nobody to answer
            log.warning("message %s: sender cannot be a customer (%s); kept, not answered", message.id, exc.problem)
            return
        async with self.pool.acquire() as conn, conn.transaction():
            # Another message of this conversation may hold it for its whole turn: waited for within the inbox's
            # bound on a message (HILO_MESSAGING_HANDLER_TIMEOUT_S), not the pool's shorter ones (hilo/stores.py).
            await conn.execute("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0")
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                f"conversation:{message.channel}:{message.sender}:{message.recipient}",
            )
            await conn.execute("SET LOCAL statement_timeout TO DEFAULT; SET LOCAL lock_timeout TO DEFAULT")
            done = await conn.fetchval(
                "SELECT conversation_id FROM conversation_inbound WHERE message_id = $1", message.id
            )
            if done is not None:
                work = _Work([], await store.load(conn, done))
            else:
                work = await self._handle(conn, message, who, phone)
                assert work.conversation is not None
                work.events += await self._hand_over(conn, work.conversation.id)
        await self._after(work)

    async def _identify(self, message: InboundMessage) -> tuple[Identification, str | None]:
        """The customer behind the sender, and their E.164 number when they wrote from one. A WhatsApp
        number is a phone number (WhatsApp verified it): the customer who calls from it is the same one,
        so both identities are kept on one customer."""
        pool, region = self.pool, self.default_region
        if message.channel == "webchat":
            return await identity.identify_or_create(pool, "webchat", message.sender), None
        raw = message.sender.removeprefix("whatsapp:")
        kind = "whatsapp" if message.channel == "whatsapp" else "phone"
        try:
            e164 = identity.normalize(kind, raw, region)
        except identity.InvalidIdentity:
            if message.channel == "whatsapp":  # a business-scoped user id, no number
                return await identity.identify_or_create(pool, "whatsapp_bsuid", raw), None
            raise
        by_phone = await identity.resolve(pool, "phone", e164)
        who = by_phone or await identity.identify_or_create(pool, kind, e164)
        for other in {"phone", kind}:
            with contextlib.suppress(identity.IdentityTaken, identity.MergedCustomer):
                await identity.link_identity(pool, who.customer_id, other, e164)
        return who, e164

    async def _handle(self, conn: Conn, message: InboundMessage, who: Identification, phone: str | None) -> _Work:
        events: list[dict[str, Any]] = []
        row = await conn.fetchrow(
            "SELECT * FROM conversations WHERE channel = $1 AND address = $2 AND our_address = $3"
            " AND closed_at IS NULL FOR UPDATE",
            message.channel,
            message.sender,
            message.recipient,
        )
        conversation = Conversation.of(row) if row else None
        if conversation is not None and conversation.state in ("bot", "message", "survey"):
            idle = message.received_at - conversation.last_message_at
            if conversation.state == "survey" and idle > dt.timedelta(seconds=self.survey_wait_s):
                events += await self._survey_expired(conn, conversation)  # this message starts anew
                conversation = None
            elif idle > IDLE_RESTART:
                events += await self._end(conn, conversation, "abandoned", "customer")
                conversation = None
        fresh = conversation is None
        if conversation is None:
            conversation, started = await self._open(conn, message, who, phone)
            events += started
        await conn.execute(
            "INSERT INTO conversation_inbound (message_id, conversation_id) VALUES ($1, $2)",
            message.id,
            conversation.id,
        )
        answer = message.choice_id or message.text
        received: dict[str, Any] = {
            "message_id": message.id,
            "provider": message.provider,
            "text": message.text,
            "choice_id": message.choice_id,
            "media": message.media,
        }
        work = _Work(events, conversation)
        if conversation.state in ("bot", "survey"):
            turn = await self._turn(conn, conversation, None if fresh else answer)
            if not fresh and (len(turn.inputs) - 1) in turn.secret_inputs:
                received.update(text=turn.inputs[-1], choice_id=None, secret=True)  # a PIN or date of birth
                await self._redact(conn, message, turn.inputs[-1])
            events.append(await store.event(conn, conversation, "message.received", received, at=message.received_at))
            await self._save_turn(conn, conversation, turn, events)
            await self._settle(conn, conversation, turn, work)
            work.verified = turn.verified
        elif conversation.state == "message":
            events.append(await store.event(conn, conversation, "message.received", received, at=message.received_at))
            events.append(
                await store.event(
                    conn, conversation, "voicemail.recorded", {"message_id": message.id, "text": message.text}
                )
            )
            await store.add_reply(conn, conversation, Reply(MESSAGE_TAKEN))
            events += await self._end(conn, conversation, "voicemail", "customer")
        else:  # waiting for or with an agent: the flow is silent
            events.append(await store.event(conn, conversation, "message.received", received, at=message.received_at))
        await conn.execute(
            "UPDATE conversations SET last_message_at = greatest(last_message_at, $2) WHERE id = $1",
            conversation.id,
            message.received_at,
        )
        work.conversation = await store.load(conn, conversation.id)
        return work

    async def _open(
        self, conn: Conn, message: InboundMessage, who: Identification, phone: str | None
    ) -> tuple[Conversation, list[dict[str, Any]]]:
        flow_id = self.pick_flow(message) or DEFAULT_FLOW  # a web chat site's too: its channel names the flow
        conversation_id = uuid.uuid4()
        interaction_id = await store.new_interaction(
            conn,
            conversation_id,
            who.customer_id,
            message.channel,
            message.recipient,
            phone,
            flow_id,
            message.received_at,
        )
        # A customer made just now is not "known" yet: the flow greets them as new (as on a call). The
        # journal starts with it, so every replay of this run sees the same customer.
        known = None if who.created else {"id": str(who.customer_id), "name": who.display_name}
        row = await conn.fetchrow(
            "INSERT INTO conversations (id, interaction_id, customer_id, channel, provider, address, our_address,"
            " flow, journal, last_message_at) VALUES ($10, $1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *",
            interaction_id,
            who.customer_id,
            message.channel,
            message.provider,
            message.sender,
            message.recipient,
            flow_id,
            [{"k": "customer", "v": known}],
            message.received_at,
            conversation_id,
        )
        assert row is not None
        conversation = Conversation.of(row)
        events = [
            await store.event(
                conn, conversation, "interaction.started", {"dialed": message.recipient, "flow": flow_id}
            ),
            await store.event(
                conn,
                conversation,
                "customer.identified",
                {"by": "phone" if phone else message.channel, "new": who.created},
            ),
        ]
        return conversation, events

    async def _redact(self, conn: Conn, message: InboundMessage, mask: str | None) -> None:
        """The message answered a secret prompt: its stored text becomes the mask, in the transaction that
        records the answer. Until this commits (the moment between the webhook's commit and the turn's, a
        few milliseconds normally; longer if the conversation layer is down or the message keeps failing,
        see docs/messaging.md) the text is in `messages` in clear, readable only by the database's users."""
        await conn.execute(
            "UPDATE messages SET text = $2, choice_id = NULL, redacted_at = now() WHERE id = $1",
            message.id,
            mask,
        )

    async def _turn(self, conn: Conn, conversation: Conversation, answer: str | None) -> TurnResult:
        """The flow one turn further with `answer` (None with nothing asked yet: the run's first turn). The
        flow's lookups and verifications run on `conn`, the caller's transaction (see the module's note on
        connections)."""
        live = self.live_flows()
        # The journal's first entry is the customer as the run began (_open, hand_back): every replay sees it;
        # a post-chat survey's run also keeps there where it starts (`after_agent`: its flow and node).
        head, journal = conversation.journal[:1], conversation.journal[1:]
        after_agent: dict[str, str] | None = head[0].get("after_agent") if head else None
        flow = live.flows.get(after_agent["flow"] if after_agent else conversation.flow or DEFAULT_FLOW)
        if flow is None:
            return TurnResult(
                outcome=Outcome("error", conversation.flow or "", "", reason=f"no flow {conversation.flow!r}"),
                replies=[],
                inputs=list(conversation.inputs),
                journal=list(conversation.journal),
                outputs=conversation.outputs,
                events=[("ivr.no_flow", {"flow": conversation.flow, "version": live.version})],
            )
        new = [] if answer is None and not conversation.inputs and conversation.outputs == 0 else [answer]
        outside = self.outside or FlowServices()
        turn = await run_turn(
            flow,
            flows=live.flows,
            inputs=[*conversation.inputs, *new],
            new_inputs=len(new),
            journal=journal,
            already_sent=conversation.outputs,
            services=FlowServices(
                # both on the connection of the transaction the turn runs in (never a second one from the pool)
                lookup_customer=partial(flow_services.lookup_customer, conn, default_region=self.default_region),
                http=outside.http,
                calendars=live.calendars,
                verify_customer=partial(flow_services.verify_customer, conn),
                clock=outside.clock,
            ),
            channel=conversation.channel,
            caller_number=None if conversation.channel == "webchat" else store.phone_of(conversation),
            customer=head[0].get("v") if head else None,
            start=after_agent["node"] if after_agent else None,
        )
        turn.journal = [*head, *turn.journal]
        return turn

    async def _save_turn(
        self, conn: Conn, conversation: Conversation, turn: TurnResult, events: list[dict[str, Any]]
    ) -> None:
        for type_, data in turn.events:
            if type_ == SURVEY_ANSWER and await self._answered(conn, conversation, data):
                continue  # e.g. already given through the survey API: the first answer stays, as on a call
            events.append(await store.event(conn, conversation, type_, data))
        for reply in turn.replies:
            await store.add_reply(conn, conversation, reply)
        await conn.execute(
            "UPDATE conversations SET inputs = $2, journal = $3, outputs = $4 WHERE id = $1",
            conversation.id,
            turn.inputs,
            turn.journal,
            turn.outputs,
        )

    async def _answered(self, conn: Conn, conversation: Conversation, answer: dict[str, Any]) -> bool:
        """Whether this survey's question already has an answer on the interaction (under the lock that
        reports/survey.py save_answer takes, so the two cannot both record one)."""
        key = f"survey:{conversation.interaction_id}:{answer.get('question')}"
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", key)
        found = await conn.fetchval(
            "SELECT true FROM timeline_events WHERE interaction_id = $1 AND type = $2 AND data ->> 'question' = $3"
            " AND coalesce(data ->> 'survey', '') = $4 LIMIT 1",
            conversation.interaction_id,
            SURVEY_ANSWER,
            answer.get("question"),
            answer.get("survey") or "",
        )
        return bool(found)

    async def _link_verified(self, conversation: Conversation, verified: uuid.UUID) -> None:
        """The customer proved who they are (a flow's lookup + verify): the conversation's customer (a web
        chat visitor, a new number) becomes that customer. Done as a merge, so it is audited and can be
        undone (crm_bridge/identity.py); the visitor's token then finds the known customer next time. After
        the turn's commit: the merge locks the customers the turn's rows point at."""
        async with self.pool.acquire() as conn:
            current = (await identity.survivor_of(conn, conversation.customer_id)).customer_id
            target = (await identity.survivor_of(conn, verified)).customer_id
        if current == target:
            return
        try:
            await identity.merge(
                self.pool, target, current, audit.system("conversation"), f"verified in {conversation.channel} flow"
            )
        except (identity.MergeRefused, identity.CustomerNotFound, identity.MergedCustomer) as exc:
            log.warning("conversation %s: verified customer not linked: %s", conversation.id, exc)
            return
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE conversations SET customer_id = $2 WHERE id = $1", conversation.id, target)
            event = await store.event(
                conn, conversation, "customer.linked", {"customer": str(target), "by": "verification"}
            )
        await self.publish(event)

    async def _settle(self, conn: Conn, conversation: Conversation, turn: TurnResult, work: _Work) -> None:
        """What the flow's outcome means for the conversation (what to do after the commit goes in `work`)."""
        events = work.events
        outcome = turn.outcome
        if outcome is None:
            return
        if conversation.state == "survey":  # the flow after the agent is done (its interaction ended before)
            events += await self._end(conn, conversation, "completed", "agent")
            return
        collected = {k: v for k, v in outcome.shown_variables().items() if k not in ("caller", "customer", "now")}
        await conn.execute(
            "UPDATE interactions SET context = context || $2 WHERE id = $1",
            conversation.interaction_id,
            {"ivr": {"flow": outcome.flow, "node": outcome.node, "variables": collected}},
        )
        if outcome.action == "queue" and outcome.target:
            await conn.execute(
                "UPDATE conversations SET state = 'queued', queue = $2, priority = $3, queued_at = now() WHERE id = $1",
                conversation.id,
                outcome.target,
                outcome.priority,
            )
            await conn.execute(
                "UPDATE interactions SET state = 'queued', queue = $2, context = context || $3 WHERE id = $1",
                conversation.interaction_id,
                outcome.target,
                {"queue": outcome.target},
            )
            events.append(
                await store.event(
                    conn, conversation, "routing.queued", {"queue": outcome.target, "priority": outcome.priority}
                )
            )
            work.enqueue = True
        elif outcome.action == "voicemail":
            await conn.execute("UPDATE conversations SET state = 'message' WHERE id = $1", conversation.id)
            await store.add_reply(conn, conversation, Reply(MESSAGE_PROMPT))
        elif outcome.action == "callback":
            node = self.live_flows().flows.get(outcome.flow, None)
            callback = node.nodes.get(outcome.node) if node is not None else None
            await self._book_callback(conn, conversation, work, getattr(callback, "queue", None))
        elif outcome.action == "transfer":
            await store.add_reply(conn, conversation, Reply(_transfer_text(outcome.target or "")))
            events.append(await store.event(conn, conversation, "ivr.transfer_unavailable", {"to": outcome.target}))
            events += await self._end(conn, conversation, "transfer-unavailable", "system")
        elif outcome.action == "hangup":
            events += await self._end(conn, conversation, "ivr-ended", "system")
        else:
            await store.add_reply(conn, conversation, Reply(FAILED_TEXT))
            events += await self._end(conn, conversation, "failed", "system")

    async def _book_callback(self, conn: Conn, conversation: Conversation, work: _Work, queue: str | None) -> None:
        """As on a call (ivr/inbound.py): the booking, then (after the commit) the interaction queued for the
        callback dialler (ivr/callbacks.py) when the node names a queue; a web chat has no number to call."""
        number = store.phone_of(conversation) if conversation.channel != "webchat" else None
        if number is None:
            await store.add_reply(conn, conversation, Reply(WEBCHAT_NO_CALLBACK))
            work.events.append(await store.event(conn, conversation, "callback.refused", {"reason": "no phone number"}))
            work.events += await self._end(conn, conversation, "callback-unavailable", "system")
            return
        refusal = await self.outbound.callback_refusal(number)
        if refusal is not None:  # a premium, foreign or too often booked number: never booked, never dialled
            await store.add_reply(conn, conversation, Reply(CALLBACK_REFUSED_TEXT))
            work.events.append(await store.event(conn, conversation, "callback.refused", {"reason": refusal}))
            work.events += await self._end(conn, conversation, "callback-unavailable", "system")
            return
        booked = await conn.fetchval(
            "INSERT INTO callbacks (interaction_id, customer_id, number, queue, context)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (interaction_id) DO NOTHING RETURNING id",
            conversation.interaction_id,
            conversation.customer_id,
            number,
            queue,
            {"channel": conversation.channel, "caller_number": number},
        )
        await store.add_reply(conn, conversation, Reply(f"We will call you back at {number}."))
        work.events.append(
            await store.event(
                conn,
                conversation,
                "callback.requested",
                {"callback_id": booked, "number": number, "queue": queue, "keeps_place": False},
            )
        )
        work.events += await self._end(conn, conversation, "callback-requested", "system")
        work.callback_queue = queue

    async def _end(self, conn: Conn, conversation: Conversation, outcome: str, by: str) -> list[dict[str, Any]]:
        """Close the conversation and end its interaction, once."""
        await conn.execute(
            "UPDATE conversations SET state = 'closed', closed_at = now() WHERE id = $1 AND closed_at IS NULL",
            conversation.id,
        )
        return await self._end_interaction(conn, conversation, outcome, by)

    async def _end_interaction(
        self, conn: Conn, conversation: Conversation, outcome: str, by: str
    ) -> list[dict[str, Any]]:
        ended = await conn.fetchval(
            "UPDATE interactions SET state = 'ended', outcome = $2, hangup_by = $3, ended_at = now()"
            " WHERE id = $1 AND ended_at IS NULL RETURNING true",
            conversation.interaction_id,
            outcome,
            by,
        )
        if not ended:
            return []
        return [await store.event(conn, conversation, "interaction.ended", {"outcome": outcome, "hangup_by": by})]

    # -- after the transaction ----------------------------------------------------------------------

    async def _after(self, work: _Work) -> None:
        for event in work.events:
            await self.publish(event)
        conversation = work.conversation
        if conversation is None:
            return
        await self._tell_agent(conversation, [e for e in work.events if e["type"].startswith("message.")])
        for customer_id in work.verified:
            await self._link_verified(conversation, uuid.UUID(customer_id))
        if work.enqueue or conversation.state == "queued":
            await self._route(conversation)
        if work.callback_queue is not None:
            try:  # a call to make: routing offers it to an agent, and the callback dialler rings them
                await self.engine.enqueue(str(conversation.interaction_id), work.callback_queue, channel="voice")
            except RoutingError as exc:  # e.g. closed now: the booking stays for a person to see, as on a call
                log.warning("callback of conversation %s cannot be queued: %s", conversation.id, exc)

    async def flush(self, conversation_id: uuid.UUID) -> None:
        """Hand over the conversation's replies not yet in the outbox (left by a version that handed them over
        after its commit), in their own transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            sent = await self._hand_over(conn, conversation_id)
            conversation = await store.load(conn, conversation_id)
        for event in sent:
            await self.publish(event)
        await self._tell_agent(conversation, sent)

    async def _hand_over(self, conn: Conn, conversation_id: uuid.UUID) -> list[dict[str, Any]]:
        """Hand the conversation's pending replies to the outbox in the caller's transaction, in order, each
        keyed by its reply row (`conversation-reply:<id>`): the reply row is marked and the outbox row is
        written in one commit, and even a reply handed over twice would be one outbox row. Returns the
        message.sent / message.failed events to publish after the commit."""
        sent: list[dict[str, Any]] = []
        conversation = await store.load(conn, conversation_id)
        pending = await conn.fetch(
            "SELECT id, text, choices FROM conversation_replies WHERE conversation_id = $1 AND outbox_id IS NULL"
            " ORDER BY id FOR UPDATE SKIP LOCKED",
            conversation_id,
        )
        for reply in pending:
            choices = [Choice(str(c["id"]), str(c["title"])) for c in reply["choices"]]
            key = f"conversation-reply:{reply['id']}"
            message = replace(store.outbound(conversation, reply["text"], choices), idempotency_key=key)
            try:  # refused before it writes anything: the transaction goes on
                outbox_id = await self.outbox.enqueue(message, conn=conn)
            except OutsideWindow as exc:
                await conn.execute("UPDATE conversation_replies SET outbox_id = 0 WHERE id = $1", reply["id"])
                sent.append(await store.event(conn, conversation, "message.failed", {"by": "bot", "reason": str(exc)}))
                continue
            await conn.execute("UPDATE conversation_replies SET outbox_id = $2 WHERE id = $1", reply["id"], outbox_id)
            sent.append(
                await store.event(
                    conn,
                    conversation,
                    "message.sent",
                    {"by": "bot", "outbox_id": outbox_id, "text": reply["text"], "choices": reply["choices"]},
                )
            )
        return sent

    async def _tell_agent(self, conversation: Conversation, events: list[dict[str, Any]]) -> None:
        """Messages of a conversation an agent has (or is offered) go to their console as they happen."""
        if conversation.agent_id is None or not events:
            return
        for event in events:
            body = {"type": "chat.message", "interaction_id": str(conversation.interaction_id), "event": event}
            await self.tell_agent(conversation.agent_id, body)

    async def _notify_state(self, conversation: Conversation, agent_id: str | None) -> None:
        if agent_id is None:
            return
        await self.tell_agent(agent_id, {"type": "chat.state", **conversation.as_json()})

    # -- routing ------------------------------------------------------------------------------------

    async def _route(self, conversation: Conversation) -> None:
        """Queue the conversation (again: enqueue has one effect) and take an offer made at once."""
        assert conversation.queue is not None
        try:
            offer = await self.engine.enqueue(
                str(conversation.interaction_id),
                conversation.queue,
                priority=conversation.priority,
                channel=conversation.channel,
                enqueued_at=conversation.queued_at,
            )
        except RoutingError as exc:  # closed queue (hours), unknown queue, already ended
            log.warning("conversation %s cannot be queued to %s: %s", conversation.id, conversation.queue, exc)
            await self._give_up(conversation, "routing.refused", {"queue": conversation.queue, "reason": str(exc)})
            return
        if offer is not None:
            await self._offered(conversation, offer)

    async def _give_up(self, conversation: Conversation, type_: str, data: dict[str, Any]) -> None:
        # Not the queue's no_agent_prompt: that one is written for callers ("please call again").
        async with self.pool.acquire() as conn, conn.transaction():
            still = await conn.fetchval(
                "SELECT true FROM conversations WHERE id = $1 AND state = 'queued' FOR UPDATE", conversation.id
            )
            if not still:
                return
            events = [await store.event(conn, conversation, type_, data)]
            await store.add_reply(conn, conversation, Reply(NO_AGENT_TEXT))
            events += await self._end(conn, conversation, "no-agent", "system")
            events += await self._hand_over(conn, conversation.id)
        for event in events:
            await self.publish(event)

    async def _offered(self, conversation: Conversation, offer: Assignment) -> None:
        """Routing offered the conversation to an agent: recorded once (any node may see the offer), then the
        screen-pop goes to the agent's console, where they accept it."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE conversations SET state = 'offered', agent_id = $2, offered_at = now()"
                " WHERE id = $1 AND state = 'queued' RETURNING *",
                conversation.id,
                offer.agent_id,
            )
            if row is None:
                return
            event = await store.event(
                conn, conversation, "routing.offered", {"agent": offer.agent_id, "queue": offer.via}
            )
        await self.publish(event)
        current = Conversation.of(row)
        try:
            await self.on_offer(current.interaction(), offer.agent_id)
        except Exception:  # the pop failing must never lose the conversation: the chat list still shows it
            log.exception("screen-pop failed for conversation %s", conversation.id)
        await self._notify_state(current, offer.agent_id)

    async def sweep(self) -> None:
        """What time alone changes for waiting conversations (run every `sweep_s` on every node): offers
        routing made meanwhile are taken, offers not accepted in time go back to the queue,
        conversations that waited longer than their queue allows are ended politely, and post-chat surveys
        left unanswered for `survey_wait_s` end quietly."""
        try:
            await self._expire_surveys()
        except Exception:
            log.exception("conversations: ending unanswered surveys failed")
        rows = await self.pool.fetch(
            "SELECT * FROM conversations WHERE state IN ('queued', 'offered') AND closed_at IS NULL ORDER BY queued_at"
        )
        now = dt.datetime.now(dt.UTC)
        for row in rows:
            conversation = Conversation.of(row)
            iid = str(conversation.interaction_id)
            try:
                if conversation.state == "offered" and conversation.agent_id and conversation.offered_at:
                    if now - conversation.offered_at > dt.timedelta(seconds=self.offer_timeout_s):
                        await self._not_accepted(conversation)
                    continue
                queue = self.engine.queues.get(conversation.queue or "")
                max_wait = (queue.max_wait_s if queue else None) or self.queue_max_wait_s
                if conversation.queued_at and now - conversation.queued_at > dt.timedelta(seconds=max_wait):
                    with contextlib.suppress(RoutingError):
                        await self.engine.remove(iid, "timeout")
                    await self._give_up(conversation, "routing.timeout", {"queue": conversation.queue})
                    continue
                try:
                    offer = await self.engine.try_assign(iid)
                except NotQueued:
                    await self._route(conversation)  # routing lost it (or never got it): queue it again
                    continue
                if offer is not None:
                    await self._offered(conversation, offer)
            except Exception:
                log.exception("conversation %s: sweep failed", conversation.id)

    async def _not_accepted(self, conversation: Conversation) -> None:
        assert conversation.agent_id is not None
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE conversations SET state = 'queued', agent_id = NULL, offered_at = NULL"
                " WHERE id = $1 AND state = 'offered' AND agent_id = $2 RETURNING *",
                conversation.id,
                conversation.agent_id,
            )
            if row is None:
                return
            event = await store.event(conn, conversation, "routing.not_answered", {"agent": conversation.agent_id})
        await self.publish(event)
        await self._notify_state(Conversation.of(row), conversation.agent_id)
        offer = await self.engine.not_answered(str(conversation.interaction_id), conversation.agent_id)
        if offer is not None:
            await self._offered(Conversation.of(row), offer)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("conversations sweep failed")

    # -- what agents do -----------------------------------------------------------------------------

    async def get(self, interaction_id: uuid.UUID) -> Conversation | None:
        """The conversation of an interaction: its current one, or one it had before a hand-back."""
        row = await self.pool.fetchrow(
            "SELECT c.* FROM interactions i JOIN conversations c ON c.id::text = i.context->>'conversation_id'"
            " WHERE i.id = $1",
            interaction_id,
        )
        return Conversation.of(row) if row else None

    async def for_agent(self, agent_id: str | None) -> list[Conversation]:
        """Open conversations offered to or taken by the agent; every agent's when `agent_id` is None."""
        rows = await self.pool.fetch(
            "SELECT * FROM conversations WHERE closed_at IS NULL AND state IN ('offered', 'agent')"
            " AND ($1::text IS NULL OR agent_id = $1) ORDER BY last_message_at DESC",
            agent_id,
        )
        return [Conversation.of(r) for r in rows]

    async def thread(self, interaction_id: uuid.UUID, limit: int = 200) -> list[dict[str, Any]]:
        """The messages of one interaction of a conversation, oldest first."""
        rows = await self.pool.fetch(
            "SELECT * FROM (SELECT * FROM timeline_events WHERE interaction_id = $1 AND type LIKE 'message.%'"
            " ORDER BY id DESC LIMIT $2) newest ORDER BY id",
            interaction_id,
            limit,
        )
        return [event_json(r) for r in rows]

    async def _owned(
        self, conn: Conn, interaction_id: uuid.UUID, agent_id: str | None, *, states: tuple[str, ...]
    ) -> Conversation:
        row = await conn.fetchrow("SELECT * FROM conversations WHERE interaction_id = $1 FOR UPDATE", interaction_id)
        if row is None:
            raise ConversationError(404, "no conversation for this interaction")
        conversation = Conversation.of(row)
        if agent_id is not None and conversation.agent_id != agent_id:
            raise ConversationError(403, "this conversation is not yours")
        if conversation.state not in states:
            raise ConversationError(
                409, f"the conversation is {conversation.state}; this needs it {' or '.join(states)}", "state"
            )
        return conversation

    async def accept(self, interaction_id: uuid.UUID, agent_id: str) -> Conversation:
        """The agent takes the conversation offered to them: from now on the flow is silent."""
        async with self.pool.acquire() as conn, conn.transaction():
            conversation = await self._owned(conn, interaction_id, agent_id, states=("offered",))
            if not await self.engine.answered(str(interaction_id), agent_id):
                raise ConversationError(409, "the offer was withdrawn (it went back to the queue)", "state")
            await conn.execute("UPDATE conversations SET state = 'agent' WHERE id = $1", conversation.id)
            await conn.execute(
                "UPDATE interactions SET state = 'connected', agent_id = $2, answered_at = now() WHERE id = $1",
                interaction_id,
                agent_id,
            )
            event = await store.event(conn, conversation, "agent.answered", {"agent": agent_id})
            taken = await store.load(conn, conversation.id)
        await self.publish(event)
        await self._notify_state(taken, agent_id)
        return taken

    async def reply(self, interaction_id: uuid.UUID, agent_id: str | None, text: str, *, by: str) -> dict[str, Any]:
        """An agent's reply (agent_id None: a supervisor or admin, who may reply on any; `by`: who, an actor
        of hilo/audit.py): handed to the outbox. OutsideWindow (WhatsApp's 24-hour window closed) is raised for
        the caller to show."""
        text = text.strip()
        if not text:
            raise ConversationError(400, "text is empty", "text")
        if len(text) > TEXT_LIMIT:
            raise ConversationError(400, f"text is {len(text)} characters long; at most {TEXT_LIMIT}", "text")
        async with self.pool.acquire() as conn, conn.transaction():
            conversation = await self._owned(conn, interaction_id, agent_id, states=("agent",))
            outbox_id = await self.outbox.enqueue(store.outbound(conversation, text, []), conn=conn)
            event = await store.event(
                conn, conversation, "message.sent", {"by": by, "outbox_id": outbox_id, "text": text}
            )
        await self.publish(event)
        await self._tell_agent(conversation, [event])
        return event

    async def hand_back(self, interaction_id: uuid.UUID, agent_id: str | None, *, by: str) -> Conversation:
        """The agent gives the conversation back to the flow, which starts again from its start (a new
        run); the agent is released (wrap-up, then free)."""
        async with self.pool.acquire() as conn, conn.transaction():
            conversation = await self._owned(conn, interaction_id, agent_id, states=("agent",))
            # The agent's interaction ends here (they wrap it up as usual); the flow goes on in a new one, which
            # routing can queue again (routing takes an interaction once).
            events = [
                await store.event(conn, conversation, "agent.handed_back", {"agent": conversation.agent_id, "by": by})
            ]
            events += await self._end_interaction(conn, conversation, "handed-back", "agent")
            context = await conn.fetchval("SELECT context FROM interactions WHERE id = $1", interaction_id)
            new_interaction = await store.new_interaction(
                conn,
                conversation.id,
                conversation.customer_id,
                conversation.channel,
                conversation.our_address,
                context.get("caller_number"),
                conversation.flow or DEFAULT_FLOW,
                None,
            )
            await conn.execute(
                "UPDATE conversations SET state = 'bot', agent_id = NULL, queue = NULL, offered_at = NULL,"
                " queued_at = NULL, run = run + 1, inputs = '[]', journal = $2, outputs = 0, interaction_id = $3"
                " WHERE id = $1",
                conversation.id,
                conversation.journal[:1],
                new_interaction,
            )
            restarted = await store.load(conn, conversation.id)
            events.append(
                await store.event(
                    conn, restarted, "interaction.started", {"dialed": restarted.our_address, "after": "hand-back"}
                )
            )
            turn = await self._turn(conn, restarted, None)
            await self._save_turn(conn, restarted, turn, events)
            work = _Work(events, restarted, verified=turn.verified)
            await self._settle(conn, restarted, turn, work)
            work.conversation = await store.load(conn, conversation.id)
            events += await self._hand_over(conn, conversation.id)
        await self.engine.release(str(interaction_id), self.wrapup_s)
        await self._notify_state(work.conversation, conversation.agent_id)
        await self._after(work)
        assert work.conversation is not None
        return work.conversation

    async def close_conversation(self, interaction_id: uuid.UUID, agent_id: str | None, *, by: str) -> Conversation:
        """The agent ends the conversation: routing releases them into wrap-up. Their interaction ends
        `completed` by the agent either way; with a queue node's `after_agent` the flow goes on there."""
        async with self.pool.acquire() as conn, conn.transaction():
            conversation = await self._owned(conn, interaction_id, agent_id, states=("agent",))
            start = await self._after_agent(conn, conversation)
            if start is None:
                events = await self._end(conn, conversation, "completed", "agent")
            else:
                events = await self._end_interaction(conn, conversation, "completed", "agent")
                await self._start_survey(conn, conversation, start, events)
                events += await self._hand_over(conn, conversation.id)
            after = await store.load(conn, conversation.id)
        await self.engine.release(str(interaction_id), self.wrapup_s)
        for event in events:
            await self.publish(event)
        await self._notify_state(after, conversation.agent_id)
        return after

    async def _after_agent(self, conn: Conn, conversation: Conversation) -> tuple[str, str] | None:
        """(flow, node) where the flow goes on after the agent: the `after_agent` of the queue node that
        queued the conversation (kept in the interaction's context by `_settle`), if it has one."""
        context = await conn.fetchval("SELECT context FROM interactions WHERE id = $1", conversation.interaction_id)
        ivr = (context or {}).get("ivr") or {}
        flow = self.live_flows().flows.get(str(ivr.get("flow")))
        node = flow.nodes.get(str(ivr.get("node"))) if flow is not None else None
        if flow is None or not isinstance(node, QueueNode) or node.after_agent is None:
            return None
        return flow.flow, node.after_agent

    async def _start_survey(
        self, conn: Conn, conversation: Conversation, start: tuple[str, str], events: list[dict[str, Any]]
    ) -> None:
        """A new run of the conversation from `start` on the same (ended) interaction; its first turn asks
        at once. The customer's silence is timed from now (`survey_wait_s`)."""
        head: dict[str, Any] = dict(conversation.journal[0]) if conversation.journal else {"k": "customer", "v": None}
        head["after_agent"] = {"flow": start[0], "node": start[1]}
        await conn.execute(
            "UPDATE conversations SET state = 'survey', agent_id = NULL, offered_at = NULL, run = run + 1,"
            " inputs = '[]', journal = $2, outputs = 0, last_message_at = greatest(last_message_at, now())"
            " WHERE id = $1",
            conversation.id,
            [head],
        )
        surveying = await store.load(conn, conversation.id)
        turn = await self._turn(conn, surveying, None)
        await self._save_turn(conn, surveying, turn, events)
        await self._settle(conn, surveying, turn, _Work(events, surveying))

    async def _survey_expired(self, conn: Conn, conversation: Conversation) -> list[dict[str, Any]]:
        """The customer left the survey unanswered: the conversation ends, with no message to them."""
        event = await store.event(conn, conversation, "survey.expired", {"after_s": self.survey_wait_s})
        return [event, *await self._end(conn, conversation, "completed", "agent")]

    async def _expire_surveys(self) -> None:
        rows = await self.pool.fetch(
            "SELECT id FROM conversations WHERE state = 'survey'"
            " AND last_message_at < now() - make_interval(secs => $1)",
            self.survey_wait_s,
        )
        for row in rows:
            async with self.pool.acquire() as conn, conn.transaction():
                locked = await conn.fetchrow(
                    "SELECT * FROM conversations WHERE id = $1 AND state = 'survey'"
                    " AND last_message_at < now() - make_interval(secs => $2) FOR UPDATE",
                    row["id"],
                    self.survey_wait_s,
                )
                events = await self._survey_expired(conn, Conversation.of(locked)) if locked else []
            for event in events:
                await self.publish(event)


CONVERSATIONS = web.AppKey("conversations", Conversations)
