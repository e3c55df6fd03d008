"""The screen-pop: everything an agent should know about a caller, on their screen before the phone rings.

`ScreenPops.on_offer` is the OfferHook of ivr.inbound: when a call is offered to an agent it builds the pop
from PostgreSQL (the interaction, the customer and identities, the caller's way through the IVR, what the
IVR collected, recent interactions on every channel, open cases) and publishes it on Redis
`<namespace>:agent:<agent_id>` (a pub/sub channel: Redis keeps those apart from the agent-state key of the
same name) before returning, so it is out before the phone rings. The agent's console WebSocket
(console/ws.py) relays it; supervisors receive every agent's pops.

The pure parts (`flow_facts`, `ivr_path`, `shown_variables`, `verified_by`, `assemble`) take plain data
so they are tested without a database."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from crm_bridge import customers
from crm_bridge.timeline import Interaction
from flows.schema import Flow, Gather, Lookup, Menu

if TYPE_CHECKING:
    from hilo.db import Conn

log = logging.getLogger(__name__)

HISTORY_LIMIT = 5
MESSAGES_LIMIT = 20  # the customer's latest text messages (SMS, WhatsApp, web chat) shown on a pop
CASES_LIMIT = 10
LAST_POP_TTL_S = 3600  # a console that (re)connects gets the latest pop if it is younger than this
MASK = "••••"  # what a secret variable shows instead of its value


def agent_channel(namespace: str, agent_id: str) -> str:
    return f"{namespace}:agent:{agent_id}"


def all_agents_pattern(namespace: str) -> str:
    return f"{namespace}:agent:*"


def last_pop_key(namespace: str, agent_id: str) -> str:
    return f"{namespace}:console:last-pop:{agent_id}"


# -- what the flows tell about the events -----------------------------------------------------------


@dataclass(frozen=True)
class FlowFacts:
    """What the pop needs from the flow definitions: which variables hold secrets (never shown), the
    labels of menu keys (so "pressed 2" reads "pressed 2 (Support)"), and each lookup's variable and what
    it looked up by (to tell whose identity a verification proved)."""

    secret_variables: frozenset[str] = frozenset()
    menu_labels: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    lookups: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # -> (into, by)


def flow_facts(flows: Mapping[str, Flow]) -> FlowFacts:
    secret: set[str] = set()
    labels: dict[tuple[str, str], dict[str, str]] = {}
    lookups: dict[tuple[str, str], tuple[str, str]] = {}
    for flow_id, flow in flows.items():
        for node_id, node in flow.nodes.items():
            if isinstance(node, Gather) and node.secret:
                secret.add(node.into)
            elif isinstance(node, Menu):
                labels[(flow_id, node_id)] = {key: choice.label for key, choice in node.choices.items()}
            elif isinstance(node, Lookup):
                lookups[(flow_id, node_id)] = (node.into, node.by)
    return FlowFacts(frozenset(secret), labels, lookups)


# -- the pure parts ---------------------------------------------------------------------------------


def _step_summary(type_: str, data: Mapping[str, Any], facts: FlowFacts) -> str:
    node = str(data.get("node", ""))
    flow = str(data.get("flow", ""))
    if type_ == "ivr.input" and "digit" in data:
        key = str(data["digit"])
        if data.get("valid") is False:
            return f"pressed {key} (not an option)"
        label = facts.menu_labels.get((flow, node), {}).get(key)
        return f"pressed {key}" + (f" ({label})" if label else "")
    if type_ == "ivr.input":
        return f"entered {data.get('digits', '')}" + (f" as {data['into']}" if data.get("into") else "")
    if type_ == "ivr.flow_started":
        return f"flow {flow} started"
    if type_ in ("ivr.say", "ivr.play"):
        return "prompt played"
    if type_ == "ivr.menu":
        return f"menu offered (attempt {data.get('attempt', 1)})"
    if type_ == "ivr.no_input":
        return "no answer"
    if type_ == "ivr.menu_failed":
        return "no valid choice"
    if type_ == "ivr.lookup":
        into = facts.lookups.get((flow, node), ("", ""))[0]
        found = "found" if data.get("found") else "not found"
        return f"looked up by {data.get('by', '?')}" + (f" into {into}" if into else "") + f": {found}"
    if type_ == "ivr.verify":
        result = {"match": "passed", "no_match": "wrong answer", "no_input": "no answer"}.get(
            str(data.get("result")), str(data.get("result"))
        )
        return f"verification of {data.get('field')}, attempt {data.get('attempt')}: {result}"
    if type_ == "ivr.verify_failed":
        return f"verification of {data.get('field')} failed"
    if type_ == "ivr.branch":
        return f"branch to {data.get('next')}"
    if type_ == "ivr.set":
        return "set " + ", ".join(str(v) for v in data.get("variables", []))
    if type_ == "ivr.outcome":
        return f"{data.get('action')}" + (f" to {data['target']}" if data.get("target") else "")
    if type_ == "ivr.hours":
        return f"hours {data.get('calendar')}: " + ("open" if data.get("open") else "closed")
    if type_ == "ivr.goto":
        return f"go to {data.get('to_flow')}/{data.get('to_node')}"
    return type_.removeprefix("ivr.")


def ivr_path(events: Sequence[Mapping[str, Any]], facts: FlowFacts) -> list[dict[str, Any]]:
    """The caller's way through the IVR, one step per ivr.* event (secret digits arrive masked)."""
    path = []
    for event in events:
        type_ = str(event["type"])
        if not type_.startswith("ivr."):
            continue
        data = event.get("data") or {}
        path.append(
            {
                "type": type_,
                "at": event.get("at"),
                "flow": data.get("flow"),
                "node": data.get("node"),
                "summary": _step_summary(type_, data, facts),
                "data": {k: v for k, v in data.items() if k not in ("flow", "node")},
            }
        )
    return path


# Variables every flow has (the engine's own, not the caller's answers): not shown as collected.
ENGINE_VARIABLES = frozenset({"caller", "customer", "now"})


def shown_variables(variables: Mapping[str, Any], facts: FlowFacts) -> dict[str, Any]:
    """Every variable the IVR collected; secrets (secret gathers) are shown as dots."""
    return {
        name: MASK if name in facts.secret_variables else value
        for name, value in variables.items()
        if name not in ENGINE_VARIABLES
    }


def verified_by(
    customer_ids: set[str], variables: Mapping[str, Any], events: Sequence[Mapping[str, Any]], facts: FlowFacts
) -> str | None:
    """What the caller proved in the IVR (e.g. `pin`) to be this very customer, or None: a caller
    recognised only by caller ID is not verified (caller ID can be spoofed). A verification counts when
    the lookup it followed found this customer: by the caller's number, or into a variable whose
    customer id is this one."""
    for event in events:
        data = event.get("data") or {}
        if event["type"] != "ivr.verify" or data.get("result") != "match":
            continue
        into, by = facts.lookups.get((str(data.get("flow")), str(data.get("node"))), ("", ""))
        found = variables.get(into)
        if by == "caller_number" or (isinstance(found, Mapping) and str(found.get("id")) in customer_ids):
            return str(data.get("field") or into)
    for name, value in variables.items():  # a verified lookup whose events are not at hand
        if isinstance(value, Mapping) and value.get("verified") is True and str(value.get("id")) in customer_ids:
            return name
    return None


def assemble(
    *,
    interaction: Mapping[str, Any],
    customer: Mapping[str, Any] | None,
    events: Sequence[Mapping[str, Any]],
    history: Sequence[Mapping[str, Any]],
    cases: Sequence[Mapping[str, Any]],
    agent_id: str | None,
    facts: FlowFacts,
    now: datetime | None = None,
    messages: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    context = interaction.get("context") or {}
    ivr = context.get("ivr") or {}
    variables = ivr.get("variables") or {}
    identified = next((e.get("data") or {} for e in events if e["type"] == "customer.identified"), {})
    # The store did not answer in time when the call began: the caller is identified later, and the pop is
    # published again then (ivr/inbound.py).
    identifying = not identified and any(
        e["type"] == "call.degraded" and (e.get("data") or {}).get("what") == "identify" for e in events
    )
    customer_ids = {str(interaction["customer_id"])} | ({str(customer["id"])} if customer else set())
    proof = verified_by(customer_ids, variables, events, facts)
    return {
        "type": "screenpop",
        "interaction_id": str(interaction["id"]),
        "agent_id": agent_id,
        "offered_at": (now or datetime.now(UTC)).isoformat(),
        "call": {
            "channel": interaction["channel"],
            "direction": interaction["direction"],
            "dialed": interaction.get("dialed"),
            "caller_number": context.get("caller_number"),
            "queue": interaction.get("queue") or context.get("queue"),
            "state": interaction.get("state"),
            "started_at": _iso(interaction.get("started_at")),
        },
        "customer": {
            "id": customer["id"] if customer else str(interaction["customer_id"]),
            "name": customer.get("display_name") if customer else None,
            "new": bool(identified.get("new", False)),
            "identified_by": identified.get("by"),
            "identifying": identifying,
            "identities": [{"kind": i["kind"], "value": i["value"]} for i in customer.get("identities", [])]
            if customer
            else [],
            "verified": proof is not None,
            "verified_by": proof,
        },
        "ivr": {
            "flow": ivr.get("flow"),
            "ended_at_node": ivr.get("node"),
            "path": ivr_path(events, facts),
            "variables": shown_variables(variables, facts),
        },
        # Transfers on the way here, each with the agent's note (ivr/transfers.py), and a booked callback.
        "transfers": list(context.get("transfers") or []),
        "callback": context.get("callback"),
        "history": [
            {
                "interaction_id": str(h["id"]),
                "channel": h["channel"],
                "direction": h["direction"],
                "started_at": _iso(h.get("started_at")),
                "ended_at": _iso(h.get("ended_at")),
                "outcome": h.get("outcome"),
                "queue": h.get("queue"),
                "agent_id": h.get("agent_id"),
                "disposition": h.get("disposition"),
            }
            for h in history
        ],
        # The customer's latest messages on other interactions (their WhatsApp thread when they call),
        # oldest first; `messages` comes newest first.
        "messages": [message_line(m) for m in reversed(messages)],
        "open_cases": [
            {
                "id": str(c["id"]),
                "subject": c["subject"],
                "status": c["status"],
                "updated_at": _iso(c.get("updated_at")),
            }
            for c in cases
        ],
    }


def message_line(event: Mapping[str, Any]) -> dict[str, Any]:
    """One message.received / message.sent event as a line of a thread (secret answers arrive masked)."""
    data = event.get("data") or {}
    return {
        "interaction_id": str(event["interaction_id"]),
        "channel": event["channel"],
        "at": _iso(event.get("at")),
        "direction": "in" if event["type"] == "message.received" else "out",
        "by": data.get("by", "customer") if event["type"] == "message.sent" else "customer",
        "text": data.get("text"),
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (str(value) if value is not None else None)


# -- reading PostgreSQL -----------------------------------------------------------------------------

_FAMILY = """
WITH RECURSIVE family (id) AS (
    SELECT $1::uuid
    UNION
    SELECT c.id FROM customers c JOIN family f ON c.merged_into = f.id
)
"""


async def _survivor(conn: Conn, customer_id: uuid.UUID) -> uuid.UUID:
    # The customer may have been merged into another since the call started: show the survivor.
    survivor = await conn.fetchval(
        "WITH RECURSIVE chain (id, merged_into, depth) AS ("
        " SELECT id, merged_into, 0 FROM customers WHERE id = $1"
        " UNION ALL SELECT c.id, c.merged_into, chain.depth + 1 FROM customers c"
        " JOIN chain ON c.id = chain.merged_into WHERE chain.depth < 64)"
        " SELECT id FROM chain WHERE merged_into IS NULL",
        customer_id,
    )
    return survivor or customer_id


async def load_pop(
    pool: asyncpg.Pool, interaction_id: uuid.UUID, agent_id: str | None, facts: FlowFacts
) -> dict[str, Any] | None:
    async with pool.acquire() as conn:
        interaction = await conn.fetchrow(
            "SELECT id, customer_id, channel, direction, state, dialed, queue, context, started_at"
            " FROM interactions WHERE id = $1",
            interaction_id,
        )
        if interaction is None:
            return None
        customer_id = await _survivor(conn, interaction["customer_id"])
        customer = await customers.get_customer(conn, customer_id)
        events = await conn.fetch(
            "SELECT type, at, data FROM timeline_events WHERE interaction_id = $1 ORDER BY id", interaction_id
        )
        history = await conn.fetch(
            _FAMILY  # noqa: S608 (constant text; values are bound parameters)
            + "SELECT i.id, i.channel, i.direction, i.started_at, i.ended_at, i.outcome, i.queue,"
            " i.agent_id, w.disposition FROM interactions i"
            " LEFT JOIN interaction_wrapups w ON w.interaction_id = i.id"
            " WHERE i.customer_id IN (SELECT id FROM family) AND i.id <> $2"
            " ORDER BY i.started_at DESC LIMIT $3",
            customer_id,
            interaction_id,
            HISTORY_LIMIT,
        )
        messages = await conn.fetch(
            _FAMILY  # noqa: S608 (constant text; values are bound parameters)
            + "SELECT interaction_id, type, channel, at, data FROM timeline_events"
            " WHERE customer_id IN (SELECT id FROM family) AND type IN ('message.received', 'message.sent')"
            " AND interaction_id <> $2 ORDER BY at DESC, id DESC LIMIT $3",
            customer_id,
            interaction_id,
            MESSAGES_LIMIT,
        )
        cases = await conn.fetch(
            _FAMILY  # noqa: S608 (constant text; values are bound parameters)
            + "SELECT id, subject, status, updated_at FROM cases"
            " WHERE customer_id IN (SELECT id FROM family) AND status <> 'closed'"
            " ORDER BY updated_at DESC LIMIT $2",
            customer_id,
            CASES_LIMIT,
        )
    return assemble(
        interaction=dict(interaction),
        customer=customer,
        events=[{"type": e["type"], "at": e["at"].isoformat(), "data": e["data"]} for e in events],
        history=[dict(h) for h in history],
        cases=[dict(c) for c in cases],
        agent_id=agent_id,
        facts=facts,
        messages=[dict(m) for m in messages],
    )


async def offered_to(pool: asyncpg.Pool, interaction_id: uuid.UUID, agent_id: str) -> bool:
    """Was this interaction ever offered to this agent (a `routing.offered` event on its timeline)?"""
    return bool(
        await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM timeline_events WHERE interaction_id = $1"
            " AND type = 'routing.offered' AND data->>'agent' = $2)",
            interaction_id,
            agent_id,
        )
    )


# -- publishing -------------------------------------------------------------------------------------


class ScreenPops:
    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        namespace: str,
        flows: Callable[[], Mapping[str, Flow]],
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.namespace = namespace
        self.flows = flows

    def facts(self) -> FlowFacts:
        return flow_facts(self.flows())

    async def build(self, interaction_id: uuid.UUID, agent_id: str | None) -> dict[str, Any] | None:
        return await load_pop(self.pool, interaction_id, agent_id, self.facts())

    async def on_offer(self, interaction: Interaction, agent_id: str) -> None:
        """The OfferHook: the pop is published (and kept for a console that connects late) before the
        agent's phone is rung."""
        pop = await self.build(interaction.id, agent_id)
        if pop is None:
            log.warning("screen-pop: interaction %s is not in the database", interaction.id)
            return
        body = json.dumps(pop, default=str)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(last_pop_key(self.namespace, agent_id), body, ex=LAST_POP_TTL_S)
            pipe.publish(agent_channel(self.namespace, agent_id), body)
            await pipe.execute()

    async def tell(self, agent_id: str, body: dict[str, Any]) -> None:
        """Anything else for one agent's console (a chat message, a conversation's state), on the same channel."""
        await self.redis.publish(agent_channel(self.namespace, agent_id), json.dumps(body, default=str))


SCREENPOPS = web.AppKey("screenpops", ScreenPops)  # one for the node, voice and text alike
