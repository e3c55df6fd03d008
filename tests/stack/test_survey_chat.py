"""The post-chat survey on the real stack: a WhatsApp customer on the whatsapp-feedback channel
(dialplans/channels.yaml, flow feedback with `after_agent: survey`) is served by an agent who closes the
chat; the customer is then asked the survey over WhatsApp (the CSAT scale as a list), answers (once off
the scale, asked again), across a restart of the conversation layer, and the answers are on the chat's
interaction and in the KPI report under channel whatsapp. A customer who ignores the survey is left
alone after the wait; a hand-back asks nothing."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from typing import Any

import pytest

from bridges.fakes.whatsapp import FakeWhatsApp
from tests.stack.conftest import Stack
from tests.stack.expect import eventually
from tests.stack.test_conversations import WhatsAppCustomer, another_node, whatsapp  # noqa: F401
from tests.stack.test_screenpop import bearer, sign_in

FEEDBACK_NUMBER_ID = "109876543210002"  # the whatsapp-feedback channel (flow: feedback)
WELCOME = "Welcome to support. Please hold while we connect you to an agent."
CSAT = (
    "Before you go, how satisfied are you with our service? Answer 1 for very dissatisfied, up to 5 for very satisfied."
)
NPS = "How likely are you to recommend us to a friend? Answer with a number from 0 to 10."
INVALID = "Sorry, that is not one of the choices."
THANKS = "Thank you for your answers. Goodbye."


def number() -> str:
    return f"+3460071{secrets.randbelow(10_000):04d}"


async def pick(customer: WhatsAppCustomer, row: str) -> None:
    """The customer taps a row of a WhatsApp list."""
    message = customer.fake.text_message(customer.wa_id, "")
    message.update(type="interactive", interactive={"type": "list_reply", "list_reply": {"id": row, "title": row}})
    del message["text"]
    url = str(customer.stack.client.make_url("/webhooks/whatsapp"))
    status, body = await customer.fake.post_signed(
        url, customer.fake.envelope(customer.phone_number_id, messages=[message])
    )
    assert status == 200, body


async def with_the_agent(stack: Stack, customer: WhatsAppCustomer, token: str) -> str:
    """The customer writes, is queued to support and taken by bob: the interaction's id."""
    mark = stack.hilo_events.mark()
    await customer.write("Hello")
    started = await stack.hilo_events.expect(
        "interaction.started", within=15, since=mark, channel="whatsapp", data__dialed=FEEDBACK_NUMBER_ID
    )
    interaction = str(started["interaction_id"])
    assert await customer.expect_texts(1) == [WELCOME]
    await stack.hilo_events.expect("routing.offered", within=10, interaction_id=interaction, data__agent="bob")
    resp = await stack.client.post(f"/console/api/chats/{interaction}/accept", headers=bearer(token))
    assert resp.status == 200, await resp.json()
    return interaction


async def test_the_customer_answers_the_survey_after_the_agent_closes_the_chat(
    stack: Stack,
    whatsapp: FakeWhatsApp,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ana = WhatsAppCustomer(stack, whatsapp, number(), FEEDBACK_NUMBER_ID)
    bob = await sign_in(stack, "bob", "agent", "bob")
    interaction = await with_the_agent(stack, ana, bob)
    resp = await stack.client.post(
        f"/console/api/chats/{interaction}/reply", json={"text": "Done, your router is fixed."}, headers=bearer(bob)
    )
    assert resp.status == 201, await resp.json()

    resp = await stack.client.post(f"/console/api/chats/{interaction}/close", headers=bearer(bob))
    closed = await resp.json()
    assert resp.status == 200, closed
    assert closed["state"] == "survey" and closed["closed_at"] is None
    ended = await stack.hilo_events.expect("interaction.ended", within=5, interaction_id=interaction)
    assert ended["data"] == {"outcome": "completed", "hangup_by": "agent"}  # the agent's part ends at the close
    assert (await ana.expect_texts(3))[2] == CSAT
    question = ana.received()[2]
    assert question["type"] == "interactive" and question["interactive"]["type"] == "list"
    rows = question["interactive"]["action"]["sections"][0]["rows"]
    assert [r["id"] for r in rows] == ["1", "2", "3", "4", "5"]

    await ana.write("7")  # off the 1-5 scale: asked once more
    assert (await ana.expect_texts(5))[3:] == [INVALID, CSAT]
    await stack.hilo_events.expect(
        "ivr.survey", within=5, interaction_id=interaction, data__question="csat", data__attempt=2
    )
    await pick(ana, "4")
    csat = await stack.hilo_events.expect("survey.answer", within=10, interaction_id=interaction)
    assert csat["data"] == {"question": "csat", "score": 4, "survey": "post-call"}
    assert csat["channel"] == "whatsapp"
    assert (await ana.expect_texts(6))[5] == NPS

    # A new conversation layer, as after a restart: the answered question is not asked again.
    running = stack.services.conversations
    assert running is not None
    monkeypatch.setattr(stack.services, "conversations", another_node(running))
    await ana.write("10")
    nps = await stack.hilo_events.expect("survey.answer", within=10, interaction_id=interaction, data__question="nps")
    assert nps["data"] == {"question": "nps", "score": 10, "survey": "post-call"}
    texts = await ana.expect_texts(7)
    assert texts[6:] == [THANKS]
    await eventually(lambda: _closed(stack, ana.wa_id), within=5, what="the conversation closed after the survey")
    answers = await stack.pool.fetch(
        "SELECT data FROM timeline_events WHERE interaction_id = $1 AND type = 'survey.answer' ORDER BY id",
        uuid.UUID(interaction),
    )
    assert [(a["data"]["question"], a["data"]["score"]) for a in answers] == [("csat", 4), ("nps", 10)]
    assert len(ana.received()) == 7  # nothing sent twice, nothing after the thanks

    resp = await stack.client.post(
        f"/console/api/interactions/{interaction}/wrapup", json={"disposition": "resolved"}, headers=bearer(bob)
    )
    assert resp.status == 201, await resp.json()

    started = await stack.pool.fetchval("SELECT started_at FROM interactions WHERE id = $1", uuid.UUID(interaction))
    query = {
        "from": started.isoformat(),
        "to": (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)).isoformat(),
        "interval": "period",
        "by": "channel",
    }
    resp = await stack.client.get("/api/reports/kpis", params=query, headers={"Authorization": f"Bearer {stack.token}"})
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    [row] = [r for r in body["rows"] if r["group"] == "whatsapp"]
    assert (row["csat"], row["csat_responses"]) == (1.0, 1)
    assert row["nps_responses"] == 1


async def _closed(stack: Stack, wa_id: str) -> bool:
    return bool(
        await stack.pool.fetchval(
            "SELECT closed_at IS NOT NULL AND state = 'closed' FROM conversations WHERE address = $1", wa_id
        )
    )


async def test_an_ignored_survey_ends_quietly_and_a_hand_back_asks_nothing(
    stack: Stack,
    whatsapp: FakeWhatsApp,  # noqa: F811
) -> None:
    bob = await sign_in(stack, "bob", "agent", "bob")

    # Handed back to the flow: not a close, so no survey (the flow starts again and queues anew).
    ben = WhatsAppCustomer(stack, whatsapp, number(), FEEDBACK_NUMBER_ID)
    first = await with_the_agent(stack, ben, bob)
    mark = stack.hilo_events.mark()
    resp = await stack.client.post(f"/console/api/chats/{first}/handback", headers=bearer(bob))
    assert resp.status == 200, await resp.json()
    assert await ben.expect_texts(2) == [WELCOME, WELCOME]
    second = await stack.hilo_events.expect("routing.offered", within=10, since=mark, data__agent="bob")
    assert second["interaction_id"] != first
    resp = await stack.client.post(f"/console/api/chats/{second['interaction_id']}/accept", headers=bearer(bob))
    assert resp.status == 200, await resp.json()
    asked = await stack.pool.fetchval(
        "SELECT count(*) FROM timeline_events WHERE interaction_id = $1 AND type = 'ivr.survey'", uuid.UUID(first)
    )
    assert asked == 0

    # Closed: asked, then ignored. After the wait the conversation ends without another message.
    resp = await stack.client.post(f"/console/api/chats/{second['interaction_id']}/close", headers=bearer(bob))
    assert resp.status == 200, await resp.json()
    assert (await ben.expect_texts(3))[2] == CSAT
    running = stack.services.conversations
    assert running is not None
    patient = another_node(running, survey_wait_s=3600)
    await patient.sweep()
    assert not await _closed(stack, ben.wa_id)  # within the wait: still asking
    await stack.pool.execute(
        "UPDATE conversations SET last_message_at = last_message_at - interval '2 hours' WHERE address = $1",
        ben.wa_id,
    )
    mark = stack.hilo_events.mark()
    await patient.sweep()
    expired = await stack.hilo_events.expect(
        "survey.expired", within=5, since=mark, interaction_id=second["interaction_id"]
    )
    assert expired["data"] == {"after_s": 3600}
    assert await _closed(stack, ben.wa_id)
    assert len(ben.received()) == 3  # no reminder, no goodbye

    # The next message is a new conversation (the survey is over), starting from the flow's start.
    await ben.write("Hello again")
    assert (await ben.expect_texts(4))[3] == WELCOME
    third = await stack.hilo_events.expect("routing.offered", within=10, since=mark, data__agent="bob")
    resp = await stack.client.post(f"/console/api/chats/{third['interaction_id']}/accept", headers=bearer(bob))
    assert resp.status == 200, await resp.json()
    resp = await stack.client.post(f"/console/api/chats/{third['interaction_id']}/close", headers=bearer(bob))
    assert resp.status == 200, await resp.json()
    await stack.pool.execute(
        "UPDATE conversations SET last_message_at = last_message_at - interval '2 hours' WHERE address = $1"
        " AND closed_at IS NULL",
        ben.wa_id,
    )
    await patient.sweep()
    assert (
        await stack.pool.fetchval(
            "SELECT count(*) FROM conversations WHERE address = $1 AND closed_at IS NULL", ben.wa_id
        )
        == 0
    )
