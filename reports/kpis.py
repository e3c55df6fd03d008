"""The KPI formulas, on plain data: one `Contact` per interaction, read from its timeline events
(reports/facts.py), and `compute` turning a group of contacts into figures. README ("KPIs") states every
formula in words; the unit tests check them by hand.

Rates are ratios between 0 and 1 (service level 0.8 is 80%), NPS is -100..100, times are seconds; a
figure without anything to measure is None (no answered call: no ASA), never 0."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import fmean
from typing import Any

from pydantic import BaseModel, Field

# survey.answer {question, score}: the question decides the scale (reports/survey.py records them).
SURVEY_SCALES: Mapping[str, tuple[int, int]] = {"csat": (1, 5), "nps": (0, 10), "ces": (1, 7)}
CSAT_SATISFIED = 4  # 4 or 5 on the 1-5 scale
NPS_PROMOTER, NPS_DETRACTOR = 9, 6  # 9-10 promote, 0-6 detract

ABANDONED = "abandoned"
TRANSFERRED = "transferred"
CALLBACK_REQUESTED = "callback-requested"


@dataclass(frozen=True)
class SurveyAnswer:
    question: str
    score: int


@dataclass(frozen=True)
class Contact:
    """One interaction as its timeline tells it. `customer_id` is the customer it belongs to after any
    merges, so a customer's contacts before and after a merge are one history."""

    interaction_id: str
    customer_id: str
    channel: str
    started_at: datetime  # interaction.started
    queue: str | None = None  # the first routing.queued
    queued_at: datetime | None = None
    agent: str | None = None  # the first agent.answered
    answered_at: datetime | None = None
    ended_at: datetime | None = None  # interaction.ended
    outcome: str | None = None
    wrapped_at: datetime | None = None  # agent.disposition (console wrap-up)
    callback_requested: bool = False  # callback.requested, or ended as callback-requested
    surveys: tuple[SurveyAnswer, ...] = ()

    @property
    def queued(self) -> bool:
        return self.queued_at is not None

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def wait_s(self) -> float | None:
        """Queueing to an agent's answer."""
        if self.answered_at is None or self.queued_at is None:
            return None
        return max(0.0, (self.answered_at - self.queued_at).total_seconds())

    @property
    def talk_s(self) -> float | None:
        if self.answered_at is None or self.ended_at is None:
            return None
        return max(0.0, (self.ended_at - self.answered_at).total_seconds())

    def wrapup_s(self, cap_s: float) -> float:
        """From the end to the disposition; 0 without one, or if it was given during the interaction."""
        if self.wrapped_at is None or self.ended_at is None:
            return 0.0
        return min(cap_s, max(0.0, (self.wrapped_at - self.ended_at).total_seconds()))

    @property
    def hold_s(self) -> float:
        # Nothing puts an answered call on hold yet (no hold event exists): 0 until one does.
        return 0.0

    @property
    def callback(self) -> bool:
        return self.callback_requested or self.outcome == CALLBACK_REQUESTED


@dataclass(frozen=True)
class KpiRules:
    service_level_of: Callable[[str | None], float]  # a queue's threshold in seconds
    repeat_window: timedelta
    wrapup_max_s: float


@dataclass(frozen=True)
class Followup:
    """What came after a contact: the channel of the same customer's next contact if it started within the
    repeat window after this one ended (None: no repeat), and whether that window is over yet."""

    next_channel: str | None
    window_closed: bool


def followups(contacts: Iterable[Contact], window: timedelta, now: datetime) -> dict[str, Followup]:
    """For each ended contact: the customer's next contact (the first to start after it started) counts as
    a repeat when it started no later than `window` after this one ended. Contacts still open get none."""
    by_customer: dict[str, list[Contact]] = defaultdict(list)
    for contact in contacts:
        by_customer[contact.customer_id].append(contact)
    result: dict[str, Followup] = {}
    for history in by_customer.values():
        history.sort(key=lambda c: (c.started_at, c.interaction_id))
        for n, contact in enumerate(history):
            if contact.ended_at is None:
                continue
            limit = contact.ended_at + window
            later = history[n + 1] if n + 1 < len(history) else None
            repeat = later is not None and later.started_at <= limit
            result[contact.interaction_id] = Followup(later.channel if later and repeat else None, limit <= now)
    return result


class Kpis(BaseModel):
    """The figures of a group of contacts (README, "KPIs", says how each is computed)."""

    contacts: int = Field(default=0, description="interactions started")
    ended: int = Field(default=0, description="of them, ended")
    offered: int = Field(default=0, description="queued and then answered or ended; callbacks left out")
    answered: int = Field(default=0, description="offered and answered by an agent")
    answered_in_sl: int = Field(default=0, description="answered within the queue's service-level threshold")
    abandoned: int = Field(default=0, description="offered, the caller hung up before an agent answered")
    transferred: int = Field(default=0, description="ended as transferred")
    callbacks_requested: int = Field(default=0, description="asked to be called back")
    service_level: float | None = Field(default=None, description="answered_in_sl / offered")
    asa_s: float | None = Field(default=None, description="average speed of answer: mean queue wait of answered")
    aht_s: float | None = Field(default=None, description="average handle time: talk + hold + wrap-up")
    talk_s: float | None = Field(default=None, description="mean talk time of answered, ended contacts")
    hold_s: float | None = Field(default=None, description="mean hold time (0: no hold exists yet)")
    wrapup_s: float | None = Field(default=None, description="mean end-to-disposition time, capped")
    abandonment_rate: float | None = Field(default=None, description="abandoned / offered")
    transfer_rate: float | None = Field(default=None, description="transferred / ended")
    fcr_contacts: int = Field(default=0, description="answered contacts whose repeat window is over")
    fcr_resolved: int = Field(default=0, description="of them, with no contact again within the window")
    fcr_pending: int = Field(default=0, description="answered contacts whose window is still open (not counted)")
    fcr_rate: float | None = Field(default=None, description="first-contact resolution: fcr_resolved / fcr_contacts")
    switch_contacts: int = Field(default=0, description="ended contacts whose repeat window is over")
    switched: int = Field(default=0, description="of them, the customer's next contact was on another channel")
    channel_switch_rate: float | None = Field(default=None, description="switched / switch_contacts")
    callback_kept_rate: float | None = Field(
        default=None, description="always null: callbacks are booked but not dialled yet"
    )
    csat: float | None = Field(default=None, description="share of csat answers of 4 or 5 (1-5 scale)")
    csat_responses: int = 0
    nps: float | None = Field(default=None, description="% promoters (9-10) - % detractors (0-6), -100..100")
    nps_responses: int = 0
    ces: float | None = Field(default=None, description="mean ces answer (1-7, 7 = very easy)")
    ces_responses: int = 0

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


FIGURES = tuple(Kpis.model_fields)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _mean(values: Sequence[float]) -> float | None:
    return fmean(values) if values else None


def compute(
    contacts: Iterable[Contact],
    rules: KpiRules,
    after: Mapping[str, Followup] | None = None,
) -> Kpis:
    """The figures of a group of contacts. `after` (from `followups`, over the contacts and the ones that
    came later) gives first-contact resolution and channel switch; without it those stay None."""
    k = Kpis()
    waits: list[float] = []
    handles: list[float] = []
    talks: list[float] = []
    holds: list[float] = []
    wrapups: list[float] = []
    answers: dict[str, list[int]] = defaultdict(list)
    for c in contacts:
        k.contacts += 1
        ended = c.ended_at is not None
        k.ended += ended
        k.transferred += ended and c.outcome == TRANSFERRED
        k.callbacks_requested += c.callback
        if c.queued and not c.callback and (c.answered or ended):
            k.offered += 1
            if c.answered:
                k.answered += 1
                wait = c.wait_s
                assert wait is not None
                waits.append(wait)
                k.answered_in_sl += wait <= rules.service_level_of(c.queue)
            elif c.outcome == ABANDONED:
                k.abandoned += 1
        talk = c.talk_s
        if talk is not None:
            wrap = c.wrapup_s(rules.wrapup_max_s)
            talks.append(talk)
            holds.append(c.hold_s)
            wrapups.append(wrap)
            handles.append(talk + c.hold_s + wrap)
        follow = after.get(c.interaction_id) if after is not None else None
        if follow is not None:
            if c.answered:
                if follow.window_closed:
                    k.fcr_contacts += 1
                    k.fcr_resolved += follow.next_channel is None
                else:
                    k.fcr_pending += 1
            if follow.window_closed:
                k.switch_contacts += 1
                k.switched += follow.next_channel is not None and follow.next_channel != c.channel
        for answer in c.surveys:
            low, high = SURVEY_SCALES.get(answer.question, (1, 0))
            if low <= answer.score <= high:
                answers[answer.question].append(answer.score)
    k.service_level = _ratio(k.answered_in_sl, k.offered)
    k.asa_s = _mean(waits)
    k.aht_s, k.talk_s, k.hold_s, k.wrapup_s = _mean(handles), _mean(talks), _mean(holds), _mean(wrapups)
    k.abandonment_rate = _ratio(k.abandoned, k.offered)
    k.transfer_rate = _ratio(k.transferred, k.ended)
    if after is not None:
        k.fcr_rate = _ratio(k.fcr_resolved, k.fcr_contacts)
        k.channel_switch_rate = _ratio(k.switched, k.switch_contacts)
    csat, nps, ces = answers["csat"], answers["nps"], answers["ces"]
    k.csat_responses, k.nps_responses, k.ces_responses = len(csat), len(nps), len(ces)
    k.csat = _ratio(sum(s >= CSAT_SATISFIED for s in csat), len(csat))
    if nps:
        k.nps = 100 * (sum(s >= NPS_PROMOTER for s in nps) - sum(s <= NPS_DETRACTOR for s in nps)) / len(nps)
    k.ces = _mean([float(s) for s in ces])
    return k


@dataclass(frozen=True)
class Grouping:
    """What a report row is per: everything together, or each channel, queue or agent."""

    name: str
    key: Callable[[Contact], str | None] = field(compare=False)


GROUPINGS: Mapping[str, Grouping] = {
    "none": Grouping("none", lambda c: None),
    "channel": Grouping("channel", lambda c: c.channel),
    "queue": Grouping("queue", lambda c: c.queue),
    "agent": Grouping("agent", lambda c: c.agent),
}
