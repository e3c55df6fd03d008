"""The post-call survey on a real call (dialplans/flows/feedback.yaml, number 150): the agent hangs up first,
the caller stays on the line and answers on the keypad; the answers land on the call's interaction, the
call stays `completed` by the agent, and the talk time ends when the agent left, not after the survey."""

from __future__ import annotations

from datetime import timedelta

from reports.facts import load_contacts
from tests.stack.calls import KNOWN_CALLER, place
from tests.stack.conftest import Stack


async def test_the_caller_answers_the_survey_after_the_agent_hangs_up(stack: Stack) -> None:
    call, started = await place(stack, KNOWN_CALLER, number="150", in_app=True)
    interaction = started["interaction_id"]
    await stack.hilo_events.expect("agent.answered", within=30, interaction_id=interaction, data__agent="bob")
    assert stack.services.calls is not None
    agent_leg = stack.services.calls.live.get(interaction).agent.id

    await stack.observer.hangup(agent_leg)
    await stack.hilo_events.expect("agent.call_ended", within=10, interaction_id=interaction, data__hangup_by="agent")
    await stack.observer.send_dtmf(call.caller_leg, "7")  # off the 1-5 scale: asked once more
    await stack.hilo_events.expect(
        "ivr.survey", within=15, interaction_id=interaction, data__question="csat", data__attempt=2
    )
    await stack.observer.send_dtmf(call.caller_leg, "4")
    csat = await stack.hilo_events.expect("survey.answer", within=15, interaction_id=interaction)
    assert csat["data"] == {"question": "csat", "score": 4, "survey": "post-call"}
    await stack.observer.send_dtmf(call.caller_leg, "10")
    nps = await stack.hilo_events.expect("survey.answer", within=15, interaction_id=interaction, data__question="nps")
    assert nps["data"]["score"] == 10
    ended = await stack.hilo_events.expect("interaction.ended", within=20, interaction_id=interaction)
    assert ended["data"] == {"outcome": "completed", "hangup_by": "agent"}

    start = await stack.pool.fetchval("SELECT started_at FROM interactions WHERE id = $1::uuid", interaction)
    contacts = await load_contacts(stack.pool, start, start + timedelta(hours=1))
    [contact] = [c for c in contacts if c.interaction_id == interaction]
    assert [(s.question, s.score) for s in contact.surveys] == [("csat", 4), ("nps", 10)]
    assert contact.agent_ended_at is not None and contact.ended_at is not None
    assert contact.ended_at - contact.agent_ended_at > timedelta(seconds=2)  # the survey took its time
    assert contact.talk_s == (contact.agent_ended_at - contact.answered_at).total_seconds()  # type: ignore[operator]
