"""Text load beside the calls: SMS and WhatsApp customers writing through the provider fakes, web chat
visitors through the widget's socket.

Each conversation: the customer writes "Hello" (a Twilio webhook, a WhatsApp Cloud API webhook, both signed
as the providers sign them, or a web chat frame), Hilo's flow answers (SMS and WhatsApp replies go out
through Hilo's outbox to the provider's API, which the fakes here stand in for, so Hilo must be started with
HILO_TWILIO_API_BASE / HILO_WHATSAPP_API_BASE on loopback); with a menu choice the customer answers it and
waits for the next reply. Measured: the webhook's answer, and the time to Hilo's first reply and to its
reply to the choice. A choice that queues the conversation leaves it waiting for an agent (the after-run
check then says so): the default is no choice. Web chat visitors come from addresses of their own in
127.0.1.0/24, so the widget's per-address limits see a crowd, not one machine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bridges.channels import load_channels
from bridges.fakes.twilio import FakeTwilio
from bridges.fakes.whatsapp import FakeWhatsApp
from hilo.settings import Settings
from server.loadtest.profile import ProfileError, TextLoad, caller_numbers, require_loopback, require_loopback_url
from server.loadtest.stats import summary

GREETING = "Hello"


@dataclass
class ChannelLoad:
    name: str
    rate: float
    started: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    first_reply_ms: list[float] = field(default_factory=list)
    choice_reply_ms: list[float] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        self.failed[reason] = self.failed.get(reason, 0) + 1

    def as_json(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "started": self.started,
            "replied": len(self.first_reply_ms),
            "failed": sum(self.failed.values()),
            "failures": self.failed,
            "first_reply_ms": summary(self.first_reply_ms, 1),
            "choice_reply_ms": summary(self.choice_reply_ms, 1),
        }


class Replies:
    """Messages Hilo sent to a fake, by recipient, with when they were seen (polled every 10 ms). A record
    counts once the fake accepted it (it has the provider's id); one still being read is looked at again."""

    PATIENCE = 200  # polls (2 s) before a record that never got an id is given up (refused by the fake)

    def __init__(self, records: list[dict[str, Any]], recipient: Callable[[dict[str, Any]], str | None]) -> None:
        self.records = records
        self.recipient = recipient
        self.seen = 0
        self.open: dict[int, int] = {}  # index -> polls waited
        self.times: dict[str, list[float]] = {}

    def poll(self) -> None:
        now = time.time()
        self.open.update({i: 0 for i in range(self.seen, len(self.records))})
        self.seen = len(self.records)
        for index in sorted(self.open):
            record = self.records[index]
            if record.get("sid") or record.get("id"):
                del self.open[index]
                to = self.recipient(record)
                if to:
                    self.times.setdefault(to, []).append(now)
            elif self.open[index] >= self.PATIENCE:
                del self.open[index]
            else:
                self.open[index] += 1

    async def wait(self, to: str, count: int, timeout: float) -> float | None:
        """When the `count`th message to `to` was seen, or None after `timeout`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.times.get(to, [])
            if len(got) >= count:
                return got[count - 1]
            await asyncio.sleep(0.01)
        return None


class TextDriver:
    def __init__(
        self,
        text: TextLoad,
        duration_s: float,
        *,
        hilo_base: str,
        twilio: FakeTwilio | None,
        twilio_port: int,
        sms_address: str | None,
        whatsapp: FakeWhatsApp | None,
        whatsapp_port: int,
        phone_number_id: str | None,
        webchat_site: str | None,
    ) -> None:
        self.text = text
        self.duration_s = duration_s
        self.hilo_base = hilo_base.rstrip("/")
        self.twilio, self.twilio_port, self.sms_address = twilio, twilio_port, sms_address
        self.whatsapp, self.whatsapp_port, self.phone_number_id = whatsapp, whatsapp_port, phone_number_id
        self.webchat_site = webchat_site
        self.loads = {
            name: ChannelLoad(name, rate)
            for name, rate in (("sms", text.sms_rate), ("whatsapp", text.whatsapp_rate), ("webchat", text.chat_rate))
            if rate > 0
        }
        self.numbers = caller_numbers(1000)
        self._next_number = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._schedulers: list[asyncio.Task[None]] = []
        self._sms_replies = Replies(twilio.received, lambda r: (r.get("form") or {}).get("To")) if twilio else None
        self._wa_replies = Replies(whatsapp.received, lambda r: (r.get("body") or {}).get("to")) if whatsapp else None
        self._poller: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, text: TextLoad, duration_s: float) -> TextDriver:
        require_loopback("HILO_HTTP_HOST", settings.http_host)
        channels = load_channels(settings.dialplans_dir, settings.twilio_account_sid)
        twilio = whatsapp = None
        twilio_port = whatsapp_port = 0
        sms_address = phone_number_id = site = None
        if text.sms_rate > 0:
            twilio_port = _fake_port("HILO_TWILIO_API_BASE", settings.twilio_api_base, "SMS replies")
            sms_address = next((c.address for c in channels.all if c.kind == "sms" and c.address), None)
            if sms_address is None:
                raise ProfileError("--sms-rate: dialplans/channels.yaml has no Twilio SMS channel with an address")
            twilio = FakeTwilio(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value())
        if text.whatsapp_rate > 0:
            whatsapp_port = _fake_port("HILO_WHATSAPP_API_BASE", settings.whatsapp_api_base, "WhatsApp replies")
            phone_number_id = next(
                (c.phone_number_id for c in channels.all if c.provider == "whatsapp_cloud" and c.phone_number_id),
                None,
            )
            if phone_number_id is None:
                raise ProfileError("--whatsapp-rate: dialplans/channels.yaml has no whatsapp_cloud channel")
            whatsapp = FakeWhatsApp(
                settings.whatsapp_access_token.get_secret_value(),
                settings.whatsapp_app_secret.get_secret_value(),
                settings.whatsapp_api_version,
            )
        if text.chat_rate > 0:
            site = next((c.site for c in channels.all if c.provider == "webchat" and c.site), "web")
        return cls(
            text,
            duration_s,
            hilo_base=f"http://{settings.http_host}:{settings.http_port}",
            twilio=twilio,
            twilio_port=twilio_port,
            sms_address=sms_address,
            whatsapp=whatsapp,
            whatsapp_port=whatsapp_port,
            phone_number_id=phone_number_id,
            webchat_site=site,
        )

    async def start(self, t0: float) -> None:
        if self.twilio is not None:
            await self.twilio.start(self.twilio_port)
        if self.whatsapp is not None:
            await self.whatsapp.start(self.whatsapp_port)
        self._poller = asyncio.create_task(self._poll())
        runs: dict[str, Callable[[ChannelLoad, int], Awaitable[None]]] = {
            "sms": self._sms,
            "whatsapp": self._whatsapp,
            "webchat": self._webchat,
        }
        for name, load in self.loads.items():
            self._schedulers.append(asyncio.create_task(self._schedule(load, runs[name], t0)))

    async def _poll(self) -> None:
        while True:
            for replies in (self._sms_replies, self._wa_replies):
                if replies is not None:
                    replies.poll()
            await asyncio.sleep(0.01)

    async def _schedule(self, load: ChannelLoad, run: Callable[[ChannelLoad, int], Awaitable[None]], t0: float) -> None:
        count = int(load.rate * self.duration_s)
        for k in range(count):
            delay = t0 + k / load.rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            load.started += 1
            task = asyncio.create_task(self._guarded(load, run, k))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _guarded(self, load: ChannelLoad, run: Callable[[ChannelLoad, int], Awaitable[None]], k: int) -> None:
        try:
            await run(load, k)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            load.fail(type(exc).__name__)

    def _number(self) -> str:
        number = self.numbers[self._next_number % len(self.numbers)]
        self._next_number += 1
        return number

    async def _exchange(
        self, load: ChannelLoad, send: Callable[[str], Awaitable[int]], replies: Replies, to: str
    ) -> None:
        """Greeting, first reply, then (with a choice) the choice and the reply to it."""
        before = len(replies.times.get(to, []))
        sent = time.time()
        status = await send(GREETING)
        if status != 200:
            load.fail(f"webhook answered {status}")
            return
        got = await replies.wait(to, before + 1, self.text.reply_timeout_s)
        if got is None:
            load.fail("no reply")
            return
        load.first_reply_ms.append((got - sent) * 1000)
        if not self.text.choice:
            return
        await asyncio.sleep(1.0)  # the flow's menu may come in two messages: let them arrive
        before = len(replies.times.get(to, []))
        sent = time.time()
        status = await send(self.text.choice)
        if status != 200:
            load.fail(f"webhook answered {status}")
            return
        got = await replies.wait(to, before + 1, self.text.reply_timeout_s)
        if got is None:
            load.fail("no reply to the choice")
            return
        load.choice_reply_ms.append((got - sent) * 1000)

    async def _sms(self, load: ChannelLoad, k: int) -> None:
        assert self.twilio is not None and self._sms_replies is not None and self.sms_address is not None
        twilio, sender, address = self.twilio, self._number(), self.sms_address
        url = self.hilo_base + "/webhooks/twilio/messages"

        async def send(body: str) -> int:
            status, _ = await twilio.post_signed(url, twilio.inbound_params(sender, address, body))
            return status

        await self._exchange(load, send, self._sms_replies, sender)

    async def _whatsapp(self, load: ChannelLoad, k: int) -> None:
        assert self.whatsapp is not None and self._wa_replies is not None and self.phone_number_id is not None
        meta, wa_id, pnid = self.whatsapp, self._number().lstrip("+"), self.phone_number_id
        url = self.hilo_base + "/webhooks/whatsapp"

        async def send(body: str) -> int:
            status, _ = await meta.post_signed(url, meta.envelope(pnid, messages=[meta.text_message(wa_id, body)]))
            return status

        await self._exchange(load, send, self._wa_replies, wa_id)

    async def _webchat(self, load: ChannelLoad, k: int) -> None:
        local = f"127.0.1.{1 + k % 250}"
        connector = aiohttp.TCPConnector(local_addr=(local, 0))
        timeout = self.text.reply_timeout_s
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.ws_connect(
                f"{self.hilo_base}/chat/ws?site={self.webchat_site}", timeout=aiohttp.ClientWSTimeout(ws_close=5)
            ) as ws,
        ):
            await ws.send_str(json.dumps({"type": "hello", "token": None}))
            welcome = json.loads((await ws.receive(timeout=timeout)).data)
            if welcome.get("type") != "welcome":
                load.fail(f"refused: {welcome.get('reason', welcome.get('type'))}")
                return
            for n, body in enumerate([GREETING, *([self.text.choice] if self.text.choice else [])]):
                sent = time.time()
                await ws.send_str(json.dumps({"type": "message", "id": secrets.token_hex(8), "text": body}))
                reply = await _next_message(ws, timeout)
                if reply is None:
                    load.fail("no reply" if n == 0 else "no reply to the choice")
                    return
                (load.first_reply_ms if n == 0 else load.choice_reply_ms).append((time.time() - sent) * 1000)
                if not self.text.choice:
                    return
                await _drain(ws, 1.0)  # the rest of the menu

    async def finish(self) -> None:
        """Every conversation started has had its time to end (bounded by the reply timeouts)."""
        for scheduler in self._schedulers:
            with contextlib.suppress(asyncio.CancelledError):
                await scheduler
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2 * self.text.reply_timeout_s + 2)

    async def close(self) -> None:
        for task in [*self._schedulers, *self._tasks, *([self._poller] if self._poller else [])]:
            task.cancel()
        await asyncio.gather(*self._schedulers, *self._tasks, return_exceptions=True)
        if self._poller is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for fake in (self.twilio, self.whatsapp):
            if fake is not None:
                await fake.close()

    def report(self) -> dict[str, Any]:
        return {
            "choice": self.text.choice or None,
            "channels": {name: load.as_json() for name, load in self.loads.items()},
        }


def _fake_port(setting: str, base: str, what: str) -> int:
    try:
        require_loopback_url(setting, base)
    except ProfileError:
        raise ProfileError(
            f"{setting} is {base}: the server would send its {what} there, not to the load test's fake; start"
            f" the server (and this command) with {setting}=http://127.0.0.1:<port>"
        ) from None
    port = urlsplit(base).port
    if port is None:
        raise ProfileError(f"{setting}: {base} needs a port for the fake to listen on")
    return port


async def _next_message(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> dict[str, Any] | None:
    deadline = time.time() + timeout
    while (left := deadline - time.time()) > 0:
        try:
            frame = await ws.receive(timeout=left)
        except TimeoutError:
            return None
        if frame.type != aiohttp.WSMsgType.TEXT:
            return None
        data = json.loads(frame.data)
        if data.get("type") == "message":
            return dict(data)
        if data.get("type") == "error":
            raise ValueError(f"web chat refused the message: {data.get('reason')}")
    return None


async def _drain(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                frame = await ws.receive()
                if frame.type != aiohttp.WSMsgType.TEXT:
                    return
