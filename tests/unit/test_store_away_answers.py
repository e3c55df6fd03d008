"""What a message's way in answers while PostgreSQL cannot store it (restarting, away): the providers' webhooks
a 503 with Retry-After (so the provider sends it again; never a 200 for what is not stored, never a 500 with
a stack trace), the web chat an error frame naming the store, with the same retry hint. Anything else the
inbox raises is not hidden behind a 503."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bridges.channels import ChannelConfig, Channels
from bridges.fakes.twilio import FakeTwilio
from bridges.fakes.whatsapp import FakeWhatsApp, meta_json
from bridges.http import STORE_RETRY_AFTER_S, Messaging, add_routes
from bridges.twilio import signature as twilio_signature
from bridges.webchat import STORE_RETRY_S, WebChat
from bridges.whatsapp import signature as whatsapp_signature
from hilo.web.unavailable import RETRY_AFTER_S, unavailable

ACCOUNT = "AC" + "1" * 32
PHONE_ID = "109876543210001"
CHANNELS = Channels(
    [
        ChannelConfig(name="sms", provider="twilio", address="+34910000100", flow="demo"),
        ChannelConfig(name="wa", provider="whatsapp_cloud", phone_number_id=PHONE_ID, flow="demo"),
    ],
    ACCOUNT,
)
STORE_AWAY: list[BaseException] = [
    ConnectionRefusedError(111, "Connect call failed"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
]


class AwayInbox:
    """An inbox whose store raises `error` on every write."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def accept_all(self, messages: list[Any]) -> list[tuple[int, bool]]:
        raise self.error

    async def accept(self, **message: Any) -> tuple[int, bool]:
        raise self.error


def messaging(inbox: AwayInbox) -> Messaging:
    return Messaging(
        channels=CHANNELS,
        inbox=inbox,  # type: ignore[arg-type]
        outbox=inbox,  # type: ignore[arg-type]
        twilio_sender=None,  # type: ignore[arg-type]
        cloud_sender=None,  # type: ignore[arg-type]
        twilio_auth_token="twilio-token",
        whatsapp_app_secret="meta-secret",
        whatsapp_verify_token="",
    )


async def post_both(error: BaseException) -> list[tuple[int, str, str]]:
    """(status, Retry-After, body) of an SMS webhook and a WhatsApp one, signed as the providers sign them."""
    app = web.Application()
    m = messaging(AwayInbox(error))
    add_routes(app, lambda: m)
    twilio, meta = FakeTwilio(ACCOUNT, "twilio-token"), FakeWhatsApp("access", "meta-secret")
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        url = str(client.make_url("/webhooks/twilio/messages"))
        params = twilio.inbound_params("+34600111222", "+34910000100", "hi")
        sms = {"X-Twilio-Signature": twilio_signature("twilio-token", url, params.items())}
        body = meta_json(meta.envelope(PHONE_ID, messages=[meta.text_message("34600111222", "hola")]))
        whatsapp = {"Content-Type": "application/json", "X-Hub-Signature-256": whatsapp_signature("meta-secret", body)}
        answers = []
        for path, data, headers in (
            ("/webhooks/twilio/messages", params, sms),
            ("/webhooks/whatsapp", body, whatsapp),
        ):
            async with client.post(path, data=data, headers=headers) as response:
                answers.append((response.status, response.headers.get("Retry-After", ""), await response.text()))
    return answers


@pytest.mark.parametrize("error", STORE_AWAY, ids=lambda e: type(e).__name__)
async def test_webhooks_get_503_with_retry_after_while_the_store_is_away(error: BaseException) -> None:
    for status, retry_after, body in await post_both(error):
        assert status == 503, body
        assert retry_after == str(STORE_RETRY_AFTER_S)
        assert "store is unavailable" in body and "Traceback" not in body


async def test_a_real_error_of_the_inbox_is_not_passed_off_as_the_store_being_away() -> None:
    [(status, _, _), _] = await post_both(ValueError("a bug"))
    assert status == 500


@pytest.mark.parametrize("error", STORE_AWAY, ids=lambda e: type(e).__name__)
async def test_a_web_chat_message_not_stored_is_refused_naming_the_store(error: BaseException) -> None:
    chat = WebChat(AwayInbox(error), redis=None, namespace="t")  # type: ignore[arg-type]
    answer = await chat.accept("v1-abc", "web", {"type": "message", "id": "m1", "text": "hello"})
    assert answer == {
        "type": "error",
        "id": "m1",
        "field": "store",
        "reason": "not stored: the store is unavailable",
        "retry_after": STORE_RETRY_S,
    }


@pytest.mark.parametrize("error", STORE_AWAY, ids=lambda e: type(e).__name__)
async def test_an_api_request_that_finds_postgres_away_gets_503_with_retry_after(error: BaseException) -> None:
    async def handler(request: web.Request) -> web.Response:
        raise error

    async def bug(request: web.Request) -> web.Response:
        raise ValueError("a bug")

    app = web.Application(middlewares=[unavailable])
    app.router.add_get("/api/wallboard", handler)
    app.router.add_get("/api/bug", bug)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        async with client.get("/api/wallboard") as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == str(RETRY_AFTER_S)
            assert (await response.json())["error"] == "unavailable"
        async with client.get("/api/bug") as response:
            assert response.status == 500
