"""Business hours deciding a real call, with calendars of the test's own (hours.yaml of its flow version, the
working copy's calendars kept): a holiday closes a day the week has open (the timeline names the holiday), a
calendar closed at this hour sends the caller to its closed branch, and a holiday's special hours open a day
the week has closed. Asterisk plays the closed branch's message."""

from __future__ import annotations

import datetime as dt
from typing import Any

import yaml

from dialplans.models import load_routing
from flows.bundle import FlowBundle
from ivr.inbound import TECHNICAL_PROBLEM_PROMPT
from server.simcall import originate_sim_call
from speech.tts import prompt_key, voice_for
from tests.stack.conftest import NAMESPACE, Stack
from tests.stack.lines import apply_line

NUMBER = "164"
CLOSED = "We are closed now. Please call again in our opening hours."
HOURS_FLOW = f"""
flow: hours_line
language: en
start: feast_day
nodes:
  feast_day: {{kind: hours, calendar: feast, open: bye, closed: holiday}}
  holiday: {{kind: say, text: Today is a holiday., next: this_week}}
  this_week: {{kind: hours, calendar: shut, open: bye, closed: special_day}}
  special_day: {{kind: hours, calendar: special, open: closed, closed: bye}}
  closed: {{kind: hangup, text: {CLOSED}}}
  bye: {{kind: hangup, text: Goodbye.}}
"""


def _hours(stack: Stack) -> str:
    """The working copy's hours.yaml plus three calendars around today (and tomorrow, should the call cross
    midnight), all in UTC: open all week but for a holiday; closed all week; closed all week but for a
    holiday with special hours around the clock."""
    days = [dt.datetime.now(dt.UTC).date() + dt.timedelta(days=n) for n in (0, 1)]
    text = FlowBundle.from_dir(stack.settings.dialplans_dir).files["hours.yaml"]
    hours: dict[str, Any] = yaml.safe_load(text)
    hours["calendars"].update(
        {
            "feast": {
                "timezone": "UTC",
                "weekly": {"mon-sun": ["00:00-24:00"]},
                "holidays": [{"date": d.isoformat(), "name": "Día de la prueba"} for d in days],
            },
            "shut": {"timezone": "UTC"},
            "special": {
                "timezone": "UTC",
                "holidays": [{"date": d.isoformat(), "name": "Open day", "hours": ["00:00-24:00"]} for d in days],
            },
        }
    )
    return yaml.safe_dump(hours, allow_unicode=True, sort_keys=False)


async def test_holidays_and_closed_hours_decide_a_real_call(stack: Stack) -> None:
    await apply_line(stack, NUMBER, {"hours_line": HOURS_FLOW}, hours=_hours(stack))
    assert stack.services.calls is not None
    closed_media = stack.services.calls.prompts.media_uri(prompt_key(CLOSED, voice_for("en", None), "en"))
    mark, ari_mark = stack.hilo_events.mark(), stack.ari_events.mark()
    call = await originate_sim_call(stack.observer, NUMBER, "+34911222333", "", namespace=NAMESPACE, in_app=True)
    started = await stack.hilo_events.expect(
        "interaction.started", within=10, since=mark, data__channel_ref=call.ivr_leg
    )
    i = started["interaction_id"]
    feast, _, shut, special, outcome = await stack.hilo_events.expect_in_order(
        [
            ("ivr.hours", {"interaction_id": i, "data__node": "feast_day", "data__open": False}),
            ("ivr.say", {"interaction_id": i, "data__node": "holiday"}),
            ("ivr.hours", {"interaction_id": i, "data__node": "this_week", "data__open": False}),
            ("ivr.hours", {"interaction_id": i, "data__node": "special_day", "data__open": True}),
            ("ivr.outcome", {"interaction_id": i, "data__node": "closed", "data__action": "hangup"}),
        ],
        within=20,
    )
    assert feast["data"]["holiday"] == "Día de la prueba"
    assert "holiday" not in shut["data"]
    assert special["data"]["holiday"] == "Open day"
    # The caller heard the closed branch's message to its end, then Hilo hung up.
    await stack.ari_events.expect(
        "PlaybackFinished", within=15, since=ari_mark, playback__media_uri=closed_media,
        playback__target_uri=f"channel:{call.ivr_leg}", playback__state="done",
    )  # fmt: skip
    ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=i)
    assert ended["data"] == {"outcome": "ivr-ended", "hangup_by": "system"}
    assert outcome["data"]["flow"] == "hours_line"
    await stack.ari_events.expect("ChannelDestroyed", within=10, since=ari_mark, channel__id=call.caller_leg)


CLOSED_QUEUE_FLOW = """
flow: closed_queue
language: en
start: support
nodes:
  support: {kind: queue, queue: support, on_closed: after_hours}
  after_hours: {kind: hangup, text: Our support team is away. Goodbye.}
"""


async def _caller_meets_a_closed_support_queue(stack: Stack, number: str, keys: str) -> tuple[str, str, list[str]]:
    """A call to `number` (pressing `keys`) reaching the support queue while its hours (the calendar `shut`)
    say closed: the interaction, the caller's channel, and the media the caller heard to its end."""
    engine = stack.services.routing
    assert engine is not None
    support = next(q for q in load_routing(stack.settings.dialplans_dir).queues if q.id == "support")
    await engine.put_queue(support.model_copy(update={"hours": "shut"}))  # closed all week
    try:
        mark, ari_mark = stack.hilo_events.mark(), stack.ari_events.mark()
        call = await originate_sim_call(stack.observer, number, "+34911222333", keys, namespace=NAMESPACE)
        started = await stack.hilo_events.expect(
            "interaction.started", within=10, since=mark, data__channel_ref=call.ivr_leg
        )
        i = started["interaction_id"]
        refused = await stack.hilo_events.expect("routing.refused", within=20, interaction_id=i)
        assert "closed" in refused["data"]["reason"]
        await stack.hilo_events.expect("interaction.ended", within=20, interaction_id=i)
        await stack.ari_events.expect("ChannelDestroyed", within=10, since=ari_mark, channel__id=call.caller_leg)
        heard = [
            e["playback"]["media_uri"]
            for e in stack.ari_events.events[ari_mark:]
            if e["type"] == "PlaybackFinished"
            and e["playback"]["target_uri"] == f"channel:{call.ivr_leg}"
            and e["playback"]["state"] == "done"
        ]
        return i, call.ivr_leg, heard
    finally:
        await engine.put_queue(support)


def _media(stack: Stack, text: str) -> str:
    assert stack.services.calls is not None
    return stack.services.calls.prompts.media_uri(prompt_key(text, voice_for("en", None), "en"))


async def test_a_caller_queued_outside_the_queues_hours_hears_it_is_closed(stack: Stack) -> None:
    """Not the technical-problem apology of a failed call: the queue's closed prompt, to its end."""
    await apply_line(stack, NUMBER, {"hours_line": HOURS_FLOW}, hours=_hours(stack))  # the calendar `shut`
    support = next(q for q in load_routing(stack.settings.dialplans_dir).queues if q.id == "support")
    i, _, heard = await _caller_meets_a_closed_support_queue(stack, "100", "2")  # the demo menu's support
    assert _media(stack, support.closed_prompt) in heard, heard
    assert _media(stack, TECHNICAL_PROBLEM_PROMPT) not in heard
    ended = [e for e in stack.hilo_events.events if e["type"] == "interaction.ended" and e["interaction_id"] == i]
    assert ended[0]["data"] == {"outcome": "closed", "hangup_by": "system"}


async def test_a_closed_queue_sends_the_flow_on_at_its_on_closed_node(stack: Stack) -> None:
    await apply_line(stack, "166", {"closed_queue": CLOSED_QUEUE_FLOW}, hours=_hours(stack))
    i, _, heard = await _caller_meets_a_closed_support_queue(stack, "166", "")
    assert heard == [_media(stack, "Our support team is away. Goodbye.")], heard
    outcomes = [e for e in stack.hilo_events.events if e["type"] == "ivr.outcome" and e.get("interaction_id") == i]
    assert outcomes[-1]["data"]["node"] == "after_hours", outcomes
    ended = [e for e in stack.hilo_events.events if e["type"] == "interaction.ended" and e["interaction_id"] == i]
    assert ended[0]["data"] == {"outcome": "ivr-ended", "hangup_by": "system"}
