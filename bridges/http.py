"""The providers' webhooks, and `Messaging`: the bridges of one Hilo node wired together.

    POST /webhooks/twilio/messages   incoming SMS / WhatsApp-through-Twilio (form), answered with TwiML
    POST /webhooks/twilio/status     Twilio's status callbacks for what the outbox sent
    GET  /webhooks/whatsapp          the Cloud API's subscription handshake (hub.challenge)
    POST /webhooks/whatsapp          Cloud API messages and statuses (JSON, batched)

Every POST is authenticated before anything else: no or a forged signature is answered 401/403 and changes
nothing; a body that cannot be read is answered 400 naming the field. What a webhook carries is committed
to PostgreSQL before it is answered 200, so a provider that gets no 200 sends it again and a redelivery is a
no-op; while PostgreSQL cannot store it (restarting, away) it is answered 503 with Retry-After. Replies
never go in the webhook answer (`<Response/>`): they go through the outbox.

The URL Twilio signed is the public one it called: HILO_PUBLIC_BASE_URL when set; otherwise the scheme and
host of the request, taken from X-Forwarded-Proto/-Host only when the request comes from one of
HILO_TRUSTED_PROXIES (anyone else could write those headers)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from bridges import twilio, whatsapp
from bridges.channels import Channels, load_channels
from bridges.inbox import Inbox, ignore_message
from bridges.messages import BadPayload, InboundHandler
from bridges.outbox import Outbox, RateLimit
from hilo.db import create_pool
from hilo.degraded import STORE_DOWN
from hilo.settings import Settings
from hilo.web.forwarded import Network, within
from hilo.web.forwarded import parse_proxies as parse_proxies  # HILO_TRUSTED_PROXIES, read with channels.yaml

log = logging.getLogger(__name__)


@dataclass
class Messaging:
    channels: Channels
    inbox: Inbox
    outbox: Outbox
    twilio_sender: twilio.TwilioSender
    cloud_sender: whatsapp.CloudSender
    twilio_auth_token: str = field(repr=False)
    whatsapp_app_secret: str = field(repr=False)
    whatsapp_verify_token: str = field(repr=False)
    public_base_url: str = ""
    trusted_proxies: list[Network] = field(default_factory=list)

    async def start(self) -> None:
        await self.inbox.start()
        await self.outbox.start()

    async def stop(self) -> None:
        """Stop processing and sending (receipt goes on: the webhooks still store what arrives)."""
        await self.inbox.stop()
        await self.outbox.stop()

    async def close(self) -> None:
        await self.stop()
        await self.twilio_sender.close()
        await self.cloud_sender.close()

    def set_handler(self, handler: InboundHandler) -> None:
        self.inbox.set_handler(handler)

    def public_url(self, request: web.Request) -> str:
        """The URL the provider called, as it signed it."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/") + request.raw_path
        scheme, host = request.scheme, request.host
        if self._from_trusted_proxy(request):
            scheme = request.headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip() or scheme
            host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip() or host
        return f"{scheme}://{host}{request.raw_path}"

    def _from_trusted_proxy(self, request: web.Request) -> bool:
        return within(request.remote, self.trusted_proxies)


def load_messaging_config(settings: Settings) -> tuple[Channels, list[Network]]:
    """dialplans/channels.yaml and HILO_TRUSTED_PROXIES, checked before anything connects (ConfigError
    names file:line: field; ValueError the setting)."""
    return load_channels(settings.dialplans_dir, settings.twilio_account_sid), parse_proxies(settings.trusted_proxies)


def create_messaging(
    settings: Settings,
    pool: asyncpg.Pool,
    *,
    handler: InboundHandler = ignore_message,
    config: tuple[Channels, list[Network]] | None = None,
    outbox_pool: asyncpg.Pool | None = None,
) -> Messaging:
    """The bridges of this node (not started), on `config` (else read now from `settings`). The outbox sends
    on `outbox_pool` (the server's background pool; by default `pool`)."""
    channels, proxies = config or load_messaging_config(settings)
    dsn = settings.database_url.get_secret_value()
    base = settings.public_base_url.rstrip("/") or f"http://{settings.http_host}:{settings.http_port}"
    twilio_sender = twilio.TwilioSender(
        channels,
        settings.twilio_auth_token.get_secret_value(),
        base_url=settings.twilio_api_base,
        status_callback_url=base + "/webhooks/twilio/status",
    )
    cloud_sender = whatsapp.CloudSender(
        channels,
        settings.whatsapp_access_token.get_secret_value(),
        base_url=settings.whatsapp_api_base,
        api_version=settings.whatsapp_api_version,
    )
    outbox = Outbox(
        outbox_pool or pool,
        [twilio_sender, cloud_sender],
        dsn=dsn,
        rates={
            "twilio": RateLimit(settings.twilio_rate_per_s, settings.twilio_burst),
            "whatsapp_cloud": RateLimit(settings.whatsapp_rate_per_s, settings.whatsapp_burst),
        },
        send_timeout_s=settings.messaging_send_timeout_s,
        max_attempts=settings.messaging_max_attempts,
        backoff_s=settings.messaging_backoff_s,
        backoff_max_s=settings.messaging_backoff_max_s,
        retry_after_max_s=settings.messaging_retry_after_max_s,
    )
    return Messaging(
        channels=channels,
        inbox=Inbox(
            pool,
            handler,
            dsn=dsn,
            handler_timeout_s=settings.messaging_handler_timeout_s,
            max_attempts=settings.messaging_max_attempts,
            backoff_s=settings.messaging_backoff_s,
            backoff_max_s=settings.messaging_backoff_max_s,
        ),
        outbox=outbox,
        twilio_sender=twilio_sender,
        cloud_sender=cloud_sender,
        twilio_auth_token=settings.twilio_auth_token.get_secret_value(),
        whatsapp_app_secret=settings.whatsapp_app_secret.get_secret_value(),
        whatsapp_verify_token=settings.whatsapp_verify_token.get_secret_value(),
        public_base_url=settings.public_base_url,
        trusted_proxies=proxies,
    )


# Routes ----------------------------------------------------------------------------------------------


def _bad(exc: BadPayload) -> web.Response:
    return web.json_response({"error": str(exc), "field": exc.field}, status=400)


def _refused(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


# A webhook that cannot be stored (PostgreSQL restarting or away) is answered 503 with this Retry-After: the
# provider sends it again (Meta for days; Twilio as its connection overrides say, docs/messaging.md), and it is
# never acknowledged before it is committed.
STORE_RETRY_AFTER_S = 5


def _not_stored(provider: str, exc: BaseException) -> web.Response:
    log.warning(
        "%s: webhook not stored, the store does not answer (%s); answered 503 for the provider to send it again",
        provider,
        type(exc).__name__,
    )
    return web.json_response(
        {"error": "the message store is unavailable; nothing was stored, send it again later"},
        status=503,
        headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
    )


def add_routes(app: web.Application, lookup: Callable[[], Messaging | None]) -> None:
    def messaging() -> Messaging:
        found = lookup()
        if found is None:
            raise web.HTTPServiceUnavailable(text="messaging is not running")
        return found

    async def twilio_form(request: web.Request, m: Messaging) -> dict[str, str] | web.Response:
        if not m.twilio_auth_token:
            return _refused(503, "Twilio is not configured (HILO_TWILIO_AUTH_TOKEN)")
        header = request.headers.get("X-Twilio-Signature", "")
        if not header:
            return _refused(401, "X-Twilio-Signature is missing")
        form = await request.post()
        pairs = [(k, v) for k, v in form.items() if isinstance(v, str)]
        if not twilio.valid_signature(m.twilio_auth_token, m.public_url(request), pairs, header):
            log.warning("twilio: refused a request with a wrong X-Twilio-Signature from %s", request.remote)
            return _refused(403, "X-Twilio-Signature does not match")
        return {k: v for k, v in reversed(pairs)}  # the first value of each name

    async def twilio_message(request: web.Request) -> web.Response:
        m = messaging()
        form = await twilio_form(request, m)
        if isinstance(form, web.Response):
            return form
        try:
            received = twilio.parse_inbound(form, m.channels)
        except BadPayload as exc:
            return _bad(exc)
        try:
            [(message_id, new)] = await m.inbox.accept_all([received])
        except STORE_DOWN as exc:
            return _not_stored("twilio", exc)
        log.info(
            "twilio: message %s stored as %s%s",
            received.provider_message_id,
            message_id,
            "" if new else " (redelivery)",
        )
        return web.Response(text=twilio.EMPTY_TWIML, content_type="text/xml")

    async def twilio_status(request: web.Request) -> web.Response:
        m = messaging()
        form = await twilio_form(request, m)
        if isinstance(form, web.Response):
            return form
        try:
            update = twilio.parse_status(form)
        except BadPayload as exc:
            return _bad(exc)
        try:
            await m.outbox.record(update)
        except STORE_DOWN as exc:
            return _not_stored("twilio", exc)
        return web.Response(text=twilio.EMPTY_TWIML, content_type="text/xml")

    async def whatsapp_verify(request: web.Request) -> web.Response:
        m = messaging()
        challenge = whatsapp.verify_subscription(dict(request.query), m.whatsapp_verify_token)
        if challenge is None:
            return _refused(403, "hub.mode or hub.verify_token is wrong")
        return web.Response(text=challenge)

    async def whatsapp_webhook(request: web.Request) -> web.Response:
        m = messaging()
        if not m.whatsapp_app_secret:
            return _refused(503, "WhatsApp is not configured (HILO_WHATSAPP_APP_SECRET)")
        header = request.headers.get("X-Hub-Signature-256", "")
        if not header:
            return _refused(401, "X-Hub-Signature-256 is missing")
        body = await request.read()  # the raw bytes: what Meta signed
        if not whatsapp.valid_signature(m.whatsapp_app_secret, body, header):
            log.warning("whatsapp: refused a request with a wrong X-Hub-Signature-256 from %s", request.remote)
            return _refused(403, "X-Hub-Signature-256 does not match")
        try:
            messages, statuses = whatsapp.parse_webhook(body, m.channels)
        except BadPayload as exc:
            return _bad(exc)
        try:  # a batch half stored is sent again whole: what was stored is a redelivery, a no-op
            await m.inbox.accept_all(messages)
            for update in statuses:
                await m.outbox.record(update)
        except STORE_DOWN as exc:
            return _not_stored("whatsapp", exc)
        return web.Response(text="OK")

    app.router.add_post("/webhooks/twilio/messages", twilio_message)
    app.router.add_post("/webhooks/twilio/status", twilio_status)
    app.router.add_get("/webhooks/whatsapp", whatsapp_verify)
    app.router.add_post("/webhooks/whatsapp", whatsapp_webhook)


# A messaging-only server ------------------------------------------------------------------------------


MESSAGING_KEY = web.AppKey("messaging", dict)


def messaging_app(
    settings: Settings, *, handler: InboundHandler = ignore_message, workers: bool = True
) -> web.Application:
    """An aiohttp app with only the bridges (its own pool, the webhooks, the inbox processor and the
    outbox worker unless `workers` is False): what the stack tests restart and the benchmark measures.
    `app[MESSAGING_KEY]["messaging"]` is the live `Messaging` once started."""
    app = web.Application()
    holder: dict[str, Messaging] = {}
    app[MESSAGING_KEY] = holder

    async def resources(_: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(settings.database_url.get_secret_value(), min_size=2, max_size=10)
        holder["messaging"] = create_messaging(settings, pool, handler=handler)
        if workers:
            await holder["messaging"].start()
        yield
        await holder.pop("messaging").close()
        await pool.close()

    app.cleanup_ctx.append(resources)
    add_routes(app, lambda: holder.get("messaging"))
    return app
