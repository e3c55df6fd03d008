"""The KPI formulas on hand-made contacts: every figure checked against a value worked out by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from reports.alerts import Breach, QueueNow, breaches
from reports.config import AlertThresholds
from reports.kpis import Contact, Followup, KpiRules, SurveyAnswer, compute, followups

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RULES = KpiRules(
    service_level_of=lambda q: 30.0 if q == "sales" else 20.0, repeat_window=timedelta(hours=24), wrapup_max_s=60
)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def call(
    n: int,
    *,
    customer: str = "c",
    channel: str = "voice",
    queue: str | None = "support",
    start: float = 0,
    queued: float | None = 10,
    answered: float | None = None,
    ended: float | None = 100,
    outcome: str | None = "completed",
    agent: str | None = None,
    wrapped: float | None = None,
    callback: bool = False,
    surveys: tuple[SurveyAnswer, ...] = (),
) -> Contact:
    return Contact(
        interaction_id=f"i{n}",
        customer_id=customer,
        channel=channel,
        started_at=s(start),
        queue=queue if queued is not None else None,
        queued_at=s(queued) if queued is not None else None,
        agent=agent or ("bob" if answered is not None else None),
        answered_at=s(answered) if answered is not None else None,
        ended_at=s(ended) if ended is not None else None,
        outcome=outcome if ended is not None else None,
        wrapped_at=s(wrapped) if wrapped is not None else None,
        callback_requested=callback,
        surveys=surveys,
    )


def test_service_level_asa_and_abandonment_over_queued_contacts() -> None:
    contacts = [
        call(1, answered=25, ended=85),  # waited 15 s: within 20
        call(2, answered=40, ended=100),  # waited 30 s: after 20
        call(3, queue="sales", answered=35, ended=95),  # waited 25 s: within sales' 30
        call(4, ended=50, outcome="abandoned"),  # hung up in the queue
        call(5, ended=70, outcome="no-agent"),  # nobody in time: offered, neither answered nor abandoned
        call(6, queued=None, ended=20, outcome="abandoned"),  # left in the IVR: never offered
        call(7, ended=15, outcome="callback-requested", callback=True),  # callbacks are left out
        call(8, ended=None),  # still waiting: not offered yet
    ]
    k = compute(contacts, RULES)
    assert (k.contacts, k.ended, k.offered, k.answered, k.answered_in_sl, k.abandoned) == (8, 7, 5, 3, 2, 1)
    assert k.service_level == pytest.approx(2 / 5)
    assert k.asa_s == pytest.approx((15 + 30 + 25) / 3)
    assert k.abandonment_rate == pytest.approx(1 / 5)
    assert k.callbacks_requested == 1
    assert k.callback_kept_rate == 0.0  # booked, not (yet) connected


def test_a_contact_still_talking_counts_as_answered() -> None:
    k = compute([call(1, answered=12, ended=None)], RULES)
    assert (k.offered, k.answered, k.service_level, k.aht_s) == (1, 1, 1.0, None)


def test_aht_is_talk_plus_hold_plus_wrapup_capped() -> None:
    contacts = [
        call(1, answered=20, ended=140, wrapped=170),  # talk 120, wrap-up 30
        call(2, answered=20, ended=80, wrapped=500),  # talk 60, wrap-up 420 -> capped at 60
        call(3, answered=20, ended=110, wrapped=50),  # talk 90, disposition during the call: no wrap-up
        call(4, answered=20, ended=50),  # talk 30, no disposition
    ]
    k = compute(contacts, RULES)
    assert k.talk_s == pytest.approx((120 + 60 + 90 + 30) / 4)
    assert k.wrapup_s == pytest.approx((30 + 60 + 0 + 0) / 4)
    assert k.hold_s == 0
    assert k.aht_s == pytest.approx((150 + 120 + 90 + 30) / 4)


def test_hold_counts_between_held_and_unheld_and_is_not_talk() -> None:
    held = replace(
        call(1, answered=20, ended=200, wrapped=230),
        held=(s(50), s(120), s(130)),  # a second call.held while on hold changes nothing
        unheld=(s(80), s(150), s(160)),  # an unheld while not on hold neither
    )
    open_hold = replace(call(2, answered=20, ended=100), held=(s(90),))  # still on hold at the end: 10 s
    survey_after = replace(call(3, answered=20, ended=300, wrapped=110), agent_ended_at=s(80))  # survey 80-300
    k = compute([held, open_hold, survey_after], RULES)
    # 1: hold 30 + 30 = 60, talk 180 - 60 = 120, wrap-up 30; 2: hold 10, talk 70; 3: talk 60, wrap-up 30
    assert k.hold_s == pytest.approx((60 + 10 + 0) / 3)
    assert k.talk_s == pytest.approx((120 + 70 + 60) / 3)
    assert k.wrapup_s == pytest.approx((30 + 0 + 30) / 3)
    assert k.aht_s == pytest.approx((210 + 80 + 90) / 3)


def test_callback_kept_rate_is_connected_over_requested() -> None:
    booked = call(1, ended=15, outcome="callback-requested", callback=True)
    contacts = [
        replace(booked, interaction_id="kept", callback_connected=True),
        replace(booked, interaction_id="failed", callback_failed=True),
        replace(booked, interaction_id="retried", callback_failed=True, callback_connected=True),
        replace(booked, interaction_id="pending"),
        replace(call(5, answered=20), callback_connected=True),  # no callback booked: not counted
    ]
    k = compute(contacts, RULES)
    assert (k.callbacks_requested, k.callbacks_connected, k.callbacks_failed) == (4, 2, 1)
    assert k.callback_kept_rate == pytest.approx(2 / 4)
    assert compute([call(1, answered=20)], RULES).callback_kept_rate is None


def test_transfer_rate_is_over_ended_contacts() -> None:
    contacts = [call(1, ended=30, outcome="transferred", queued=None), call(2, answered=20), call(3, ended=None)]
    k = compute(contacts, RULES)
    assert k.transfer_rate == pytest.approx(1 / 2)


def test_nothing_to_measure_gives_none_not_zero() -> None:
    k = compute([], RULES, {})
    assert k.contacts == 0
    for figure in ("service_level", "asa_s", "aht_s", "abandonment_rate", "transfer_rate", "fcr_rate", "csat", "nps"):
        assert getattr(k, figure) is None, figure


def test_followups_find_the_next_contact_of_the_customer_within_the_window() -> None:
    window = timedelta(hours=24)
    now = s(10 * 86400)
    contacts = [
        call(1, customer="ana", start=0, ended=100),
        call(2, customer="ana", channel="whatsapp", start=3600, ended=3700, queued=None),  # 1 h later, other channel
        call(3, customer="ana", start=3 * 86400, ended=3 * 86400 + 60),  # days later: not a repeat of 2
        call(4, customer="bo", start=0, ended=100),
        call(5, customer="bo", start=86400 + 100, ended=86400 + 200),  # exactly 24 h after 4 ended: a repeat
        call(6, customer="cy", start=9 * 86400 + 80000, ended=9 * 86400 + 80100),  # window still open at `now`
        call(7, customer="cy", start=9 * 86400 + 80050, ended=None),  # open: nothing for it
    ]
    after = followups(contacts, window, now)
    assert after["i1"] == Followup("whatsapp", True)
    assert after["i2"] == Followup(None, True)
    assert after["i3"] == Followup(None, True)
    assert after["i4"] == Followup("voice", True)
    assert after["i6"] == Followup("voice", False)
    assert "i7" not in after


def test_fcr_and_channel_switch() -> None:
    contacts = [
        call(1, customer="ana", answered=20, ended=100),  # ana back on whatsapp: not resolved, switched
        call(2, customer="ana", channel="whatsapp", start=500, queued=None, ended=600),
        call(3, customer="bo", answered=20, ended=100),  # bo never back: resolved
        call(4, customer="cy", answered=20, ended=100),  # cy back on voice: not resolved, no switch
        call(5, customer="cy", start=1000, queued=None, ended=1100),
        call(6, customer="di", start=86400 * 2, answered=86400 * 2 + 20, ended=86400 * 2 + 60),  # window open
    ]
    now = s(86400 * 2 + 3600)
    after = followups(contacts, RULES.repeat_window, now)
    k = compute(contacts, RULES, after)
    assert (k.fcr_contacts, k.fcr_resolved, k.fcr_pending) == (3, 1, 1)
    assert k.fcr_rate == pytest.approx(1 / 3)
    # switch: over the five ended contacts whose window is over (1-5); only 1 came back elsewhere
    assert (k.switch_contacts, k.switched) == (5, 1)
    assert k.channel_switch_rate == pytest.approx(1 / 5)


def test_csat_nps_ces_and_out_of_scale_answers_ignored() -> None:
    answers = (
        SurveyAnswer("csat", 5),
        SurveyAnswer("csat", 4),
        SurveyAnswer("csat", 2),
        SurveyAnswer("csat", 9),  # off the 1-5 scale: ignored
        SurveyAnswer("nps", 10),
        SurveyAnswer("nps", 9),
        SurveyAnswer("nps", 8),
        SurveyAnswer("nps", 3),
        SurveyAnswer("ces", 6),
        SurveyAnswer("ces", 3),
        SurveyAnswer("mood", 3),  # unknown question: ignored
    )
    k = compute([call(1, answered=20, surveys=answers)], RULES)
    assert (k.csat_responses, k.nps_responses, k.ces_responses) == (3, 4, 2)
    assert k.csat == pytest.approx(2 / 3)
    assert k.nps == pytest.approx(100 * (2 - 1) / 4)
    assert k.ces == pytest.approx(4.5)


def test_alerts_fire_just_past_their_thresholds() -> None:
    limits = AlertThresholds(waiting_above=2, longest_wait_above_s=60, service_level_below_pct=80)
    at_limits = QueueNow("support", waiting=2, longest_wait_s=60.0, service_level=0.8)
    assert breaches(at_limits, limits) == []
    past = QueueNow("support", waiting=3, longest_wait_s=60.4, service_level=0.79)
    assert breaches(past, limits) == [
        Breach("support", "waiting", 3, 2),
        Breach("support", "longest_wait", 60.4, 60),
        Breach("support", "service_level", 79.0, 80),
    ]
    # nothing measured in the window: no service-level alert; thresholds left out are not watched
    assert breaches(QueueNow("support", 0, 0.0, None), limits) == []
    assert breaches(past, AlertThresholds()) == []
