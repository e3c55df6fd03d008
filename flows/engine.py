"""The flow interpreter: runs one flow for one interaction against a channel-neutral session.

The session is the channel (a voice call, a text chat): it says, plays and reads. Everything else the flow
needs that is the same on every channel (customer lookup and verification, outside HTTP calls, business-hours
calendars, the clock) comes in `FlowServices`. Each step is recorded through `record(type, data)`, the same
callback shape as the timeline's, and a step budget stops a flow that would otherwise never end."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal, Protocol, runtime_checkable

import aiohttp
from jinja2 import TemplateError

from flows.hours import Calendars, UnknownCalendar, now_variables
from flows.opening import opening
from flows.schema import (
    CONSENT_VARIABLE,
    Branch,
    Callback,
    Condition,
    Consent,
    Flow,
    Gather,
    Goto,
    Hangup,
    Hours,
    Http,
    Lookup,
    Menu,
    MenuSpeech,
    Play,
    Queue,
    Say,
    SetVars,
    Survey,
    Transfer,
    Verify,
    Voicemail,
)
from flows.schema import Record as RecordNode
from flows.survey import SaveAnswer, run_survey
from flows.templates import render

log = logging.getLogger(__name__)

Record = Callable[[str, dict[str, Any]], Awaitable[object]]
# (identity kind, value) -> the customer ({"id", "name", ...}) or None when nobody has that identity.
LookupCustomer = Callable[[str, str], Awaitable[dict[str, Any] | None]]
# (customer id, customer field such as "pin" or "birth_date", digits the person typed) -> do they match?
# The store compares (and may count failures); the digits are never recorded or kept by the engine.
VerifyCustomer = Callable[[str, str, str], Awaitable[bool]]
# The current moment, time-zone aware; injectable so that tests of hours and `now` are deterministic.
Clock = Callable[[], dt.datetime]

Action = Literal["queue", "transfer", "voicemail", "callback", "hangup", "error"]
DEFAULT_MAX_STEPS = 200
_DIGITS = re.compile(r"^[0-9*#]+$")


class Session(Protocol):
    """What a flow needs from a channel."""

    async def say(self, text: str) -> None: ...

    async def play(self, file: str, text_alt: str) -> None: ...

    async def read_digits(
        self,
        *,
        min_digits: int,
        max_digits: int,
        terminator: str | None,
        timeout_s: float,
        inter_digit_timeout_s: float,
    ) -> str | None:
        """Keys typed (terminator not included), or None when nothing came before `timeout_s`."""
        ...

    async def read_choice(self, timeout_s: float) -> str | None:
        """One answer to a menu: a key on voice; a key or typed text on text channels. None = no answer."""
        ...


@dataclass(frozen=True)
class SpeechRequest:
    """A turn that listens for speech too: each menu key with the phrases that select it, or (gather) a
    count of spoken digits, the answer's `key` then being the digits."""

    phrases: dict[str, list[str]]
    language: str
    min_confidence: float
    engine: str | None
    timeout_s: float
    end_silence_s: float
    max_speech_s: float
    digits: tuple[int, int] | None = None  # spoken digits (lowest, highest count) instead of `phrases`


@dataclass(frozen=True)
class Answer:
    """The answer to a menu turn that listened for speech: a key typed, or what was said."""

    via: Literal["dtmf", "speech"]
    key: str | None  # dtmf: the key typed; speech: the menu key the words selected, None = no match
    text: str = ""  # speech: what the recognizer heard ("" = nothing within the choices)
    confidence: float | None = None


@runtime_checkable
class SpeechInput(Protocol):
    """Sessions that hear speech (voice calls)."""

    async def speech_unavailable(self, request: SpeechRequest) -> str | None:
        """Why this turn cannot listen for speech here (no engine for the language, a phrase the engine
        cannot recognize); None when it can. The menu then takes keys only."""
        ...

    async def ask_choice(self, prompt: str, request: SpeechRequest) -> Answer | None:
        """Say the prompt and take the first answer, a key or a spoken choice; speech stops the prompt as a
        key does. None = nothing within the timeout."""
        ...


@runtime_checkable
class SecretDigits(Protocol):
    """Sessions that show or keep what the person typed (text transcripts) also read secrets (PINs, dates of
    birth) this way, to mask them. Sessions without it (voice: keys are never shown) use `read_digits`."""

    async def read_secret_digits(
        self,
        *,
        min_digits: int,
        max_digits: int,
        terminator: str | None,
        timeout_s: float,
        inter_digit_timeout_s: float,
    ) -> str | None: ...


class CallRecording(Protocol):
    """The recording of a call as its flow controls it (`record` and `consent` nodes; recordings/flow.py).
    Channels with nothing to record (text) have none, and those nodes pass through."""

    @property
    def paused(self) -> bool:
        """True while a pause is in force: keys read meanwhile are never shown (card numbers)."""
        ...

    async def control(self, action: str) -> str:
        """start, stop, pause or resume; what came of it (e.g. "started", "refused" after a refused consent,
        "failed"): a recording problem never stops the flow."""
        ...

    async def consent(self, given: bool, via: str) -> None:
        """The caller's answer, kept on the interaction (`via`: "dtmf", or "unanswered" for the default)."""
        ...


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    headers: dict[str, str]
    json: Any
    timeout_s: float


HttpCall = Callable[[HttpRequest], Awaitable[Any]]


class HttpCallFailed(Exception):
    """An `http` node's call that failed; its text goes on the timeline (`ivr.http`), so it never holds the
    URL, its query or the headers: template-filled parts may be secrets (a card number gathered as secret)."""


def _call_failure(exc: Exception) -> HttpCallFailed:
    """What may be said about a failed call: the status with its standard phrase (never the server's own,
    which could echo the request), or the kind of failure and the host."""
    if isinstance(exc, aiohttp.ClientResponseError):
        try:
            phrase = " " + HTTPStatus(exc.status).phrase
        except ValueError:
            phrase = ""
        return HttpCallFailed(f"HTTP {exc.status}{phrase}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return HttpCallFailed(f"{type(exc).__name__}: cannot connect to {exc.host}")
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return HttpCallFailed("the answer is not JSON")
    return HttpCallFailed(type(exc).__name__)  # InvalidURL, timeouts, a connection cut: their text names the URL


async def aiohttp_call(request: HttpRequest) -> Any:
    """The default `http` node transport: one request with aiohttp, JSON answer, any non-2xx is a failure."""
    timeout = aiohttp.ClientTimeout(total=request.timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as client,
            client.request(
                request.method,
                request.url,
                headers=request.headers,
                json=request.json if request.method != "GET" else None,
                raise_for_status=True,
            ) as response,
        ):
            return await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise _call_failure(exc) from None  # not chained: a traceback would print the URL anyway


async def _no_lookup(kind: str, value: str) -> dict[str, Any] | None:
    return None


async def _never_verified(customer_id: str, field: str, given: str) -> bool:
    return False


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class FlowServices:
    lookup_customer: LookupCustomer = _no_lookup
    http: HttpCall = aiohttp_call
    # The calendars of hours.yaml; an `hours` node naming a calendar not here ends the flow with an error.
    calendars: Calendars = field(default_factory=Calendars)
    verify_customer: VerifyCustomer = _never_verified
    clock: Clock = utc_now
    # Where a `survey` node's answers go (the voice call: reports/survey.py save_answer on the interaction);
    # None records them as `survey.answer` steps, as the simulator shows them.
    save_survey_answer: SaveAnswer | None = None


async def _ignore(type_: str, data: dict[str, Any]) -> None:
    return None


@dataclass
class FlowContext:
    """The interaction's side of a run: who calls, what is known, where steps are recorded."""

    caller_number: str | None = None
    channel: str = "voice"
    customer: dict[str, Any] | None = None  # as identified before the flow starts; None = unknown
    variables: dict[str, Any] = field(default_factory=dict)
    flows: Mapping[str, Flow] = field(default_factory=dict)  # for `goto`
    services: FlowServices = field(default_factory=FlowServices)
    record: Record = _ignore
    max_steps: int = DEFAULT_MAX_STEPS
    recording: CallRecording | None = None  # voice calls with recordings on


@dataclass
class Outcome:
    """How the flow ended: what to do with the interaction next, and the variables collected on the way."""

    action: Action
    flow: str
    node: str
    target: str | None = None  # queue id or transfer destination
    priority: int = 0
    skills: list[str] = field(default_factory=list)
    reason: str | None = None  # why an `error` outcome happened
    steps: int = 0
    variables: dict[str, Any] = field(default_factory=dict)
    secrets: frozenset[str] = frozenset()  # variables holding secret input (gather with `secret: true`)

    def shown_variables(self) -> dict[str, Any]:
        """The variables with secret ones masked, for anything a person may read (transcripts, logs)."""
        return {k: _mask(v) if k in self.secrets else v for k, v in self.variables.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "flow": self.flow,
            "node": self.node,
            "target": self.target,
            "priority": self.priority,
            "skills": self.skills,
            "reason": self.reason,
            "steps": self.steps,
            "variables": self.shown_variables(),
        }


def _mask(value: Any) -> str:
    return "*" * len(value) if isinstance(value, str) else "***"


class FlowError(Exception):
    """A flow cannot continue (a template failed, a goto names an unknown flow, ...)."""


_MISSING = object()


def resolve(variables: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (`customer.name`, `order.items.0.id`), or _MISSING."""
    current: Any = variables
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


_NUMBER = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?$")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compared(value: Any, bound: Any) -> tuple[Any, Any] | None:
    """`value` and `bound` made comparable, or None: numbers with numbers (digits in a text count as their
    number), texts with texts."""
    if _is_number(bound):
        if _is_number(value):
            return value, bound
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            return float(value), bound
        return None
    if isinstance(bound, str) and isinstance(value, str):
        return value, bound
    return None


def condition_holds(cond: Condition, variables: Mapping[str, Any]) -> bool:
    value = resolve(variables, cond.var)
    test = cond.test()
    if test == "exists":
        return (value is not _MISSING and value is not None) == cond.exists
    if test == "equals":
        return value is not _MISSING and value == cond.equals
    if test == "not_equals":
        return value is _MISSING or value != cond.not_equals
    if test == "in":
        return value is not _MISSING and value in (cond.in_ or [])
    if test in ("gte", "range"):
        low = _compared(value, cond.gte)
        if low is None or not low[0] >= low[1]:
            return False
    if test in ("lt", "range"):
        high = _compared(value, cond.lt)
        if high is None or not high[0] < high[1]:
            return False
    return True


def _plain(value: Any) -> Any:
    """Variables hold plain data only, so templates can never reach an object's methods."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _render_json(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return render(value, variables)
    if isinstance(value, dict):
        return {k: _render_json(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_json(v, variables) for v in value]
    return value


def _customer_vars(found: Mapping[str, Any] | None) -> dict[str, Any]:
    # `verified` is the engine's alone: only a `verify` that matched sets it, never the store's data.
    if not found:
        return {"known": False, "id": None, "name": None, "verified": False}
    return {
        **_plain(found),
        "known": True,
        "id": _plain(found.get("id")),
        "name": found.get("name"),
        "verified": False,
    }


def _digits(raw: str | None, terminator: str | None, min_digits: int, max_digits: int) -> str | None:
    """The keys typed without the terminator, or None when they are missing, not keys, or too few or many."""
    digits = (raw or "").strip()
    if terminator and digits.endswith(terminator):
        digits = digits[: -len(terminator)]
    if not digits or not _DIGITS.match(digits) or not min_digits <= len(digits) <= max_digits:
        return None
    return digits


class _Run:
    def __init__(self, flow: Flow, session: Session, context: FlowContext) -> None:
        self.flow = flow
        self.session = session
        self.ctx = context
        self.vars: dict[str, Any] = {
            **_plain(context.variables),
            "caller": {"number": context.caller_number, "channel": context.channel},
            "customer": _customer_vars(context.customer),
        }
        self.steps = 0
        self.secrets: set[str] = set()
        self.pause_asked = False  # a `record: pause` without its `resume` yet

    def tick(self) -> dt.datetime:
        """Read the clock once for this step: `now` and `hours` see the same moment."""
        moment = self.ctx.services.clock()
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise FlowError("the clock gave a time without a time zone")
        self.vars["now"] = now_variables(moment, self.flow.timezone)
        return moment

    def text(self, template: str) -> str:
        return render(template, self.vars)

    def without_secrets(self, text: str) -> str:
        """`text` with the value of every secret variable masked (for a transport's own error texts)."""
        for name in self.secrets:
            value = self.vars.get(name)
            if value is not None and len(str(value)) >= 2:
                text = text.replace(str(value), _mask(value))
        return text

    def outcome(self, action: Action, node: str, **kwargs: Any) -> Outcome:
        return Outcome(
            action,
            self.flow.flow,
            node,
            steps=self.steps,
            variables=dict(self.vars),
            secrets=frozenset(self.secrets),
            **kwargs,
        )

    async def record(self, type_: str, data: dict[str, Any]) -> None:
        await self.ctx.record(type_, {"flow": self.flow.flow, **data})

    async def run(self, start: str | None = None) -> Outcome:
        node_id = start or self.flow.start
        while True:
            if self.steps >= self.ctx.max_steps:
                await self.record("ivr.flow_error", {"node": node_id, "reason": "max_steps"})
                return self.outcome("error", node_id, reason=f"more than {self.ctx.max_steps} steps")
            self.steps += 1
            node = self.flow.nodes.get(node_id)
            if node is None:
                await self.record("ivr.flow_error", {"node": node_id, "reason": "unknown_node"})
                return self.outcome("error", node_id, reason=f"node {node_id!r} does not exist")
            try:
                result = await self.step(node_id, node)
            except (FlowError, TemplateError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                await self.record("ivr.flow_error", {"node": node_id, "reason": reason})
                return self.outcome("error", node_id, reason=reason)
            if isinstance(result, Outcome):
                await self.record("ivr.outcome", {"node": node_id, "action": result.action, "target": result.target})
                return result
            node_id = result

    async def step(self, node_id: str, node: Any) -> str | Outcome:
        moment = self.tick()
        if isinstance(node, Say):
            await self.record("ivr.say", {"node": node_id})
            await self.session.say(self.text(node.text))
            return node.next
        if isinstance(node, Play):
            await self.record("ivr.play", {"node": node_id, "file": node.file})
            await self.session.play(node.file, self.text(node.text))
            return node.next
        if isinstance(node, Gather):
            return await self.gather(node_id, node)
        if isinstance(node, Menu):
            return await self.menu(node_id, node)
        if isinstance(node, Branch):
            for i, cond in enumerate(node.when):
                if condition_holds(cond, self.vars):
                    await self.record("ivr.branch", {"node": node_id, "matched": i, "next": cond.next})
                    return cond.next
            await self.record("ivr.branch", {"node": node_id, "matched": None, "next": node.otherwise})
            return node.otherwise
        if isinstance(node, SetVars):
            for name, value in node.variables.items():
                self.vars[name] = self.text(value) if isinstance(value, str) else value
            await self.record("ivr.set", {"node": node_id, "variables": sorted(node.variables)})
            return node.next
        if isinstance(node, Lookup):
            return await self.lookup(node_id, node)
        if isinstance(node, Http):
            return await self.http(node_id, node)
        if isinstance(node, Hours):
            return await self.hours(node_id, node, moment)
        if isinstance(node, Goto):
            return await self.goto(node_id, node)
        if isinstance(node, RecordNode):
            return await self.control_recording(node_id, node)
        if isinstance(node, Consent):
            return await self.ask_consent(node_id, node)
        if isinstance(node, Queue):
            if node.prompt:
                await self.session.say(self.text(node.prompt))
            return self.outcome("queue", node_id, target=node.queue, priority=node.priority, skills=list(node.skills))
        if isinstance(node, Transfer):
            if node.prompt:
                await self.session.say(self.text(node.prompt))
            return self.outcome("transfer", node_id, target=node.to)
        if isinstance(node, Voicemail):
            await self.session.say(self.text(node.prompt))
            return self.outcome("voicemail", node_id)
        if isinstance(node, Callback):
            await self.session.say(self.text(node.prompt))
            return self.outcome("callback", node_id, target=self.vars["caller"]["number"])
        if isinstance(node, Survey):
            await run_survey(node_id, node, self.session, self.text, self.save_survey_answer, self.record)
            return node.next
        if isinstance(node, Hangup):
            if node.text:
                await self.session.say(self.text(node.text))
            return self.outcome("hangup", node_id)
        raise FlowError(f"node kind {getattr(node, 'kind', '?')!r} is not supported")

    async def save_survey_answer(self, question: str, score: int, survey: str | None) -> None:
        answer = {"question": question, "score": score, **({"survey": survey} if survey else {})}
        save = self.ctx.services.save_survey_answer
        await (save(question, score, survey) if save is not None else self.ctx.record("survey.answer", answer))

    async def read_digits(self, spec: Gather | Verify, *, secret: bool) -> str | None:
        reader = self.session.read_secret_digits if secret and isinstance(self.session, SecretDigits) else None
        return await (reader or self.session.read_digits)(
            min_digits=spec.min_digits,
            max_digits=spec.max_digits,
            terminator=spec.terminator,
            timeout_s=spec.timeout_s,
            inter_digit_timeout_s=spec.inter_digit_timeout_s,
        )

    def recording_paused(self) -> bool:
        """Between a `record: pause` and its `resume` (on any channel, recorded or not): keys are secret."""
        return self.pause_asked or (self.ctx.recording is not None and self.ctx.recording.paused)

    async def gather(self, node_id: str, node: Gather) -> str:
        # Keys read while the recording is paused (a card number) are secret, whatever the node says.
        secret = node.secret or self.recording_paused()
        # Secrets are never listened for: spoken aloud they reach the recognizer, and anyone nearby.
        speech = None if secret else await self._digits_speech(node_id, node)
        if speech is not None:
            raw = await self.spoken_digits(node_id, node, speech)
        else:
            if node.prompt:
                await self.session.say(self.text(node.prompt))
            raw = await self.read_digits(node, secret=secret)
        digits = _digits(raw, node.terminator, node.min_digits, node.max_digits)
        if digits is None:
            await self.record("ivr.no_input", {"node": node_id, "got": "digits" if raw else None})
            return node.no_input
        self.vars[node.into] = digits
        if secret:
            self.secrets.add(node.into)
        else:
            self.secrets.discard(node.into)
        shown = "*" * len(digits) if secret else digits
        await self.record("ivr.input", {"node": node_id, "digits": shown, "into": node.into})
        return node.next

    async def _digits_speech(self, node_id: str, node: Gather) -> SpeechRequest | None:
        """The speech request of a gather that listens for spoken digits here, or None (keys only)."""
        if node.speech is None or not isinstance(self.session, SpeechInput):
            return None
        request = SpeechRequest(
            phrases={},
            language=node.speech.language or self.flow.language,
            min_confidence=node.speech.min_confidence,
            engine=node.speech.engine,
            timeout_s=node.timeout_s,
            end_silence_s=node.speech.end_silence_s,
            max_speech_s=node.speech.max_speech_s,
            digits=(node.min_digits, node.max_digits),
        )
        reason = await self.session.speech_unavailable(request)
        if reason is not None:
            await self.record("ivr.speech_unavailable", {"node": node_id, "reason": reason})
            return None
        return request

    async def spoken_digits(self, node_id: str, node: Gather, request: SpeechRequest) -> str | None:
        """Digits said ("four two seven") or keyed, whichever comes first; None when nothing usable came."""
        assert isinstance(self.session, SpeechInput) and node.prompt is not None  # the schema requires it
        answer = await self.session.ask_choice(self.text(node.prompt), request)
        if answer is None or answer.key is None:
            if answer is not None:  # they spoke, but not digits the recognizer was sure of
                await self.record(
                    "ivr.input", {"node": node_id, "via": "speech", "valid": False, "confidence": answer.confidence}
                )
            return None
        if answer.via == "speech":
            return answer.key
        first = answer.key  # the first key typed: read the rest as a keypad gather would
        if node.max_digits == 1 or first == node.terminator:
            return first
        rest = await self.session.read_digits(
            min_digits=1,
            max_digits=node.max_digits - 1,
            terminator=node.terminator,
            timeout_s=node.inter_digit_timeout_s,
            inter_digit_timeout_s=node.inter_digit_timeout_s,
        )
        return first + (rest or "")

    async def control_recording(self, node_id: str, node: RecordNode) -> str:
        if node.action in ("pause", "resume"):
            self.pause_asked = node.action == "pause"
        result = "skipped" if self.ctx.recording is None else await self.ctx.recording.control(node.action)
        await self.record("ivr.record", {"node": node_id, "action": node.action, "result": result})
        return node.next

    async def ask_consent(self, node_id: str, node: Consent) -> str:
        """A two-key question; the answer (or `unanswered`) sets `record_consent` and is kept on the call."""
        if self.ctx.recording is None:
            await self.record("ivr.record", {"node": node_id, "action": "consent", "result": "skipped"})
            return node.next
        given: bool | None = None
        for attempt in range(1, node.retries + 1):
            await self.session.say(self.text(node.prompt))
            answer = (await self.session.read_choice(node.timeout_s) or "").strip()
            if answer in (node.accept, node.refuse):
                given = answer == node.accept
                break
            if answer:
                shown = "*" if self.recording_paused() else answer[:20]
                await self.record("ivr.input", {"node": node_id, "digit": shown, "valid": False, "attempt": attempt})
            else:
                await self.record("ivr.no_input", {"node": node_id, "attempt": attempt})
            if attempt < node.retries:
                await self.session.say(self.text(node.no_match))
        via = "dtmf" if given is not None else "unanswered"
        if given is None:
            given = node.unanswered == "accept"
        self.vars[CONSENT_VARIABLE] = given
        await self.ctx.recording.consent(given, via)
        return node.next

    async def hours(self, node_id: str, node: Hours, moment: dt.datetime) -> str:
        try:
            calendar = self.ctx.services.calendars.get(node.calendar)
        except UnknownCalendar as exc:
            raise FlowError(exc.args[0]) from exc
        is_open = calendar.is_open(moment)
        data: dict[str, Any] = {"node": node_id, "calendar": node.calendar, "open": is_open}
        holiday = calendar.holiday(moment)
        if holiday is not None:
            data["holiday"] = holiday.name or holiday.date.isoformat()
        await self.record("ivr.hours", data)
        return node.open if is_open else node.closed

    async def menu(self, node_id: str, node: Menu) -> str:
        labels = {choice.label.strip().casefold(): key for key, choice in node.choices.items()}
        for choice_key, choice in node.choices.items():
            for phrase in choice.say or []:
                labels.setdefault(phrase.strip().casefold(), choice_key)
        speech = node.speech if isinstance(self.session, SpeechInput) else None
        # A voice turn that takes keys only must not invite the caller to speak: the keypad prompt, if any.
        keys_prompt = speech.dtmf_prompt if speech is not None and speech.dtmf_prompt else node.prompt
        if speech is not None:
            assert isinstance(self.session, SpeechInput)
            reason = await self.session.speech_unavailable(self._speech_request(node, speech))
            if reason is not None:
                await self.record("ivr.speech_unavailable", {"node": node_id, "reason": reason})
                speech = None
        for attempt in range(1, node.retries + 1):
            listening = speech is not None and attempt <= speech.speech_attempts(node.retries)
            data: dict[str, Any] = {"node": node_id, "attempt": attempt, "options": sorted(node.choices)}
            if speech is not None:
                data["speech"] = listening
            await self.record("ivr.menu", data)
            if listening:
                assert speech is not None
                next_node = await self.spoken_choice(node_id, node, speech, attempt)
                if next_node is not None:
                    return next_node
                continue
            await self.session.say(self.text(keys_prompt))
            answer = await self.session.read_choice(node.timeout_s)
            if answer is None or not answer.strip():
                await self.record("ivr.no_input", {"node": node_id, "attempt": attempt})
                await self.session.say(self.text(node.no_input))
                continue
            typed = answer.strip()
            key = typed if typed in node.choices else labels.get(typed.casefold())
            shown = "*" if self.recording_paused() else key or typed[:20]
            await self.record(
                "ivr.input", {"node": node_id, "digit": shown, "valid": key is not None, "attempt": attempt}
            )
            if key is not None:
                return node.choices[key].next
            await self.session.say(self.text(node.no_match))
        await self.record("ivr.menu_failed", {"node": node_id, "next": node.fallback})
        return node.fallback

    def _speech_request(self, node: Menu, speech: MenuSpeech) -> SpeechRequest:
        return SpeechRequest(
            phrases={key: choice.phrases() for key, choice in node.choices.items()},
            language=speech.language or self.flow.language,
            min_confidence=speech.min_confidence,
            engine=speech.engine,
            timeout_s=node.timeout_s,
            end_silence_s=speech.end_silence_s,
            max_speech_s=speech.max_speech_s,
        )

    async def spoken_choice(self, node_id: str, node: Menu, speech: MenuSpeech, attempt: int) -> str | None:
        """One turn that listens for keys and speech at once; the next node, or None to try again."""
        assert isinstance(self.session, SpeechInput)
        answer = await self.session.ask_choice(self.text(node.prompt), self._speech_request(node, speech))
        if answer is None:
            await self.record("ivr.no_input", {"node": node_id, "attempt": attempt})
            await self.session.say(self.text(node.no_input))
            return None
        key = answer.key if answer.key in node.choices else None
        data: dict[str, Any] = {"node": node_id, "via": answer.via, "valid": key is not None, "attempt": attempt}
        if self.recording_paused():  # what a caller keys or says during a pause is not written down
            data["digit"] = "*"
        elif answer.via == "dtmf":
            data["digit"] = answer.key
        else:
            data.update(digit=key, heard=answer.text[:100], confidence=answer.confidence)
        await self.record("ivr.input", data)
        if key is not None:
            return node.choices[key].next
        await self.session.say(self.text(node.no_match))
        return None

    async def lookup(self, node_id: str, node: Lookup) -> str:
        if node.by == "caller_number":
            value: Any = self.vars["caller"]["number"]
        else:
            value = resolve(self.vars, node.variable or "")
        found = None
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            found = await self.ctx.services.lookup_customer(node.identity, str(value))
        self.vars[node.into] = _customer_vars(found)
        self.secrets.discard(node.into)
        await self.record("ivr.lookup", {"node": node_id, "by": node.by, "found": found is not None})
        if found is None:
            return node.not_found
        if node.verify is None:
            return node.found or node.not_found  # the schema requires `found` without `verify`
        return await self.verify(node_id, node.into, node.verify)

    async def verify(self, node_id: str, into: str, spec: Verify) -> str:
        """Ask for the secret up to `attempts` times. What was typed is compared by the store and then
        forgotten: it is not recorded, not put in a variable, not shown."""
        customer_id = self.vars[into].get("id")
        for attempt in range(1, spec.attempts + 1):
            await self.session.say(self.text(spec.prompt))
            raw = await self.read_digits(spec, secret=True)
            given = _digits(raw, spec.terminator, spec.min_digits, spec.max_digits)
            if given is None:
                result = "invalid" if raw and raw.strip() else "no_input"  # badly sized or not keys
            elif customer_id is None or customer_id == "":
                result = "no_match"  # a store that finds customers without ids cannot verify them
            else:
                matched = await self.ctx.services.verify_customer(str(customer_id), spec.field, given)
                result = "match" if matched else "no_match"
            await self.record(
                "ivr.verify", {"node": node_id, "field": spec.field, "attempt": attempt, "result": result}
            )
            if result == "match":
                self.vars[into]["verified"] = True
                return spec.verified
            if spec.retry and attempt < spec.attempts:
                await self.session.say(self.text(spec.retry))
        await self.record(
            "ivr.verify_failed",
            {"node": node_id, "field": spec.field, "attempts": spec.attempts, "next": spec.not_verified},
        )
        return spec.not_verified

    async def http(self, node_id: str, node: Http) -> str:
        request = HttpRequest(
            method=node.method,
            url=self.text(node.url),
            headers={k: self.text(v) for k, v in node.headers.items()},
            json=_render_json(node.json_body, self.vars),
            timeout_s=node.timeout_s,
        )
        try:
            answer = await asyncio.wait_for(self.ctx.services.http(request), node.timeout_s + 1)
        except (HttpCallFailed, TimeoutError) as exc:
            error = self.without_secrets(str(exc) or type(exc).__name__)
            await self.record("ivr.http", {"node": node_id, "method": node.method, "ok": False, "error": error})
            return node.on_error
        missing = []
        for name, path in node.map.items():
            value = resolve(answer if isinstance(answer, Mapping) else {"": answer}, path)
            if value is _MISSING:
                missing.append(path)
                value = None
            self.vars[name] = _plain(value)
        await self.record("ivr.http", {"node": node_id, "method": node.method, "ok": True, "missing": missing})
        return node.next

    async def goto(self, node_id: str, node: Goto) -> str:
        target = self.flow if node.flow == self.flow.flow else self.ctx.flows.get(node.flow)
        if target is None:
            raise FlowError(f"goto: flow {node.flow!r} is not loaded")
        start = node.node or target.start
        if start not in target.nodes:
            raise FlowError(f"goto: node {start!r} does not exist in flow {node.flow!r}")
        await self.record("ivr.goto", {"node": node_id, "to_flow": target.flow, "to_node": start})
        self.flow = target
        return start


async def say_opening(flow: Flow, session: Session, context: FlowContext) -> str:
    """Say the flow's opening (flows/opening.py: the prompts that need not know who calls) and return the
    node the flow goes on from, for `run_flow(start=...)`. A prompt that fails to render is not said here:
    the flow goes on from it, and its own run records the failure."""
    run = _Run(flow, session, context)
    node_id = flow.start
    for node_id in opening(flow):
        try:
            following = await run.step(node_id, flow.nodes[node_id])
        except (FlowError, TemplateError):
            return node_id
        assert isinstance(following, str)  # a say or play node always goes on
        node_id = following
    return node_id


async def run_flow(flow: Flow, session: Session, context: FlowContext, *, start: str | None = None) -> Outcome:
    """Run `flow` from its start node (or `start`, to go on after a queue's wait or a transfer that failed,
    with the variables collected so far in `context.variables`) until an outcome (queue, transfer,
    voicemail, callback, hangup) or an error (a failing template, an unknown goto target, too many steps)."""
    try:
        return await _Run(flow, session, context).run(start)
    finally:
        if context.recording is not None:  # a flow's recording ends with it (the agent leg is recorded apart)
            await context.recording.control("stop")
