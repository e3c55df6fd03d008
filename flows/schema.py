"""The schema of a flow file (`dialplans/flows/*.yaml`): one flow, a start node and named nodes linked by `next`.

Every node has a `kind`. Most nodes name the node(s) that follow; `queue`, `transfer`, `voicemail`, `callback`
and `hangup` end the flow with an outcome, and `goto` continues in another flow. Text fields are Jinja2
templates rendered in a sandbox with the flow's variables: `caller` (number, channel), `customer` (known, id,
name, verified), `now` and whatever the flow set.

`now` is the current time in the flow's `timezone` (an IANA name such as Europe/Madrid; UTC when the flow
declares none, and the validator asks for an explicit `timezone:` as soon as a flow reads `now`):
`now.date` "2026-11-23", `now.time` "14:05", `now.weekday` "mon", `now.hour` 14, `now.minute` 5,
`now.timezone` "Europe/Madrid". It is refreshed at every step. Business hours belong in calendars
(dialplans/hours.yaml, the `hours` node); `now` is for the odd time test in a `branch`."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from dialplans.hours import TimeZoneName


def _str_if_int(value: object) -> object:
    # `1:` unquoted in YAML is the integer 1; a keypad key is text.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _iso_if_date(value: object) -> object:
    # YAML reads an unquoted 2026-12-24 as a date; flows compare it with `now.date`, which is text.
    return value.isoformat() if isinstance(value, dt.date) and not isinstance(value, dt.datetime) else value


NodeId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$", max_length=64)]
FlowId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$", max_length=64)]
VarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]
VarPath = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$", max_length=200)]
DtmfKey = Annotated[str, BeforeValidator(_str_if_int), StringConstraints(pattern=r"^[0-9*#]$")]
Template = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Scalar = Annotated[str | int | float | bool | None, BeforeValidator(_iso_if_date)]
# What `gte` and `lt` compare with: numbers, or text such as "09:00" (compared as text).
Comparable = Annotated[StrictInt | StrictFloat | StrictStr, BeforeValidator(_iso_if_date)]

# The flow variable a `consent` node sets (recordings read it: a refusal stops the call's recording).
CONSENT_VARIABLE = "record_consent"
TERMINAL_KINDS = frozenset({"queue", "transfer", "voicemail", "callback", "hangup"})
INPUT_KINDS = frozenset({"gather", "menu"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Say(_Strict):
    """Speak (voice) or send (text) a templated message."""

    kind: Literal["say"]
    text: Template
    next: NodeId


class Play(_Strict):
    """Play a recorded sound; text channels send `text` instead, so it is required."""

    kind: Literal["play"]
    file: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$", max_length=200)]
    text: Template
    next: NodeId

    @field_validator("file")
    @classmethod
    def stays_in_sounds(cls, file: str) -> str:
        if ".." in file.split("/"):
            raise ValueError("file must stay inside Asterisk's sounds folder (no '..')")
        return file

    @model_validator(mode="before")
    @classmethod
    def text_alternative_required(cls, data: Any) -> Any:
        if isinstance(data, dict) and "text" not in data:
            raise PydanticCustomError(
                "play_text_missing", "play needs `text`: what text channels send instead of the audio file"
            )
        return data


class GatherSpeech(_Strict):
    """Callers may say the digits ("four two seven", "oh" for zero in English) as well as key them: both are
    listened for at once. A spoken answer the recognizer is not sure of (below `min_confidence`, a word that
    is not a digit, too few or too many digits) goes to `no_input` like silence does."""

    language: Literal["en", "es"] | None = None  # the flow's language when not given
    min_confidence: float = Field(0.5, ge=0, le=1)
    engine: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]+$", max_length=32)] | None = None
    end_silence_s: float = Field(0.8, ge=0.2, le=3)
    max_speech_s: float = Field(10, gt=0, le=30)


class Gather(_Strict):
    """Read keypad digits into a variable."""

    kind: Literal["gather"]
    prompt: Template | None = None
    min_digits: int = Field(1, ge=1, le=32)
    max_digits: int = Field(1, ge=1, le=32)
    terminator: DtmfKey | None = "#"
    inter_digit_timeout_s: float = Field(3, gt=0, le=60)
    timeout_s: float = Field(6, gt=0, le=120)
    into: VarName
    secret: bool = False  # PINs and the like: digits are not written on the timeline
    next: NodeId
    no_input: NodeId
    speech: GatherSpeech | None = None

    @model_validator(mode="after")
    def digits_range(self) -> Gather:
        if self.min_digits > self.max_digits:
            raise ValueError(f"min_digits ({self.min_digits}) is more than max_digits ({self.max_digits})")
        if self.speech is not None and self.secret:
            raise ValueError("a secret gather cannot take `speech`: a PIN said aloud is heard by anyone nearby")
        if self.speech is not None and not self.prompt:
            raise ValueError("a gather with `speech` needs a `prompt`: what the caller may interrupt by speaking")
        return self


Phrase = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class Choice(_Strict):
    label: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    next: NodeId
    # What a caller may say (or type) to pick this choice; the label when not given.
    say: list[Phrase] | None = Field(None, min_length=1, max_length=20)

    def phrases(self) -> list[str]:
        return list(self.say) if self.say else [self.label]


class MenuSpeech(_Strict):
    """Callers may say a choice (its `say` phrases, or its label) as well as key it: both are listened for
    at once and the first answer wins; speaking stops the prompt (barge-in). The first `attempts` tries
    listen for speech; the remaining tries of `retries` take keys only, with `dtmf_prompt` if given."""

    language: Literal["en", "es"] | None = None  # the flow's language when not given
    min_confidence: float = Field(0.5, ge=0, le=1)
    engine: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]+$", max_length=32)] | None = None
    attempts: int | None = Field(None, ge=1, le=10)  # default: all tries but the last (at least one)
    dtmf_prompt: Template | None = None
    end_silence_s: float = Field(0.6, ge=0.2, le=3)  # the pause that ends what the caller says
    max_speech_s: float = Field(8, gt=0, le=30)

    def speech_attempts(self, retries: int) -> int:
        return self.attempts if self.attempts is not None else max(1, retries - 1)


class Menu(_Strict):
    """Offer choices; a keypad key on voice (and, with `speech`, a spoken choice), the key or the label
    (or a `say` phrase) typed on text channels."""

    kind: Literal["menu"]
    prompt: Template
    choices: dict[DtmfKey, Choice] = Field(min_length=1)
    no_match: Template
    no_input: Template
    retries: int = Field(3, ge=1, le=10)
    timeout_s: float = Field(6, gt=0, le=120)
    fallback: NodeId
    speech: MenuSpeech | None = None

    @model_validator(mode="before")
    @classmethod
    def fallback_required(cls, data: Any) -> Any:
        if isinstance(data, dict) and "fallback" not in data:
            raise PydanticCustomError(
                "menu_fallback_missing", "menu needs `fallback`: the node to go to when no valid choice was made"
            )
        return data


class Condition(_Strict):
    """`var` compared with exactly one test: `equals`, `not_equals`, `in`, `exists`, or a comparison with
    `gte` (greater than or equal) and/or `lt` (less than); `gte` with `lt` together is one range test.

    Comparisons hold between two numbers (a variable holding digits, such as gathered keys, counts as its
    number when compared with a number) or between two texts, compared as text: "09:00" < "14:05", which
    suits `now.time` and `now.date`. Anything else (a missing variable, a number against a text) is false."""

    var: VarPath
    equals: Scalar = None
    not_equals: Scalar = None
    in_: list[Scalar] | None = Field(None, alias="in")
    exists: bool | None = None
    gte: Comparable | None = None
    lt: Comparable | None = None
    next: NodeId

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def one_test(self) -> Condition:
        given = [name for name in _TESTS if self._given(name)]
        if given != ["gte", "lt"] and len(given) != 1:
            raise ValueError(
                "a condition needs exactly one of equals, not_equals, in, exists, or gte/lt "
                f"(got {', '.join(given) if given else 'none'})"
            )
        for name in ("gte", "lt"):
            if name in given and getattr(self, name) is None:
                raise ValueError(f"{name} needs a number or a text to compare with")
        if given == ["gte", "lt"] and not _comparable(self.gte, self.lt):
            raise ValueError(f"gte ({self.gte!r}) and lt ({self.lt!r}) must both be numbers or both be texts")
        return self

    def _given(self, name: str) -> bool:
        field = "in_" if name == "in" else name
        return field in self.model_fields_set

    def test(self) -> str:
        """The test's name; "range" for `gte` and `lt` together."""
        given = [name for name in _TESTS if self._given(name)]
        return "range" if given == ["gte", "lt"] else given[0]


_TESTS = ("equals", "not_equals", "in", "exists", "gte", "lt")


def _comparable(a: object, b: object) -> bool:
    def number(x: object) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool)

    return (number(a) and number(b)) or (isinstance(a, str) and isinstance(b, str))


class Branch(_Strict):
    kind: Literal["branch"]
    when: list[Condition] = Field(min_length=1)
    otherwise: NodeId


class SetVars(_Strict):
    kind: Literal["set"]
    variables: dict[VarName, Template | int | float | bool] = Field(min_length=1)
    next: NodeId


class Verify(_Strict):
    """After a lookup finds the customer: ask for a secret (a PIN, a date of birth as DDMMYYYY digits) and let
    the customer store compare it with the customer's `field`. The digits are never recorded, stored in a
    variable or shown in a transcript. A wrong, missing or badly sized answer uses up one of `attempts`."""

    prompt: Template
    field: Annotated[str, StringConstraints(pattern=r"^[a-z_]+$", max_length=64)]
    attempts: int = Field(3, ge=1, le=10)
    min_digits: int = Field(4, ge=1, le=32)
    max_digits: int = Field(8, ge=1, le=32)
    terminator: DtmfKey | None = "#"
    inter_digit_timeout_s: float = Field(3, gt=0, le=60)
    timeout_s: float = Field(8, gt=0, le=120)
    retry: Template | None = None  # said after a failed attempt when attempts remain
    verified: NodeId
    not_verified: NodeId

    @model_validator(mode="after")
    def digits_range(self) -> Verify:
        if self.min_digits > self.max_digits:
            raise ValueError(f"min_digits ({self.min_digits}) is more than max_digits ({self.max_digits})")
        return self


class Lookup(_Strict):
    """Find the customer behind the caller's number or behind an identity held in a variable.

    `<into>.verified` is false after a lookup; with `verify`, a found customer is asked for a secret and goes
    to `verify.verified` (and `<into>.verified` becomes true) or `verify.not_verified` instead of `found`."""

    kind: Literal["lookup"]
    by: Literal["caller_number", "variable"] = "caller_number"
    variable: VarPath | None = None
    identity: Annotated[str, StringConstraints(pattern=r"^[a-z_]+$")] = "phone"
    into: VarName = "customer"
    verify: Verify | None = None
    found: NodeId | None = None
    not_found: NodeId

    @model_validator(mode="after")
    def variable_when_by_variable(self) -> Lookup:
        if self.by == "variable" and self.variable is None:
            raise ValueError("lookup by variable needs `variable`")
        if self.by == "caller_number" and self.variable is not None:
            raise ValueError("`variable` is only used with `by: variable`")
        if self.verify is None and self.found is None:
            raise ValueError("lookup needs `found`: the node to go to when the customer is found")
        if self.verify is not None and self.found is not None:
            raise ValueError(
                "with `verify`, a found customer goes to verify.verified or verify.not_verified: remove `found`"
            )
        return self


class Http(_Strict):
    """Call an outside service; `map` copies dotted paths of the JSON answer into variables."""

    kind: Literal["http"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: Annotated[str, StringConstraints(pattern=r"^https?://", max_length=2000)]
    headers: dict[str, Template] = Field(default_factory=dict)
    json_body: Any = Field(None, alias="json")
    timeout_s: float = Field(3, gt=0, le=30)
    map: dict[VarName, Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")]] = Field(
        default_factory=dict
    )
    next: NodeId
    on_error: NodeId

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def body_is_json(self) -> Http:
        try:
            json.dumps(self.json_body)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"`json` must be plain JSON data: {exc}") from exc
        return self


class CallbackOffer(_Strict):
    """Said to a caller waiting in a queue every `every_s` seconds: pressing `key` continues the flow at
    `next` (a `callback` node there books the callback and keeps the caller's place in the queue)."""

    every_s: int = Field(30, ge=1, le=3_600)
    key: Annotated[str, StringConstraints(pattern=r"^[0-9*#]$")] = "1"
    prompt: Template = "To be called back without losing your place in the queue, press 1."
    next: NodeId


class Queue(_Strict):
    kind: Literal["queue"]
    queue: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    priority: int = Field(0, ge=0, le=10)
    skills: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(default_factory=list)
    prompt: Template | None = None
    max_wait_s: int | None = Field(None, ge=1, le=86_400)  # None: the queue's max_wait_s
    # Where the flow goes on once max_wait_s has passed (e.g. a voicemail or callback node); without it the
    # caller hears the queue's no_agent_prompt and the call ends.
    on_timeout: NodeId | None = None
    # Where the flow goes on when the queue is closed by its hours (e.g. a voicemail or callback node); without
    # it the caller hears the queue's closed_prompt and the call ends.
    on_closed: NodeId | None = None
    callback_offer: CallbackOffer | None = None
    # Where the flow goes on when the agent hangs up first and the caller is still on the line (e.g. a
    # `survey` node); without it the call ends with the agent's hang-up.
    after_agent: NodeId | None = None


class Transfer(_Strict):
    kind: Literal["transfer"]
    to: Annotated[str, StringConstraints(pattern=r"^\+?[0-9A-Za-z*#_-]+$", max_length=64)]
    prompt: Template | None = None
    # Where the flow goes on when the target does not answer (busy, no answer, unknown); without it the
    # caller hears an apology and the call ends.
    on_failure: NodeId | None = None


class Voicemail(_Strict):
    kind: Literal["voicemail"]
    prompt: Template


class Callback(_Strict):
    kind: Literal["callback"]
    prompt: Template
    # The queue whose agents call back when the caller was not waiting in one (a caller coming from a
    # `queue` node keeps that queue and their place in it).
    queue: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None


class SurveyQuestion(_Strict):
    question: Literal["csat", "nps", "ces"]  # its scale: csat 1-5, nps 0-10, ces 1-7 (reports/kpis.py)
    prompt: Template


class Survey(_Strict):
    """Ask satisfaction questions; each answer on its scale (keys, or a typed number on text channels) is
    recorded as `survey.answer` on the interaction. An answer off the scale is asked once more; no answer
    skips the question."""

    kind: Literal["survey"]
    survey: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+$", max_length=80)] | None = None
    questions: list[SurveyQuestion] = Field(min_length=1, max_length=5)
    invalid: Template = "Sorry, that is not one of the choices."
    timeout_s: float = Field(6, gt=0, le=60)
    next: NodeId


class Hours(_Strict):
    """Open or closed now, by a calendar of dialplans/hours.yaml (weekly hours, holidays, time zone)."""

    kind: Literal["hours"]
    calendar: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    open: NodeId
    closed: NodeId


class Goto(_Strict):
    kind: Literal["goto"]
    flow: FlowId
    node: NodeId | None = None


class Hangup(_Strict):
    kind: Literal["hangup"]
    text: Template | None = None


class Record(_Strict):
    """Control the recording of the call (recordings/): `start` records the caller's side of the call from now
    on (what they say and what they hear) until `stop` or the end of the flow; `pause` and `resume` leave a
    span out of it, e.g. around a `gather` of a card number (keys pressed while paused are never shown or
    recorded anywhere). The conversation with an agent is recorded by the queue's policy, as before. Text
    channels pass through (nothing to record)."""

    kind: Literal["record"]
    action: Literal["start", "stop", "pause", "resume"]
    next: NodeId


class Consent(_Strict):
    """Ask whether the call may be recorded. `refuse` (or no valid answer after `retries`, unless
    `unanswered: accept`) means nothing of this call is recorded: not the flow's recording, not the
    conversation with an agent, whatever the queue says. The answer is `recording.consent` on the timeline
    and `record_consent` (true/false) in the flow. Text channels pass through (nothing to record)."""

    kind: Literal["consent"]
    prompt: Template
    accept: DtmfKey = "1"
    refuse: DtmfKey = "2"
    no_match: Template = "Sorry, I did not get that."
    retries: int = Field(2, ge=1, le=5)
    timeout_s: float = Field(6, gt=0, le=60)
    unanswered: Literal["refuse", "accept"] = "refuse"
    next: NodeId

    @model_validator(mode="after")
    def distinct_keys(self) -> Consent:
        if self.accept == self.refuse:
            raise ValueError(f"accept and refuse are the same key ({self.accept!r})")
        return self


Node = Annotated[
    Say
    | Play
    | Gather
    | Menu
    | Branch
    | SetVars
    | Lookup
    | Http
    | Queue
    | Transfer
    | Voicemail
    | Callback
    | Survey
    | Hours
    | Goto
    | Hangup
    | Record
    | Consent,
    Field(discriminator="kind"),
]

NODE_KINDS: tuple[str, ...] = (
    "say",
    "play",
    "gather",
    "menu",
    "branch",
    "set",
    "lookup",
    "http",
    "queue",
    "transfer",
    "voicemail",
    "callback",
    "survey",
    "hours",
    "goto",
    "hangup",
    "record",
    "consent",
)


class Flow(_Strict):
    flow: FlowId
    description: str = ""
    language: Literal["en", "es"] = "en"
    voice: str | None = None
    timezone: TimeZoneName | None = None  # for `now`; None = UTC
    start: NodeId
    nodes: dict[NodeId, Node] = Field(min_length=1)


# A queue's wait that ran out, a transfer nobody answered, the caller still on the line after the agent.
_EXITS = ("on_timeout", "on_closed", "on_failure", "after_agent")


def node_references(node: BaseModel) -> list[tuple[tuple[str | int, ...], str]]:
    """The nodes of the same flow that `node` can go to, each with its place inside the node."""
    refs: list[tuple[tuple[str | int, ...], str]] = []
    if isinstance(node, Menu):
        refs += [(("choices", key, "next"), choice.next) for key, choice in node.choices.items()]
        refs.append((("fallback",), node.fallback))
    elif isinstance(node, Branch):
        refs += [(("when", i, "next"), cond.next) for i, cond in enumerate(node.when)]
        refs.append((("otherwise",), node.otherwise))
    else:
        if isinstance(node, Lookup) and node.verify is not None:
            refs += [
                (("verify", "verified"), node.verify.verified),
                (("verify", "not_verified"), node.verify.not_verified),
            ]
        for field in ("next", "no_input", "found", "not_found", "on_error", "open", "closed", *_EXITS):
            target = getattr(node, field, None)
            if isinstance(target, str):
                refs.append(((field,), target))
        if isinstance(node, Queue) and node.callback_offer is not None:
            refs.append((("callback_offer", "next"), node.callback_offer.next))
    return refs


def templates_of(node: BaseModel) -> list[tuple[tuple[str | int, ...], str]]:
    """Every templated text of a node, each with its place inside the node."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    for field in ("text", "prompt", "no_match", "no_input"):
        value = getattr(node, field, None)
        if isinstance(value, str) and not (isinstance(node, Gather) and field == "no_input"):
            found.append(((field,), value))
    if isinstance(node, Menu) and node.speech is not None and node.speech.dtmf_prompt is not None:
        found.append((("speech", "dtmf_prompt"), node.speech.dtmf_prompt))
    if isinstance(node, Queue) and node.callback_offer is not None:
        found.append((("callback_offer", "prompt"), node.callback_offer.prompt))
    if isinstance(node, Survey):
        found += [(("questions", i, "prompt"), q.prompt) for i, q in enumerate(node.questions)]
        found.append((("invalid",), node.invalid))
    if isinstance(node, Lookup) and node.verify is not None:
        found.append((("verify", "prompt"), node.verify.prompt))
        if node.verify.retry is not None:
            found.append((("verify", "retry"), node.verify.retry))
    if isinstance(node, SetVars):
        found += [(("variables", name), v) for name, v in node.variables.items() if isinstance(v, str)]
    if isinstance(node, Http):
        found.append((("url",), node.url))
        found += [(("headers", name), v) for name, v in node.headers.items()]
        found += _json_strings(node.json_body, ("json",))
    return found


def _json_strings(value: Any, where: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    if isinstance(value, str):
        return [(where, value)]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _json_strings(v, (*where, str(k)))]
    if isinstance(value, list):
        return [t for i, v in enumerate(value) for t in _json_strings(v, (*where, i))]
    return []


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a flow file, for editors and for `hilo flows schema`."""
    schema = Flow.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Hilo flow"
    return schema
