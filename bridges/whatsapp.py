"""WhatsApp Business Cloud API: the webhook handshake and signature, inbound messages and statuses, and
sending through `POST {base}/{version}/{phone_number_id}/messages`.

Signature: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw request body, keyed with the app
secret>`. It is computed over the bytes received, never over re-serialised JSON (Meta escapes non-ASCII
as \\uXXXX and "/" as "\\/"; any re-encoding changes the bytes). One POST batches several entries,
changes, messages and statuses."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
from typing import Any

import aiohttp

from bridges.channels import Channels
from bridges.messages import (
    BadPayload,
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
PROVIDER = "whatsapp_cloud"
STATUSES = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed"}
MEDIA_TYPES = ("image", "audio", "document", "video", "sticker")
MAX_BUTTONS, MAX_BUTTON_TITLE = 3, 20
MAX_ROWS, MAX_ROW_TITLE, MAX_ROW_DESCRIPTION = 10, 24, 72
# Cloud API error codes worth trying again: throttling, and temporary failures on Meta's side.
RETRYABLE_CODES = frozenset({1, 2, 4, 17, 80007, 130429, 131000, 131016, 131048, 131056, 133004})


def signature(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def valid_signature(app_secret: str, body: bytes, header: str) -> bool:
    if not app_secret or not header:
        return False
    return hmac.compare_digest(signature(app_secret, body).encode(), header.encode())


def verify_subscription(query: dict[str, str], verify_token: str) -> str | None:
    """The hub.challenge to answer to Meta's subscription handshake, or None (answered 403)."""
    if not verify_token or query.get("hub.mode") != "subscribe":
        return None
    if not hmac.compare_digest(query.get("hub.verify_token", "").encode(), verify_token.encode()):
        return None
    return query.get("hub.challenge")


# Inbound ---------------------------------------------------------------------------------------------


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadPayload(where, "must be an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadPayload(where, "must be a list")
    return value


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise BadPayload(f"{where}.{key}", "missing" if value is None else "must be a non-empty string")
    return value


def _timestamp(obj: dict[str, Any], where: str) -> dt.datetime | None:
    raw = obj.get("timestamp")
    if raw is None:
        return None
    try:
        return dt.datetime.fromtimestamp(int(raw), dt.UTC)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadPayload(f"{where}.timestamp", "must be Unix seconds") from exc


def parse_webhook(body: bytes, channels: Channels) -> tuple[list[Received], list[StatusUpdate]]:
    """Every message and status of one webhook POST. BadPayload names the first field that is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPayload("body", "not JSON") from exc
    data = _obj(data, "body")
    if data.get("object") != "whatsapp_business_account":
        raise BadPayload("object", "must be whatsapp_business_account")
    messages: list[Received] = []
    statuses: list[StatusUpdate] = []
    for e, entry in enumerate(_list(data.get("entry"), "entry")):
        for c, change in enumerate(_list(_obj(entry, f"entry[{e}]").get("changes"), f"entry[{e}].changes")):
            where = f"entry[{e}].changes[{c}]"
            change = _obj(change, where)
            if change.get("field") != "messages":
                continue  # account updates, template reviews, ...: not messaging
            value = _obj(change.get("value"), f"{where}.value")
            raw_messages = _list(value.get("messages"), f"{where}.value.messages")
            raw_statuses = _list(value.get("statuses"), f"{where}.value.statuses")
            if not raw_messages and not raw_statuses:
                continue
            phone_number_id = _str(
                _obj(value.get("metadata"), f"{where}.value.metadata"), "phone_number_id", f"{where}.value.metadata"
            )
            channel = channels.for_whatsapp(phone_number_id)
            for m, raw in enumerate(raw_messages):
                messages.append(
                    _message(
                        _obj(raw, f"{where}.value.messages[{m}]"),
                        f"{where}.value.messages[{m}]",
                        phone_number_id,
                        channel.name if channel else None,
                    )
                )
            for s, raw in enumerate(raw_statuses):
                update = _status(_obj(raw, f"{where}.value.statuses[{s}]"), f"{where}.value.statuses[{s}]")
                if update is not None:
                    statuses.append(update)
            if channel is None and raw_messages:
                log.warning(
                    "whatsapp: messages to phone_number_id %s match no channel in channels.yaml; kept", phone_number_id
                )
    return messages, statuses


def _message(raw: dict[str, Any], where: str, phone_number_id: str, channel_name: str | None) -> Received:
    sender = _str(raw, "from", where)
    wamid = _str(raw, "id", where)
    kind = _str(raw, "type", where)
    _timestamp(raw, where)
    text: str | None = None
    choice_id: str | None = None
    media: list[dict[str, Any]] = []
    if kind == "text":
        text = _str(_obj(raw.get("text"), f"{where}.text"), "body", f"{where}.text")
    elif kind == "interactive":
        interactive = _obj(raw.get("interactive"), f"{where}.interactive")
        reply_type = _str(interactive, "type", f"{where}.interactive")
        if reply_type not in ("button_reply", "list_reply"):
            raise BadPayload(f"{where}.interactive.type", f"unknown interactive reply {reply_type!r}")
        reply = _obj(interactive.get(reply_type), f"{where}.interactive.{reply_type}")
        choice_id = _str(reply, "id", f"{where}.interactive.{reply_type}")
        text = _str(reply, "title", f"{where}.interactive.{reply_type}")
    elif kind == "button":  # a template's quick-reply button
        button = _obj(raw.get("button"), f"{where}.button")
        text = _str(button, "text", f"{where}.button")
        choice_id = button.get("payload") or None
    elif kind in MEDIA_TYPES:
        item = _obj(raw.get(kind), f"{where}.{kind}")
        reference = {
            "type": kind,
            "id": _str(item, "id", f"{where}.{kind}"),
            "mime_type": item.get("mime_type"),
            "caption": item.get("caption"),
        }
        if item.get("filename"):
            reference["filename"] = item["filename"]
        media.append(reference)
        text = item.get("caption") or None
    else:  # location, contacts, reaction, unsupported...: kept as they came, for the conversation layer
        media.append({"type": kind, **({"value": raw[kind]} if kind in raw else {})})
    return Received("whatsapp", "whatsapp_cloud", wamid, sender, phone_number_id, text, choice_id, media, channel_name)


def _status(raw: dict[str, Any], where: str) -> StatusUpdate | None:
    wamid = _str(raw, "id", where)
    status = _str(raw, "status", where)
    occurred_at = _timestamp(raw, where)
    if status not in STATUSES:
        log.info("whatsapp: status %r of %s ignored (not a delivery status)", status, wamid)
        return None
    code = message = None
    errors = _list(raw.get("errors"), f"{where}.errors")
    if errors:
        error = _obj(errors[0], f"{where}.errors[0]")
        code = str(error["code"]) if error.get("code") is not None else None
        details = error.get("error_data", {}).get("details") if isinstance(error.get("error_data"), dict) else None
        message = details or error.get("message") or error.get("title")
    return StatusUpdate("whatsapp_cloud", wamid, STATUSES[status], status, code, message, occurred_at)


# Outbound --------------------------------------------------------------------------------------------


def wa_recipient(address: str) -> str:
    """What the Cloud API takes as `to`: the number's digits (a wa_id), whatever spelling it arrived in."""
    return "".join(ch for ch in address.removeprefix("whatsapp:") if ch.isdigit()) or address


def request_body(message: OutboundMessage, template_language: str = "en_US") -> dict[str, Any]:
    """The JSON of `POST /{phone_number_id}/messages`: text, reply buttons (<= 3 short titles), a list
    (<= 10 rows), numbered text beyond that, or a template."""
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": wa_recipient(message.recipient),
    }
    choices = message.choices
    if message.template is not None:
        body.update(type="template", template={"name": message.template, "language": {"code": template_language}})
    elif choices and len(choices) <= MAX_BUTTONS and all(len(c.title) <= MAX_BUTTON_TITLE for c in choices):
        buttons = [{"type": "reply", "reply": {"id": c.id, "title": c.title}} for c in choices]
        body.update(
            type="interactive",
            interactive={"type": "button", "body": {"text": message.text}, "action": {"buttons": buttons}},
        )
    elif choices and len(choices) <= MAX_ROWS:
        rows = []
        for c in choices:
            row = {"id": c.id, "title": c.title[:MAX_ROW_TITLE]}
            if len(c.title) > MAX_ROW_TITLE:
                row["description"] = c.title[:MAX_ROW_DESCRIPTION]
            rows.append(row)
        body.update(
            type="interactive",
            interactive={
                "type": "list",
                "body": {"text": message.text},
                "action": {"button": "Choose", "sections": [{"title": "Options", "rows": rows}]},
            },
        )
    else:
        # numbered by the choices' ids: the reply the flow matches
        body.update(type="text", text={"preview_url": False, "body": numbered(message.text, choices)})
    return body


class CloudSender:
    """Sends on the Cloud API with the app's access token (bearer)."""

    provider: Provider = "whatsapp_cloud"

    def __init__(self, channels: Channels, access_token: str, *, base_url: str, api_version: str) -> None:
        self.channels = channels
        self.access_token = access_token
        self.base_url = base_url.rstrip("/")  # an attribute: tests point it at the fake
        self.api_version = api_version
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, message: OutboundMessage, outbox_id: int) -> SendResult:
        if not self.access_token:
            raise SendFailed("the WhatsApp Cloud API is not configured (HILO_WHATSAPP_ACCESS_TOKEN)", retryable=False)
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": "Hilo-Messaging/1"})
        channel = self.channels.for_sender("whatsapp_cloud", message.sender)
        body = request_body(message, channel.template_language if channel else "en_US")
        url = f"{self.base_url}/{self.api_version}/{message.sender}/messages"
        headers = {"Authorization": f"Bearer {self.access_token}"}
        async with self._session.post(url, json=body, headers=headers) as response:
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                answer = None
            if response.status == 200 and isinstance(answer, dict):
                ids = [m.get("id") for m in answer.get("messages", []) if isinstance(m, dict)]
                if ids and ids[0]:
                    return SendResult(str(ids[0]))
            raise failure(response.status, answer, response.headers.get("Retry-After"), message.recipient)


def failure(status: int, answer: object, retry_after: str | None, recipient: str) -> SendFailed:
    """A Cloud API error (`{"error": {message, type, code, error_subcode, fbtrace_id}}`) as a SendFailed."""
    error = answer.get("error") if isinstance(answer, dict) else None
    code: int | None = None
    message = None
    if isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), int) else None
        message = error.get("message")
    reason = (
        f"WhatsApp Cloud API HTTP {status}"
        + (f" error {code}" if code is not None else "")
        + (f": {message}" if message else "")
    )
    retryable = status == 429 or status >= 500 or code in RETRYABLE_CODES
    after = retry_after_seconds(retry_after) if retryable else None
    return SendFailed(
        mask_pii(reason.replace(recipient, "<recipient>")),
        retryable=retryable,
        retry_after=after,
        code=str(code) if code is not None else None,
    )
