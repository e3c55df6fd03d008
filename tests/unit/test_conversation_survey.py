"""The post-chat survey as replayed turns (bridges/conversation_flow.py): the run starts at the queue's
`after_agent`, each question carries its scale where WhatsApp shows one, an answer off the scale is asked
again with the scale on the question (not on the apology), and a replayed answer is neither asked nor
recorded again."""

from __future__ import annotations

from typing import Any

from bridges.conversation_flow import TurnResult, run_turn, scale_choices
from bridges.messages import Choice
from flows.engine import FlowServices
from flows.schema import Flow

FEEDBACK = Flow.model_validate(
    {
        "flow": "feedback",
        "start": "hello",
        "nodes": {
            "hello": {"kind": "say", "text": "Welcome.", "next": "to_support"},
            "to_support": {"kind": "queue", "queue": "support", "after_agent": "survey"},
            "survey": {
                "kind": "survey",
                "survey": "post-chat",
                "questions": [
                    {"question": "csat", "prompt": "How satisfied are you, 1 to 5?"},
                    {"question": "nps", "prompt": "Would you recommend us, 0 to 10?"},
                ],
                "invalid": "Sorry, that is not one of the choices.",
                "next": "thanks",
            },
            "thanks": {"kind": "hangup", "text": "Thank you."},
        },
    }
)


async def turn(before: TurnResult | None, answer: str | None, channel: str = "whatsapp") -> TurnResult:
    inputs = [] if before is None else [*before.inputs, answer]
    return await run_turn(
        FEEDBACK,
        flows={"feedback": FEEDBACK},
        inputs=inputs,
        new_inputs=0 if before is None else 1,
        journal=[] if before is None else before.journal,
        already_sent=0 if before is None else before.outputs,
        services=FlowServices(),
        channel=channel,
        caller_number="+34600111222",
        customer=None,
        start="survey",
    )


def answers(result: TurnResult) -> list[dict[str, Any]]:
    return [data for type_, data in result.events if type_ == "survey.answer"]


async def test_the_survey_after_the_agent_asks_each_question_once_and_records_each_answer_once() -> None:
    first = await turn(None, None)
    assert first.outcome is None
    assert [(r.text, r.choices) for r in first.replies] == [
        ("How satisfied are you, 1 to 5?", tuple(Choice(str(n), str(n)) for n in range(1, 6)))
    ]
    assert [(t, d.get("question"), d.get("attempt")) for t, d in first.events] == [("ivr.survey", "csat", 1)]

    off_scale = await turn(first, "7")
    assert [(r.text, len(r.choices)) for r in off_scale.replies] == [
        ("Sorry, that is not one of the choices.", 0),
        ("How satisfied are you, 1 to 5?", 5),
    ]
    assert answers(off_scale) == []

    csat = await turn(off_scale, "4")
    assert answers(csat) == [{"question": "csat", "score": 4, "survey": "post-chat"}]
    assert [(r.text, r.choices) for r in csat.replies] == [("Would you recommend us, 0 to 10?", ())]  # 11: no list

    nps = await turn(csat, "10")
    assert answers(nps) == [{"question": "nps", "score": 10, "survey": "post-chat"}]  # csat not again
    assert [r.text for r in nps.replies] == ["Thank you."]
    assert nps.outcome is not None and nps.outcome.action == "hangup"
    assert [t for t, d in nps.events if t == "ivr.survey"] == []  # nothing asked again by the replay


def test_the_scale_is_a_list_only_on_whatsapp_and_only_when_it_fits() -> None:
    assert [c.id for c in scale_choices("ces", "whatsapp")] == [str(n) for n in range(1, 8)]
    assert scale_choices("nps", "whatsapp") == ()
    assert scale_choices("csat", "sms") == ()
    assert scale_choices("csat", "webchat") == ()
