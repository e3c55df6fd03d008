"""Running a flow over a text conversation, one customer message at a time, with nothing kept in memory.

Why replay rather than a stored position: the flow engine is a coroutine that pulls answers
(`read_choice`, `read_digits`); its position is its Python stack, which cannot be saved. Saving a position
instead would mean a second way into the engine (start at any node, mid-menu, with its retry count and
variables) that every node kind must honour. So each turn runs the flow again from its start over the
stored answers (`inputs`) plus the new one, until it asks for an answer nobody gave yet. The run is
deterministic because everything that comes from outside the flow (the clock, customer lookups,
verifications, HTTP answers) is taken from the stored `journal` while it lasts and recorded into it after:
a replayed `http` node does not call the service again, a replayed `hours` node sees the time it saw.
Replies already sent are counted (`already_sent`) and not sent again; timeline events are kept only from
where the previous turn stopped. A turn is a few dozen steps at most (the engine's step budget), so the
cost of replaying is small; in exchange a turn can run on any node, and a restart loses nothing.

Text channels wait for the customer: a menu or gather on text has no timeout (no "I did not hear you")."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridges.messages import Choice
from flows.engine import (
    FlowContext,
    FlowError,
    FlowServices,
    HttpCallFailed,
    HttpRequest,
    Outcome,
    run_flow,
)
from flows.schema import Flow, Menu
from flows.survey import SURVEY_SCALES
from flows.text_session import TypedAnswers

WHATSAPP_TITLE_MAX = 20  # a WhatsApp reply button's title
WHATSAPP_LIST_MAX = 10  # rows of a WhatsApp list: a longer survey scale goes as the prompt's text alone
_KEYS = re.compile(r"^[0-9*#]+$")


class AwaitingInput(Exception):
    """The flow asked for an answer that has not arrived yet: the turn ends here."""


@dataclass(frozen=True)
class Reply:
    text: str
    choices: tuple[Choice, ...] = ()


def menu_choices(menu: Menu) -> tuple[Choice, ...]:
    """A menu's options as reply choices: the id is the menu key (what the engine matches), the title the
    label cut to what a WhatsApp button shows."""
    return tuple(Choice(id=key, title=choice.label[:WHATSAPP_TITLE_MAX]) for key, choice in menu.choices.items())


def scale_choices(question: str, channel: str) -> tuple[Choice, ...]:
    """A survey question's scale as reply choices on WhatsApp (a list, e.g. 1-5), when it fits one; else
    none: the prompt names the scale and the customer types the number (SMS, web chat, NPS's 0-10)."""
    low, high = SURVEY_SCALES[question]
    if channel != "whatsapp" or high - low + 1 > WHATSAPP_LIST_MAX:
        return ()
    return tuple(Choice(id=str(score), title=str(score)) for score in range(low, high + 1))


def mask_secret(answer: str) -> str:
    """What is kept of a secret answer (a PIN, a date of birth): keys become 0, anything else x. The
    length and whether it is well formed stay, so a replay takes the same path; the digits are gone."""
    squeezed = answer.replace(" ", "")
    if _KEYS.match(squeezed):
        return "".join("0" if ch.isdigit() else ch for ch in squeezed)
    return "x" * len(squeezed)


class Journal:
    """Everything the flow got from outside, in the order it asked: replayed while it lasts, then recorded.
    An entry of another kind than asked means the flow changed under the conversation: FlowError."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = list(entries)
        self.position = 0

    @property
    def replaying(self) -> bool:
        return self.position < len(self.entries)

    def next(self, kind: str) -> dict[str, Any] | None:
        if not self.replaying:
            return None
        entry = self.entries[self.position]
        if entry.get("k") != kind:
            raise FlowError(
                f"the flow no longer runs as it did for this conversation (expected {entry.get('k')!r}, got {kind!r})"
            )
        self.position += 1
        return entry

    def add(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)
        self.position = len(self.entries)

    def services(self, live: FlowServices) -> FlowServices:
        async def lookup_customer(kind: str, value: str) -> dict[str, Any] | None:
            entry = self.next("lookup")
            if entry is not None:
                found: dict[str, Any] | None = entry.get("v")
                return found
            result = await live.lookup_customer(kind, value)
            self.add({"k": "lookup", "v": result})
            return result

        async def verify_customer(customer_id: str, field_: str, given: str) -> bool:
            entry = self.next("verify")
            if entry is not None:
                return bool(entry.get("v"))
            result = await live.verify_customer(customer_id, field_, given)
            self.add({"k": "verify", "v": result, "customer": customer_id})
            return result

        async def http(request: HttpRequest) -> Any:
            entry = self.next("http")
            if entry is None:
                try:
                    answer = await live.http(request)
                except (HttpCallFailed, TimeoutError) as exc:
                    entry = {"k": "http", "error": str(exc) or type(exc).__name__}
                else:
                    entry = {"k": "http", "v": answer}
                self.add(entry)
            if "error" in entry:
                raise HttpCallFailed(str(entry["error"]))
            return entry.get("v")

        def clock() -> dt.datetime:
            entry = self.next("clock")
            if entry is not None:
                return dt.datetime.fromisoformat(str(entry["v"]))
            moment = live.clock()
            self.add({"k": "clock", "v": moment.isoformat()})
            return moment

        return FlowServices(
            lookup_customer=lookup_customer,
            http=http,
            calendars=live.calendars,
            verify_customer=verify_customer,
            clock=clock,
        )


@dataclass
class TurnResult:
    outcome: Outcome | None  # None: the flow waits for the customer's next answer
    replies: list[Reply]  # new replies of this turn, in order
    inputs: list[str | None]  # the run's answers to store (secret ones masked)
    journal: list[dict[str, Any]]
    outputs: int  # replies the run has produced so far, old and new
    events: list[tuple[str, dict[str, Any]]]  # new timeline facts of this turn
    secret_inputs: frozenset[int] = frozenset()  # indexes of `inputs` read as secrets
    verified: list[str] = field(default_factory=list)  # customer ids a verification proved in this turn


class ReplaySession(TypedAnswers):
    """A flow session fed from stored answers. Replies up to `already_sent` were sent by earlier turns;
    timeline events count as new once the run asks for the first answer it had not been given before."""

    def __init__(self, inputs: list[str | None], *, old_inputs: int, already_sent: int, fresh: bool) -> None:
        self.inputs = inputs
        self.old_inputs = old_inputs
        self.already_sent = already_sent
        self.live = fresh  # a run's first turn: everything is new
        self.consumed = 0
        self.produced = 0
        self.replies: list[Reply] = []
        self.secret_indexes: set[int] = set()
        self.pending_choices: tuple[Choice, ...] = ()
        self.menu: tuple[Choice, ...] = ()  # the options of the menu being asked (what its reply selects)
        self.choices_skip = 0  # messages sent before the one that carries `pending_choices` (an apology)

    def _send(self, text: str) -> None:
        self.produced += 1
        if self.choices_skip:
            self.choices_skip -= 1
            choices: tuple[Choice, ...] = ()
        else:
            choices, self.pending_choices = self.pending_choices, ()
        if self.produced > self.already_sent:
            self.replies.append(Reply(text, choices))

    def _next(self, *, secret: bool = False) -> str | None:
        index = self.consumed
        if index >= self.old_inputs:
            self.live = True
        if index >= len(self.inputs):
            raise AwaitingInput
        self.consumed += 1
        if secret:
            self.secret_indexes.add(index)
        return self.inputs[index]

    async def read_choice(self, timeout_s: float) -> str | None:
        return selected(self._next(), self.menu)


def selected(answer: str | None, choices: tuple[Choice, ...]) -> str | None:
    """A menu reply as the key the engine matches: a choice's id as typed, or its title as shown (in any
    case; a title may be the label cut short, which the engine would not know), else the answer as it is
    (the engine also takes the full label)."""
    if answer is None:
        return None
    typed = answer.strip()
    if any(c.id == typed for c in choices):
        return typed
    by_title = [c.id for c in choices if c.title.strip().casefold() == typed.casefold()]
    return by_title[0] if len(by_title) == 1 else answer


async def run_turn(
    flow: Flow,
    *,
    flows: Mapping[str, Flow],
    inputs: list[str | None],
    new_inputs: int,
    journal: list[dict[str, Any]],
    already_sent: int,
    services: FlowServices,
    channel: str,
    caller_number: str | None,
    customer: dict[str, Any] | None,
    start: str | None = None,
) -> TurnResult:
    """One turn: the flow run again over `inputs` (the last `new_inputs` of them arrived now) until it
    needs another answer or ends. `services` are the live ones; the journal stands in for them on replay.
    `start`: the node the run starts at (a queue's `after_agent`), else the flow's start."""
    fresh = not inputs and not journal and already_sent == 0
    session = ReplaySession(inputs, old_inputs=len(inputs) - new_inputs, already_sent=already_sent, fresh=fresh)
    recorded = Journal(journal)
    events: list[tuple[str, dict[str, Any]]] = []
    verified: list[str] = []
    found: dict[str, Any] | None = None
    menus = {
        (f.flow, node_id): node for f in flows.values() for node_id, node in f.nodes.items() if isinstance(node, Menu)
    }

    async def record(type_: str, data: dict[str, Any]) -> None:
        nonlocal found
        # The engine records `ivr.menu` just before it sends the menu's prompt: the prompt carries the
        # options, as buttons where the channel has them.
        if type_ == "ivr.menu":
            menu = menus.get((str(data.get("flow")), str(data.get("node"))))
            session.pending_choices = session.menu = menu_choices(menu) if menu is not None else ()
        # A survey question (asked again after an answer off the scale: the apology goes first) carries
        # its scale where the channel shows one.
        if type_ == "ivr.survey":
            session.pending_choices = scale_choices(str(data.get("question")), channel)
            session.choices_skip = 1 if int(data.get("attempt", 1)) > 1 else 0
        if type_ == "ivr.lookup":
            found = recorded.entries[recorded.position - 1].get("v") if recorded.position else None
        if session.live or type_ == "ivr.flow_error":  # a replay that no longer fits is told once
            events.append((type_, data))
            if type_ == "ivr.verify" and data.get("result") == "match" and isinstance(found, dict) and found.get("id"):
                verified.append(str(found["id"]))

    context = FlowContext(
        caller_number=caller_number,
        channel=channel,
        customer=customer,
        flows=flows,
        services=recorded.services(services),
        record=record,
    )
    outcome: Outcome | None
    try:
        outcome = await run_flow(flow, session, context, start=start)
    except AwaitingInput:
        outcome = None
    stored = [
        mask_secret(answer) if i in session.secret_indexes and answer is not None else answer
        for i, answer in enumerate(inputs)
    ]
    return TurnResult(
        outcome=outcome,
        replies=session.replies,
        inputs=stored,
        journal=recorded.entries,
        outputs=max(session.produced, already_sent),
        events=events,
        secret_inputs=frozenset(session.secret_indexes),
        verified=verified,
    )
