"""A Twilio fake: the Messages REST API (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, basic
auth with the account sid and auth token) answering a message resource (`sid` "SM" + 32 hex, `status`
queued) or Twilio's error JSON (`{code, message, more_info, status}`), and Twilio's webhooks to Hilo
(incoming messages, status callbacks) signed with X-Twilio-Signature."""

from __future__ import annotations

import asyncio
import secrets
from email.utils import formatdate
from typing import Any

import aiohttp
from aiohttp import web

from bridges.fakes.server import Failure, FakeServer
from bridges.twilio import signature

MORE_INFO = "https://www.twilio.com/docs/errors/{code}"


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def error_body(status: int, code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "more_info": MORE_INFO.format(code=code), "status": status}


class FakeTwilio(FakeServer):
    def __init__(self, account_sid: str, auth_token: str, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", self._create_message)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The messages accepted (201), oldest first: their form fields plus `sid`."""
        return [r for r in self.received if r.get("sid")]

    async def _create_message(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        record: dict[str, Any] = {"form": form, "account": request.match_info["account"]}
        self.received.append(record)
        auth = request.headers.get("Authorization", "")
        try:
            credentials = aiohttp.BasicAuth.decode(auth) if auth else None
        except ValueError:
            credentials = None
        if (
            credentials is None
            or credentials.login != self.account_sid
            or credentials.password != self.auth_token
            or request.match_info["account"] != self.account_sid
        ):
            return web.json_response(error_body(401, 20003, "Authenticate"), status=401)
        failure = await self.next_failure()
        if failure is not None:
            headers = {"Retry-After": f"{failure.retry_after:g}"} if failure.retry_after is not None else {}
            code = failure.code or (20429 if failure.status == 429 else 20500)
            return web.json_response(
                error_body(failure.status, code, failure.message), status=failure.status, headers=headers
            )
        if not form.get("To"):
            return web.json_response(error_body(400, 21604, "A 'To' phone number is required."), status=400)
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return web.json_response(error_body(400, 21603, "A 'From' phone number is required."), status=400)
        if not form.get("Body") and not form.get("MediaUrl") and not form.get("ContentSid"):
            return web.json_response(error_body(400, 21602, "Message body is required."), status=400)
        sid = new_sid("SM")
        record["sid"] = sid
        if self.auto_statuses and form.get("StatusCallback"):
            self.later(self._report(sid, list(self.auto_statuses)))
        now = formatdate(usegmt=True)
        return web.json_response(
            {
                "account_sid": self.account_sid,
                "api_version": "2010-04-01",
                "body": form.get("Body", ""),
                "date_created": now,
                "date_sent": None,
                "date_updated": now,
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "num_media": "0",
                "num_segments": "1",
                "price": None,
                "price_unit": "USD",
                "sid": sid,
                "status": "queued",
                "subresource_uris": {"media": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}/Media.json"},
                "to": form["To"],
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
            },
            status=201,
        )

    # Calls to Hilo, signed like Twilio -------------------------------------------------------------

    async def post_signed(
        self,
        url: str,
        params: dict[str, str],
        *,
        token: str | None = None,
        signed_url: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """POST `params` form-encoded to `url` with X-Twilio-Signature over `signed_url` (default `url`: the
        public URL Twilio was given, when a proxy stands between) and `token` (another one, to forge).
        Returns (status, body)."""
        sent = {"X-Twilio-Signature": signature(token or self.auth_token, signed_url or url, params.items())}
        sent.update(headers or {})
        async with aiohttp.ClientSession() as session, session.post(url, data=params, headers=sent) as response:
            return response.status, await response.text()

    async def _report(self, sid: str, statuses: list[str]) -> None:
        for status in statuses:
            await asyncio.sleep(0.2)
            await self.send_status(sid, status)

    def inbound_params(self, sender: str, to: str, body: str, **extra: str) -> dict[str, str]:
        """An incoming-message webhook's parameters, as Twilio sends them."""
        params = {
            "ToCountry": "ES",
            "SmsMessageSid": "",
            "NumMedia": "0",
            "SmsSid": "",
            "SmsStatus": "received",
            "Body": body,
            "To": to,
            "NumSegments": "1",
            "MessageSid": new_sid("SM"),
            "AccountSid": self.account_sid,
            "From": sender,
            "ApiVersion": "2010-04-01",
        }
        params["SmsMessageSid"] = params["SmsSid"] = params["MessageSid"]
        if sender.startswith("whatsapp:"):
            params["WaId"] = sender.removeprefix("whatsapp:+")
            params["ProfileName"] = "Customer"
        params.update(extra)
        return params

    def status_params(self, sid: str, status: str, *, to: str, error_code: str | None = None) -> dict[str, str]:
        params = {
            "SmsSid": sid,
            "SmsStatus": status,
            "MessageStatus": status,
            "To": to,
            "MessageSid": sid,
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
        }
        if error_code:
            params["ErrorCode"] = error_code
        return params

    async def send_status(self, sid: str, status: str, *, error_code: str | None = None) -> int:
        """A status callback for a message this fake accepted, to the StatusCallback it was given."""
        record = next(r for r in self.messages if r["sid"] == sid)
        url = record["form"].get("StatusCallback")
        if not url:
            raise ValueError(f"message {sid} was sent without a StatusCallback")
        status_code, _ = await self.post_signed(
            url, self.status_params(sid, status, to=record["form"]["To"], error_code=error_code)
        )
        return status_code


__all__ = ["Failure", "FakeTwilio", "error_body", "new_sid"]
