"""A WhatsApp Cloud API fake: `POST /{version}/{phone_number_id}/messages` with a bearer token, answering
`{"messaging_product": "whatsapp", "contacts": [...], "messages": [{"id": "wamid..."}]}` or Meta's error
JSON (`{"error": {message, type, code, error_subcode, fbtrace_id}}`), and the Cloud API's webhooks to Hilo
(messages, statuses; batched) signed with X-Hub-Signature-256 over the exact bytes sent. The bodies are
encoded the way Meta encodes them (non-ASCII as \\uXXXX, "/" as "\\/"), so a receiver that re-serialises
the JSON before checking the signature fails, as it would in production."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohttp import web

from bridges.fakes.server import Failure, FakeServer
from bridges.whatsapp import signature

WABA_ID = "102290129340398"


def new_wamid() -> str:
    return "wamid." + base64.b64encode(b"\x15\x02" + secrets.token_bytes(30)).decode()


def error_body(code: int, message: str, subcode: int | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": secrets.token_urlsafe(12),
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


def meta_json(payload: dict[str, Any]) -> bytes:
    """JSON the way Meta's webhooks encode it."""
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode()


class FakeWhatsApp(FakeServer):
    def __init__(self, access_token: str, app_secret: str, version: str = "v21.0", host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.access_token = access_token
        self.app_secret = app_secret
        self.version = version
        self.app.router.add_post("/{version}/{phone_number_id}/messages", self._send)
        self.webhook_url = ""  # where auto_statuses go (Hilo's /webhooks/whatsapp)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The messages accepted, oldest first: their JSON body plus `id` and `phone_number_id`."""
        return [r for r in self.received if r.get("id")]

    async def _send(self, request: web.Request) -> web.Response:
        record: dict[str, Any] = {"phone_number_id": request.match_info["phone_number_id"], "body": None}
        self.received.append(record)
        if request.headers.get("Authorization") != f"Bearer {self.access_token}":
            return web.json_response(
                error_body(190, "Invalid OAuth access token - Cannot parse access token"), status=401
            )
        if request.match_info["version"] != self.version:
            return web.json_response(
                error_body(2500, f"Unknown path components: /{request.match_info['version']}"), status=400
            )
        try:
            body = await request.json()
        except ValueError:
            return web.json_response(error_body(100, "(#100) Invalid JSON body"), status=400)
        record["body"] = body
        failure = await self.next_failure()
        if failure is not None:
            headers = {"Retry-After": f"{failure.retry_after:g}"} if failure.retry_after is not None else {}
            code = failure.code or (130429 if failure.status == 429 else 131000)
            return web.json_response(error_body(code, failure.message), status=failure.status, headers=headers)
        problem = self._invalid(body)
        if problem:
            return web.json_response(error_body(100, f"(#100) {problem}", 2494010), status=400)
        record["id"] = new_wamid()
        if self.auto_statuses and self.webhook_url:
            self.later(self._report(record["phone_number_id"], record["id"], body["to"], list(self.auto_statuses)))
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                "messages": [{"id": record["id"]}],
            }
        )

    @staticmethod
    def _invalid(body: Any) -> str | None:
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
            return "The parameter messaging_product is required."
        if not body.get("to"):
            return "The parameter to is required."
        kind = body.get("type", "text")
        if kind == "text":
            return None if (body.get("text") or {}).get("body") else "The parameter text['body'] is required."
        if kind == "template":
            template = body.get("template") or {}
            return (
                None if template.get("name") and (template.get("language") or {}).get("code") else "Invalid template."
            )
        if kind == "interactive":
            interactive = body.get("interactive") or {}
            action = interactive.get("action") or {}
            if interactive.get("type") == "button":
                buttons = action.get("buttons") or []
                if not 1 <= len(buttons) <= 3 or any(len(b["reply"]["title"]) > 20 for b in buttons):
                    return (
                        "Param interactive['action']['buttons'] must have 1-3 buttons with titles of at most"
                        " 20 characters."
                    )
                return None
            if interactive.get("type") == "list":
                rows = [r for s in action.get("sections") or [] for r in s.get("rows") or []]
                if not 1 <= len(rows) <= 10 or any(len(r["title"]) > 24 for r in rows):
                    return (
                        "Param interactive['action']['sections'] must have 1-10 rows with titles of at most"
                        " 24 characters."
                    )
                return None
        return f"Unsupported message type {kind}."

    async def _report(self, phone_number_id: str, wamid: str, to: str, statuses: list[str]) -> None:
        for status in statuses:
            await asyncio.sleep(0.2)
            await self.post_signed(
                self.webhook_url, self.envelope(phone_number_id, statuses=[self.status(wamid, status, to)])
            )

    # Calls to Hilo, signed like Meta ---------------------------------------------------------------

    def envelope(
        self,
        phone_number_id: str,
        *,
        messages: Sequence[dict[str, Any]] = (),
        statuses: Sequence[dict[str, Any]] = (),
        contacts: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """One webhook body with one entry and one change carrying `messages` and/or `statuses`."""
        value: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "34910000102", "phone_number_id": phone_number_id},
        }
        if messages:
            value["contacts"] = contacts or [{"profile": {"name": "Customer"}, "wa_id": m["from"]} for m in messages]
            value["messages"] = list(messages)
        if statuses:
            value["statuses"] = list(statuses)
        return {
            "object": "whatsapp_business_account",
            "entry": [{"id": WABA_ID, "changes": [{"value": value, "field": "messages"}]}],
        }

    @staticmethod
    def text_message(sender: str, text: str, *, wamid: str | None = None) -> dict[str, Any]:
        return {
            "from": sender,
            "id": wamid or new_wamid(),
            "timestamp": str(int(time.time())),
            "type": "text",
            "text": {"body": text},
        }

    @staticmethod
    def status(wamid: str, status: str, recipient: str, *, error_code: int | None = None) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": wamid,
            "status": status,
            "timestamp": str(int(time.time())),
            "recipient_id": recipient,
        }
        if error_code is not None:
            item["errors"] = [
                {
                    "code": error_code,
                    "title": "Message failed to send",
                    "message": "Message failed to send",
                    "error_data": {
                        "details": "Message failed to send because more than 24 hours have passed"
                        if error_code == 131047
                        else "Message failed to send"
                    },
                }
            ]
        return item

    async def post_signed(
        self, url: str, payload: dict[str, Any] | bytes, *, secret: str | None = None
    ) -> tuple[int, str]:
        """POST a webhook to `url` signed with the app secret (`secret`: another, to forge); (status, text)."""
        body = payload if isinstance(payload, bytes) else meta_json(payload)
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": signature(secret or self.app_secret, body),
        }
        async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
            return response.status, await response.text()


__all__ = ["Failure", "FakeWhatsApp", "error_body", "meta_json", "new_wamid"]
