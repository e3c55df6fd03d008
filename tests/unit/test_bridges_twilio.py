"""Twilio: the signature (Twilio's own published vector), URL variants, reading webhooks, the REST request
and its errors (against the Twilio fake on loopback)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bridges import twilio
from bridges.channels import ChannelConfig, Channels
from bridges.fakes.server import Failure
from bridges.fakes.twilio import FakeTwilio, new_sid
from bridges.http import Messaging, parse_proxies
from bridges.messages import BadPayload, Choice, OutboundMessage
from tests.unit.sending import refused

ACCOUNT = "AC" + "1" * 32
TOKEN = "twilio-test-token-0123456789"
CHANNELS = Channels(
    [
        ChannelConfig(name="sms", provider="twilio", address="+34910000100", flow="demo"),
        ChannelConfig(name="wa", provider="twilio", address="whatsapp:+34910000101", flow="demo"),
        ChannelConfig(name="svc", provider="twilio", messaging_service_sid="MG" + "a" * 32, flow="demo"),
    ],
    ACCOUNT,
)
PUBLISHED = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
PUBLISHED_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"


def test_signature_matches_twilios_published_example() -> None:
    assert twilio.signature("12345", PUBLISHED_URL, PUBLISHED.items()) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    reordered = list(reversed(PUBLISHED.items()))
    assert twilio.valid_signature("12345", PUBLISHED_URL, reordered, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


def test_signature_refuses_any_change() -> None:
    good = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert not twilio.valid_signature("12345", PUBLISHED_URL, {**PUBLISHED, "Digits": "9"}.items(), good)
    assert not twilio.valid_signature("12345", PUBLISHED_URL.replace("bar=2", "bar=3"), PUBLISHED.items(), good)
    assert not twilio.valid_signature("12345", PUBLISHED_URL.replace("https", "http"), PUBLISHED.items(), good)
    assert not twilio.valid_signature("54321", PUBLISHED_URL, PUBLISHED.items(), good)
    assert not twilio.valid_signature("12345", PUBLISHED_URL, PUBLISHED.items(), "")
    assert not twilio.valid_signature("", PUBLISHED_URL, PUBLISHED.items(), good)


def test_url_with_and_without_the_default_port_both_validate() -> None:
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    signed_with_port = twilio.signature("12345", with_port, PUBLISHED.items())
    assert twilio.valid_signature("12345", PUBLISHED_URL, PUBLISHED.items(), signed_with_port)
    signed_without = twilio.signature("12345", PUBLISHED_URL, PUBLISHED.items())
    assert twilio.valid_signature("12345", with_port, PUBLISHED.items(), signed_without)
    # another port is another URL
    other = twilio.signature("12345", "https://mycompany.com:8443/myapp.php?foo=1&bar=2", PUBLISHED.items())
    assert not twilio.valid_signature("12345", PUBLISHED_URL, PUBLISHED.items(), other)
    assert twilio.url_variants("http://h/x") == ["http://h/x", "http://h:80/x"]


def test_repeated_parameters_are_sorted_by_value() -> None:
    a = twilio.signature("t", "https://h/x", [("MediaUrl", "b"), ("MediaUrl", "a")])
    assert a == twilio.signature("t", "https://h/x", [("MediaUrl", "a"), ("MediaUrl", "b")])


def messaging(public: str = "", proxies: str = "") -> Messaging:
    return Messaging(
        channels=CHANNELS,
        inbox=None,  # type: ignore[arg-type]
        outbox=None,  # type: ignore[arg-type]
        twilio_sender=None,  # type: ignore[arg-type]
        cloud_sender=None,  # type: ignore[arg-type]
        twilio_auth_token=TOKEN,
        whatsapp_app_secret="",
        whatsapp_verify_token="",
        public_base_url=public,
        trusted_proxies=parse_proxies(proxies),
    )


def request(headers: dict[str, str], remote: str = "10.0.0.5") -> web.Request:
    req = make_mocked_request("POST", "/webhooks/twilio/messages?x=1", headers={"Host": "internal:8080", **headers})
    return req.clone(remote=remote)


def test_public_url_from_configuration_wins() -> None:
    m = messaging(public="https://hilo.example.com/")
    req = request({"X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil"})
    assert m.public_url(req) == "https://hilo.example.com/webhooks/twilio/messages?x=1"


def test_forwarded_headers_count_only_from_a_trusted_proxy() -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hilo.example.com"}
    trusted = messaging(proxies="10.0.0.0/24, 192.168.1.1")
    assert trusted.public_url(request(forwarded)) == "https://hilo.example.com/webhooks/twilio/messages?x=1"
    untrusted = trusted.public_url(request(forwarded, remote="10.0.1.5"))
    assert untrusted == "http://internal:8080/webhooks/twilio/messages?x=1"
    assert messaging().public_url(request(forwarded)) == "http://internal:8080/webhooks/twilio/messages?x=1"


def test_bad_proxy_setting_is_named() -> None:
    with pytest.raises(ValueError, match="HILO_TRUSTED_PROXIES: 'nope'"):
        parse_proxies("10.0.0.1,nope")


def inbound(**changes: str) -> dict[str, str]:
    form = {
        "MessageSid": new_sid("SM"),
        "AccountSid": ACCOUNT,
        "From": "+34600111222",
        "To": "+34910000100",
        "Body": "hola",
        "NumMedia": "0",
    }
    form.update(changes)
    return {k: v for k, v in form.items() if v != "<drop>"}


def test_inbound_sms_is_matched_to_its_channel_by_account_and_to() -> None:
    received = twilio.parse_inbound(inbound(), CHANNELS)
    assert (received.channel, received.channel_name, received.text) == ("sms", "sms", "hola")
    other_account = twilio.parse_inbound(inbound(AccountSid="AC" + "2" * 32), CHANNELS)
    assert other_account.channel_name is None


def test_inbound_by_messaging_service_first() -> None:
    received = twilio.parse_inbound(inbound(MessagingServiceSid="MG" + "a" * 32, To="+34910009999"), CHANNELS)
    assert received.channel_name == "svc"


def test_whatsapp_prefix_means_whatsapp_and_button_replies_are_choices() -> None:
    received = twilio.parse_inbound(
        inbound(
            From="whatsapp:+34600111222",
            To="whatsapp:+34910000101",
            Body="",
            ButtonPayload="opt_2",
            ButtonText="Billing",
            NumMedia="1",
            MediaUrl0="https://api.twilio.com/media/ME1",
            MediaContentType0="image/jpeg",
        ),
        CHANNELS,
    )
    assert (received.channel, received.channel_name) == ("whatsapp", "wa")
    assert (received.choice_id, received.text) == ("opt_2", "Billing")
    assert received.media == [{"url": "https://api.twilio.com/media/ME1", "mime_type": "image/jpeg", "caption": None}]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"MessageSid": "<drop>"}, "MessageSid"),
        ({"From": ""}, "From"),
        ({"To": "<drop>"}, "To"),
        ({"NumMedia": "x"}, "NumMedia"),
        ({"NumMedia": "1"}, "MediaUrl0"),
        ({"From": "whatsapp:+34600111222"}, "From"),
    ],
)
def test_malformed_inbound_names_the_field(changes: dict[str, str], field: str) -> None:
    with pytest.raises(BadPayload) as caught:
        twilio.parse_inbound(inbound(**changes), CHANNELS)
    assert caught.value.field == field


def test_status_callbacks_map_to_outbox_states() -> None:
    update = twilio.parse_status({"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "30003"})
    assert (update.status, update.provider_status, update.error_code) == ("failed", "undelivered", "30003")
    assert twilio.parse_status({"MessageSid": "SM1", "MessageStatus": "read"}).status == "read"
    with pytest.raises(BadPayload, match="MessageStatus"):
        twilio.parse_status({"MessageSid": "SM1", "MessageStatus": "teleported"})


def message(**changes: object) -> OutboundMessage:
    fields: dict[str, object] = {
        "channel": "sms",
        "provider": "twilio",
        "sender": "+34910000100",
        "recipient": "+34600111222",
        "text": "Choose one",
        "conversation_id": "c1",
    }
    fields.update(changes)
    return OutboundMessage(**fields)  # type: ignore[arg-type]


async def test_sender_speaks_the_messages_api_to_the_fake() -> None:
    fake = FakeTwilio(ACCOUNT, TOKEN)
    base = await fake.start()
    sender = twilio.TwilioSender(
        CHANNELS, TOKEN, base_url=base, status_callback_url="https://hilo.example.com/webhooks/twilio/status"
    )
    try:
        # a menu keyed 3 and 7: the lines carry the keys the flow matches, not positions
        result = await sender.send(message(choices=[Choice("3", "Sales"), Choice("7", "Support")]), 1)
        assert result.provider_message_id.startswith("SM") and len(result.provider_message_id) == 34
        [sent] = fake.messages
        assert sent["form"] == {
            "To": "+34600111222",
            "From": "+34910000100",
            "Body": "Choose one\n3. Sales\n7. Support",
            "StatusCallback": "https://hilo.example.com/webhooks/twilio/status",
        }
        # a channel with a Messaging Service sends through it
        await sender.send(message(sender="MG" + "a" * 32), 2)
        assert fake.messages[-1]["form"]["MessagingServiceSid"] == "MG" + "a" * 32
        assert "From" not in fake.messages[-1]["form"]

        failed = await refused(sender, message(), 3, fake=fake, failure=Failure(status=429, retry_after=3))
        assert (failed.retryable, failed.retry_after, failed.code) == (True, 3.0, "20429")
        failed = await refused(sender, message(), 4, fake=fake, failure=Failure(status=503))
        assert failed.retryable
        outside = Failure(status=400, code=63016, message="Failed to send freeform message outside the window")
        failed = await refused(sender, message(channel="whatsapp"), 5, fake=fake, failure=outside)
        assert (failed.retryable, failed.code) == (False, "63016")

        wrong = twilio.TwilioSender(CHANNELS, "wrong-token", base_url=base, status_callback_url=None)
        failed = await refused(wrong, message(), 6, fake=fake, failure=None)
        assert (failed.retryable, failed.code) == (False, "20003")
        await wrong.close()
    finally:
        await sender.close()
        await fake.close()


async def test_fake_reports_statuses_signed_like_twilio() -> None:
    """What the demo relies on: after accepting a message the fake calls its StatusCallback, signed."""
    got: list[tuple[bool, dict[str, str]]] = []
    done = asyncio.Event()

    async def callback(request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        valid = twilio.valid_signature(TOKEN, str(request.url), form.items(), request.headers["X-Twilio-Signature"])
        got.append((valid, form))
        if len(got) == 2:
            done.set()
        return web.Response(text=twilio.EMPTY_TWIML, content_type="text/xml")

    receiver = web.Application()
    receiver.router.add_post("/status", callback)
    runner = web.AppRunner(receiver)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake = FakeTwilio(ACCOUNT, TOKEN)
    fake.auto_statuses = ["sent", "delivered"]
    sender = twilio.TwilioSender(
        CHANNELS, TOKEN, base_url=await fake.start(), status_callback_url=f"http://127.0.0.1:{port}/status"
    )
    try:
        result = await sender.send(message(), 1)
        await asyncio.wait_for(done.wait(), 5)
        assert [(valid, form["MessageSid"], form["MessageStatus"]) for valid, form in got] == [
            (True, result.provider_message_id, "sent"),
            (True, result.provider_message_id, "delivered"),
        ]
    finally:
        await sender.close()
        await fake.close()
        await runner.cleanup()
