"""The KPI formulas, on plain data: one `Contact` per interaction, read from its timeline events
(reports/facts.py), and `compute` turning a group of contacts into figures. docs/reports.md ("Formulas") states every
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

from flows.survey import SURVEY_SCALES

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
    agent_ended_at: datetime | None = None  # agent.call_ended: the agent's part is over (the caller may stay on)
    held: tuple[datetime, ...] = ()  # call.held, in time order
    unheld: tuple[datetime, ...] = ()  # call.unheld
    callback_connected: bool = False  # callback.connected: the booked callback reached the customer and an agent
    callback_failed: bool = False  # callback.failed: the dialler gave up

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
    def talk_ended_at(self) -> datetime | None:
        """When the agent's part ended: agent.call_ended (a post-call survey may follow), else the end."""
        if self.answered_at is None or self.ended_at is None:
            return None
        return self.agent_ended_at or self.ended_at

    def handle_parts(self, wrapup_cap_s: float) -> tuple[float, float, float] | None:
        """(talk, hold, wrap-up) seconds of an answered contact that ended, None for any other. Talk runs
        from the answer to the agent's end less the time on hold; wrap-up from the agent's end to the
        disposition (0 without one, or if it was given during the call), capped."""
        end = self.talk_ended_at
        if self.answered_at is None or end is None:
            return None
        hold = self._hold_s(self.answered_at, end)
        talk = max(0.0, (end - self.answered_at).total_seconds() - hold)
        wrap = 0.0 if self.wrapped_at is None else min(wrapup_cap_s, max(0.0, (self.wrapped_at - end).total_seconds()))
        return talk, hold, wrap

    def _hold_s(self, answered: datetime, end: datetime) -> float:
        """Seconds between each call.held and the call.unheld after it, within the talk; a hold never ended
        by call.unheld lasts until the agent's end."""
        if not self.held:
            return 0.0
        marks = sorted([(t, 1) for t in self.held] + [(t, 0) for t in self.unheld])
        total, since = 0.0, None
        for at, holding in marks:
            at = min(max(at, answered), end)
            if holding and since is None:
                since = at
            elif not holding and since is not None:
                total += (at - since).total_seconds()
                since = None
        if since is not None:
            total += (end - since).total_seconds()
        return total

    @property
    def talk_s(self) -> float | None:
        parts = self.handle_parts(0.0)
        return None if parts is None else parts[0]

    @property
    def hold_s(self) -> float:
        parts = self.handle_parts(0.0)
        return 0.0 if parts is None else parts[1]

    def wrapup_s(self, cap_s: float) -> float:
        parts = self.handle_parts(cap_s)
        return 0.0 if parts is None else parts[2]

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
    """The figures of a group of contacts (docs/reports.md, "Formulas", says how each is computed)."""

    contacts: int = Field(default=0, description="interactions started")
    ended: int = Field(default=0, description="of them, ended")
    offered: int = Field(default=0, description="queued and then answered or ended; callbacks left out")
    answered: int = Field(default=0, description="offered and answered by an agent")
    answered_in_sl: int = Field(default=0, description="answered within the queue's service-level threshold")
    abandoned: int = Field(default=0, description="offered, the caller hung up before an agent answered")
    transferred: int = Field(default=0, description="ended as transferred")
    callbacks_requested: int = Field(default=0, description="asked to be called back")
    callbacks_connected: int = Field(default=0, description="of them, called back and bridged to an agent")
    callbacks_failed: int = Field(default=0, description="of them, the dialler gave up")
    service_level: float | None = Field(default=None, description="answered_in_sl / offered")
    asa_s: float | None = Field(default=None, description="average speed of answer: mean queue wait of answered")
    aht_s: float | None = Field(default=None, description="average handle time: talk + hold + wrap-up")
    talk_s: float | None = Field(default=None, description="mean talk time of answered, ended contacts")
    hold_s: float | None = Field(default=None, description="mean time on hold (call.held to call.unheld)")
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
    callback_kept_rate: float | None = Field(default=None, description="callbacks_connected / callbacks_requested")
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
    # Counted in a plain dict and put into the model once: a report computes thousands of groups.
    n: dict[str, int] = defaultdict(int)
    waits: list[float] = []
    handles: list[float] = []
    talks: list[float] = []
    holds: list[float] = []
    wrapups: list[float] = []
    answers: dict[str, list[int]] = defaultdict(list)
    thresholds: dict[str | None, float] = {}  # per queue: asked once, not once per contact
    for c in contacts:
        n["contacts"] += 1
        ended = c.ended_at is not None
        n["ended"] += ended
        n["transferred"] += ended and c.outcome == TRANSFERRED
        callback = c.callback
        if callback:
            n["callbacks_requested"] += 1
            n["callbacks_connected"] += c.callback_connected
            n["callbacks_failed"] += c.callback_failed and not c.callback_connected
        answered = c.answered_at is not None
        if c.queued_at is not None and not callback and (answered or ended):
            n["offered"] += 1
            if answered:
                n["answered"] += 1
                wait = c.wait_s
                assert wait is not None
                waits.append(wait)
                threshold = thresholds.get(c.queue)
                if threshold is None:
                    threshold = thresholds[c.queue] = rules.service_level_of(c.queue)
                n["answered_in_sl"] += wait <= threshold
            elif c.outcome == ABANDONED:
                n["abandoned"] += 1
        parts = c.handle_parts(rules.wrapup_max_s)
        if parts is not None:
            talk, hold, wrap = parts
            talks.append(talk)
            holds.append(hold)
            wrapups.append(wrap)
            handles.append(talk + hold + wrap)
        follow = after.get(c.interaction_id) if after is not None else None
        if follow is not None:
            if answered:
                if follow.window_closed:
                    n["fcr_contacts"] += 1
                    n["fcr_resolved"] += follow.next_channel is None
                else:
                    n["fcr_pending"] += 1
            if follow.window_closed:
                n["switch_contacts"] += 1
                n["switched"] += follow.next_channel is not None and follow.next_channel != c.channel
        for answer in c.surveys:
            low, high = SURVEY_SCALES.get(answer.question, (1, 0))
            if low <= answer.score <= high:
                answers[answer.question].append(answer.score)
    csat, nps, ces = answers["csat"], answers["nps"], answers["ces"]
    return Kpis(
        **n,
        service_level=_ratio(n["answered_in_sl"], n["offered"]),
        asa_s=_mean(waits),
        aht_s=_mean(handles),
        talk_s=_mean(talks),
        hold_s=_mean(holds),
        wrapup_s=_mean(wrapups),
        abandonment_rate=_ratio(n["abandoned"], n["offered"]),
        transfer_rate=_ratio(n["transferred"], n["ended"]),
        callback_kept_rate=_ratio(n["callbacks_connected"], n["callbacks_requested"]),
        fcr_rate=_ratio(n["fcr_resolved"], n["fcr_contacts"]) if after is not None else None,
        channel_switch_rate=_ratio(n["switched"], n["switch_contacts"]) if after is not None else None,
        csat=_ratio(sum(s >= CSAT_SATISFIED for s in csat), len(csat)),
        csat_responses=len(csat),
        nps=100 * (sum(s >= NPS_PROMOTER for s in nps) - sum(s <= NPS_DETRACTOR for s in nps)) / len(nps)
        if nps
        else None,
        nps_responses=len(nps),
        ces=_mean([float(s) for s in ces]),
        ces_responses=len(ces),
    )


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
