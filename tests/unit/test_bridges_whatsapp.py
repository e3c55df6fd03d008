"""WhatsApp Cloud API: the signature over raw bytes, the handshake, reading batched webhooks, and the
/messages request and its errors (against the Cloud API fake on loopback)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from bridges import whatsapp
from bridges.channels import ChannelConfig, Channels
from bridges.fakes.server import Failure
from bridges.fakes.whatsapp import FakeWhatsApp, meta_json, new_wamid
from bridges.messages import BadPayload, Choice, OutboundMessage
from tests.unit.sending import refused

SECRET = "app-secret-0123456789"
TOKEN = "access-token-0123456789"
PHONE_ID = "109876543210001"
CHANNELS = Channels([ChannelConfig(name="wa", provider="whatsapp_cloud", phone_number_id=PHONE_ID, flow="demo")])
FAKE = FakeWhatsApp(TOKEN, SECRET)


def test_signature_is_hex_hmac_sha256_of_the_raw_bytes() -> None:
    body = meta_json(FAKE.envelope(PHONE_ID, messages=[FAKE.text_message("34600111222", "¿Qué tal? https://x/y")]))
    assert b"\\u00bfQu\\u00e9" in body and b"https:\\/\\/x\\/y" in body  # encoded the way Meta encodes
    header = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert whatsapp.valid_signature(SECRET, body, header)
    reserialised = json.dumps(json.loads(body)).encode()  # same JSON, other bytes
    assert not whatsapp.valid_signature(SECRET, reserialised, header)
    assert not whatsapp.valid_signature("other-secret", body, header)
    assert not whatsapp.valid_signature(SECRET, body, "")
    assert not whatsapp.valid_signature(SECRET, body, header.removeprefix("sha256="))


def test_subscription_handshake() -> None:
    ok = {"hub.mode": "subscribe", "hub.verify_token": "vt-123", "hub.challenge": "1158201444"}
    assert whatsapp.verify_subscription(ok, "vt-123") == "1158201444"
    assert whatsapp.verify_subscription({**ok, "hub.verify_token": "wrong"}, "vt-123") is None
    assert whatsapp.verify_subscription({**ok, "hub.mode": "unsubscribe"}, "vt-123") is None
    assert whatsapp.verify_subscription(ok, "") is None


def test_a_batch_of_messages_and_statuses() -> None:
    interactive = {
        "from": "34600111222",
        "id": new_wamid(),
        "timestamp": "1700000000",
        "type": "interactive",
        "interactive": {"type": "list_reply", "list_reply": {"id": "opt_3", "title": "Billing", "description": "x"}},
    }
    button = {
        **interactive,
        "id": new_wamid(),
        "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}},
    }
    image = {
        "from": "34600111333",
        "id": new_wamid(),
        "timestamp": "1700000001",
        "type": "image",
        "image": {"id": "1479537139650973", "mime_type": "image/jpeg", "sha256": "abc", "caption": "my bill"},
    }
    location = {
        "from": "34600111333",
        "id": new_wamid(),
        "type": "location",
        "location": {"latitude": 40.4, "longitude": -3.7},
    }
    body = FAKE.envelope(PHONE_ID, messages=[interactive, button, image])
    second = FAKE.envelope(
        "555000111",
        messages=[location],
        statuses=[
            FAKE.status("wamid.X", "failed", "34600111222", error_code=131047),
            FAKE.status("wamid.Y", "deleted", "1"),
        ],
    )
    body["entry"].append(second["entry"][0])
    body["entry"][0]["changes"].append({"field": "account_update", "value": {"whatever": 1}})
    messages, statuses = whatsapp.parse_webhook(meta_json(body), CHANNELS)
    assert [(m.choice_id, m.text) for m in messages[:2]] == [("opt_3", "Billing"), ("yes", "Yes")]
    assert messages[2].media == [
        {"type": "image", "id": "1479537139650973", "mime_type": "image/jpeg", "caption": "my bill"}
    ]
    assert messages[2].text == "my bill"
    assert {m.channel_name for m in messages[:3]} == {"wa"} and messages[3].channel_name is None
    assert messages[3].media[0]["type"] == "location"
    assert all(m.recipient == PHONE_ID for m in messages[:3]) and messages[0].sender == "34600111222"
    [failed] = statuses  # "deleted" is no delivery status
    assert (failed.provider_message_id, failed.status, failed.error_code) == ("wamid.X", "failed", "131047")
    assert failed.error_message and "24 hours" in failed.error_message


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.update(object="page"), "object"),
        (lambda b: b.update(entry={}), "entry"),
        (
            lambda b: b["entry"][0]["changes"][0]["value"]["metadata"].pop("phone_number_id"),
            "entry[0].changes[0].value.metadata.phone_number_id",
        ),
        (
            lambda b: b["entry"][0]["changes"][0]["value"]["messages"][0].pop("id"),
            "entry[0].changes[0].value.messages[0].id",
        ),
        (
            lambda b: b["entry"][0]["changes"][0]["value"]["messages"][0]["text"].pop("body"),
            "entry[0].changes[0].value.messages[0].text.body",
        ),
        (
            lambda b: b["entry"][0]["changes"][0]["value"]["messages"][0].update(timestamp="soon"),
            "entry[0].changes[0].value.messages[0].timestamp",
        ),
    ],
)
def test_malformed_webhooks_name_the_field(mutate: object, field: str) -> None:
    body = FAKE.envelope(PHONE_ID, messages=[FAKE.text_message("34600111222", "hi")])
    mutate(body)  # type: ignore[operator]
    with pytest.raises(BadPayload) as caught:
        whatsapp.parse_webhook(meta_json(body), CHANNELS)
    assert caught.value.field == field


def test_not_json_is_named() -> None:
    with pytest.raises(BadPayload, match="body: not JSON"):
        whatsapp.parse_webhook(b"{nope", CHANNELS)


def message(choices: list[Choice] | None = None, template: str | None = None) -> OutboundMessage:
    return OutboundMessage(
        channel="whatsapp",
        provider="whatsapp_cloud",
        sender=PHONE_ID,
        recipient="34600111222",
        text="Pick one",
        conversation_id="c1",
        choices=choices or [],
        template=template,
    )


def test_choices_become_buttons_a_list_or_numbered_text() -> None:
    buttons = whatsapp.request_body(message([Choice("a", "Yes"), Choice("b", "No")]))
    assert buttons["type"] == "interactive" and buttons["interactive"]["type"] == "button"
    assert buttons["interactive"]["action"]["buttons"][1] == {"type": "reply", "reply": {"id": "b", "title": "No"}}
    long_titles = whatsapp.request_body(message([Choice("a", "A title longer than twenty")]))
    assert long_titles["interactive"]["type"] == "list"
    rows = whatsapp.request_body(message([Choice(str(i), f"Option {i}") for i in range(10)]))
    assert len(rows["interactive"]["action"]["sections"][0]["rows"]) == 10
    many = whatsapp.request_body(message([Choice(str(i), f"Option {i}") for i in range(11)]))
    assert many["type"] == "text"
    assert many["text"]["body"].split("\n")[1:3] == ["0. Option 0", "1. Option 1"]  # numbered by id
    assert many["text"]["body"].endswith("\n10. Option 10")
    keyed = [Choice(k, f"Option {k}") for k in ("5", "9", "12", "2", "7", "8", "1", "3", "4", "6", "0")]
    gapped = whatsapp.request_body(message(keyed))["text"]["body"].split("\n")
    assert gapped[1:4] == ["5. Option 5", "9. Option 9", "12. Option 12"]
    template = whatsapp.request_body(message(template="order_update"), "es_ES")
    assert template["template"] == {"name": "order_update", "language": {"code": "es_ES"}}
    assert whatsapp.request_body(message())["to"] == "34600111222"
    assert whatsapp.wa_recipient("whatsapp:+34 600 111 222") == "34600111222"


async def test_sender_speaks_the_cloud_api_to_the_fake() -> None:
    fake = FakeWhatsApp(TOKEN, SECRET)
    base = await fake.start()
    sender = whatsapp.CloudSender(CHANNELS, TOKEN, base_url=base, api_version="v21.0")
    try:
        result = await sender.send(message([Choice("a", "Yes"), Choice("b", "No")]), 1)
        assert result.provider_message_id.startswith("wamid.")
        [sent] = fake.messages
        assert sent["phone_number_id"] == PHONE_ID and sent["body"]["messaging_product"] == "whatsapp"

        outside = Failure(status=400, code=131047, message="Re-engagement message")
        failed = await refused(sender, message(), 2, fake=fake, failure=outside)
        assert (failed.retryable, failed.code) == (False, "131047")
        failed = await refused(sender, message(), 3, fake=fake, failure=Failure(status=429, retry_after=2))
        assert (failed.retryable, failed.retry_after, failed.code) == (True, 2.0, "130429")
        failed = await refused(sender, message(), 4, fake=fake, failure=Failure(status=500))
        assert failed.retryable

        wrong = whatsapp.CloudSender(CHANNELS, "wrong", base_url=base, api_version="v21.0")
        failed = await refused(wrong, message(), 5, fake=fake, failure=None)
        assert (failed.retryable, failed.code) == (False, "190")
        await wrong.close()
    finally:
        await sender.close()
        await fake.close()
