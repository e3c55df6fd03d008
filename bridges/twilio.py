"""Twilio Programmable Messaging (SMS, and WhatsApp through Twilio): webhook signatures, inbound messages,
status callbacks, and sending through the Messages REST API.

Signature (what Twilio documents for `X-Twilio-Signature`): the full URL Twilio requested (scheme, host,
port if any, path, query), then every POST parameter sorted by name, each name followed by its value,
HMAC-SHA1 keyed with the account's auth token, base64. Twilio's own validators accept the URL with and
without the scheme's default port (it may or may not have been in the URL Twilio signed), so does this."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from bridges.channels import Channels
from bridges.messages import (
    BadPayload,
    Channel,
    OutboundMessage,
    Provider,
    Received,
    SendFailed,
    SendResult,
    StatusUpdate,
    numbered,
    retry_after_seconds,
)
from hilo.logs import mask_pii

log = logging.getLogger(__name__)
PROVIDER = "twilio"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
API_VERSION = "2010-04-01"
# Twilio's MessageStatus -> the outbox's states (bridges/outbox.py)
STATUSES = {
    "accepted": "accepted",
    "scheduled": "accepted",
    "queued": "accepted",
    "sending": "accepted",
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}


# Signatures ------------------------------------------------------------------------------------------


def signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    data = url
    pairs = list(params)
    for name in sorted({n for n, _ in pairs}):
        for value in sorted(v for n, v in pairs if n == name):
            data += name + value
    mac = hmac.new(auth_token.encode(), data.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def url_variants(url: str) -> list[str]:
    """The URL as given, and with the scheme's default port added or removed (whichever it lacks/has)."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    variants = [url]
    if default is None:
        return variants
    if parts.port is None:
        variants.append(urlunsplit(parts._replace(netloc=f"{host}:{default}")))
    elif parts.port == default:
        variants.append(urlunsplit(parts._replace(netloc=host)))
    return variants


def valid_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]], header: str) -> bool:
    if not auth_token or not header:
        return False
    pairs = list(params)
    return any(
        hmac.compare_digest(signature(auth_token, candidate, pairs).encode(), header.encode())
        for candidate in url_variants(url)
    )


# Inbound ---------------------------------------------------------------------------------------------


def kind_of(address: str) -> Channel:
    return "whatsapp" if address.startswith("whatsapp:") else "sms"


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise BadPayload(name, "missing")
    return value


def parse_inbound(form: dict[str, str], channels: Channels) -> Received:
    """An incoming-message webhook's parameters (the first value of each) as a message to store."""
    sid = _required(form, "MessageSid")
    account = _required(form, "AccountSid")
    sender = _required(form, "From")
    to = _required(form, "To")
    if kind_of(sender) != kind_of(to):
        raise BadPayload("From", "one of From and To has the whatsapp: prefix and the other not")
    try:
        num_media = int(form.get("NumMedia", "0") or "0")
    except ValueError as exc:
        raise BadPayload("NumMedia", "not a number") from exc
    if not 0 <= num_media <= 10:
        raise BadPayload("NumMedia", "must be 0 to 10")
    media = []
    for i in range(num_media):
        url = _required(form, f"MediaUrl{i}")
        media.append({"url": url, "mime_type": form.get(f"MediaContentType{i}") or None, "caption": None})
    # A WhatsApp quick-reply button or list answer (Twilio Content API): its id and title.
    choice_id = form.get("ButtonPayload") or form.get("ListId") or None
    text = form.get("Body", "") or form.get("ButtonText") or form.get("ListTitle") or None
    channel = channels.for_twilio(form.get("MessagingServiceSid"), account, to)
    if channel is None:
        log.warning("twilio: message %s to %s matches no channel in channels.yaml; kept", sid, mask_pii(to))
    return Received(
        channel=kind_of(sender),
        provider="twilio",
        provider_message_id=sid,
        sender=sender,
        recipient=to,
        text=text,
        choice_id=choice_id,
        media=media,
        channel_name=channel.name if channel else None,
    )


def parse_status(form: dict[str, str]) -> StatusUpdate:
    """A status callback (MessageSid, MessageStatus, ErrorCode) as an outbox status."""
    sid = _required(form, "MessageSid")
    status = _required(form, "MessageStatus")
    if status not in STATUSES:
        raise BadPayload("MessageStatus", f"unknown status {status!r}")
    return StatusUpdate(
        "twilio", sid, STATUSES[status], status, form.get("ErrorCode") or None, form.get("ErrorMessage") or None
    )


# Outbound --------------------------------------------------------------------------------------------


def body_with_choices(message: OutboundMessage) -> str:
    """SMS has no buttons: choices become lines numbered by their id, answered by that id or the title."""
    return numbered(message.text, message.choices)


class TwilioSender:
    """Sends on the Messages REST API: `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`."""

    provider: Provider = "twilio"

    def __init__(self, channels: Channels, auth_token: str, *, base_url: str, status_callback_url: str | None) -> None:
        self.channels = channels
        self.auth_token = auth_token
        self.base_url = base_url.rstrip("/")  # an attribute: tests point it at the fake
        self.status_callback_url = status_callback_url
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def request_form(self, message: OutboundMessage) -> tuple[str, dict[str, str]]:
        """(AccountSid, form fields) for a message."""
        channel = self.channels.for_sender("twilio", message.sender)
        account = self.channels.account_of(channel) if channel else self.channels.default_account_sid
        form = {"To": message.recipient}
        if channel is not None and channel.messaging_service_sid:
            form["MessagingServiceSid"] = channel.messaging_service_sid
        elif message.sender.startswith("MG"):
            form["MessagingServiceSid"] = message.sender
        else:
            form["From"] = message.sender
        if message.template is not None:
            form["ContentSid"] = message.template  # an approved WhatsApp template is a Content SID (HX...)
        else:
            form["Body"] = body_with_choices(message)
        if self.status_callback_url:
            form["StatusCallback"] = self.status_callback_url
        return account, form

    async def send(self, message: OutboundMessage, outbox_id: int) -> SendResult:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": "Hilo-Messaging/1"})
        account, form = self.request_form(message)
        if not account or not self.auth_token:
            raise SendFailed(
                "Twilio is not configured (HILO_TWILIO_ACCOUNT_SID / HILO_TWILIO_AUTH_TOKEN)", retryable=False
            )
        url = f"{self.base_url}/{API_VERSION}/Accounts/{account}/Messages.json"
        basic = base64.b64encode(f"{account}:{self.auth_token}".encode()).decode()
        async with self._session.post(url, data=form, headers={"Authorization": f"Basic {basic}"}) as response:
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = None
            if response.status in (200, 201) and isinstance(body, dict) and body.get("sid"):
                return SendResult(str(body["sid"]))
            raise failure(response.status, body, response.headers.get("Retry-After"))


def failure(status: int, body: object, retry_after: str | None) -> SendFailed:
    """A Twilio error answer (`{code, message, more_info, status}`) as a SendFailed."""
    code = message = None
    if isinstance(body, dict):
        code = str(body["code"]) if body.get("code") is not None else None
        message = body.get("message")
    reason = f"Twilio HTTP {status}" + (f" error {code}" if code else "") + (f": {message}" if message else "")
    after = retry_after_seconds(retry_after)
    retryable = status == 429 or status >= 500 or code == "20429"
    return SendFailed(reason, retryable=retryable, retry_after=after if retryable else None, code=code)
