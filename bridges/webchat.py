"""Web chat: the visitors' WebSocket (`GET /chat/ws`), the widget page (`GET /chat/`) and the provider
sender that delivers replies to a visitor's socket.

A visitor is known by a token Hilo issues on their first connection and the browser keeps (localStorage);
only its hash (`visitor_id`) is stored and used as the sender address and the `webchat` identity, so a copy
of the database holds no usable token. The token travels inside the socket, never as a cookie: a page of
another site cannot act as the visitor, so the widget may be embedded anywhere.

Socket protocol (JSON text frames):
  visitor -> {"type": "hello", "token": "..."|null}          first; a missing or malformed token gets a new one
  server  -> {"type": "welcome", "token": "..."}
  visitor -> {"type": "message", "id": "<client id>", "text": "...", "choice_id": "..."|null}
  server  -> {"type": "ack", "id": "<client id>", "message_id": 42, "duplicate": false}  once stored (Inbox.accept)
  server  -> {"type": "message", "id": <outbox id>, "text": "...", "choices": [{"id", "title"}], "at": "..."}
  visitor -> {"type": "delivered", "ids": [<outbox id>, ...]}   the reply is on screen: not sent again
  server  -> {"type": "error", "id": "<client id>"|null, "field": "...", "reason": "..."}
  server  -> {"type": "error", "id": ..., "field": "rate"|"sockets", "reason": "too many ...", "retry_after": <s>}
             over a limit (bridges/webchat_limits.py): a refused connection is then closed (code 4429),
             a refused message is not stored (send it again later, with the same id)
  server  -> {"type": "error", "id": ..., "field": "store", "reason": "...", "retry_after": <s>}
             the store (PostgreSQL) is away: not stored, send it again later with the same id
  server closes with 1013 (try again later): this node lost its live feed; reconnect and read the mailbox

A message is acknowledged only after the inbox committed it; the client id makes a resend after a lost
ack a duplicate with no second effect. Replies go through the outbox like any channel: the sender keeps
each in the visitor's Redis mailbox (until the visitor says it is delivered) and publishes it on the
visitor's pub/sub channel, which the node holding the visitor's socket relays, whichever node sent it; a
visitor who is away gets the mailbox on reconnect.

Each node has one Redis subscription for all its visitors (`VisitorFeed`: a pattern over every visitor's
channel, fanned out to the sockets open here), so a socket costs the node a queue, never a Redis connection.
If that subscription breaks (Redis restarted, a network blip), every socket here is closed with 1013 and
the feed subscribes again: the widgets reconnect and read their mailboxes, so no reply is lost meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiohttp import WSCloseCode, WSMsgType, web

from bridges.channels import Channels
from bridges.messages import Inbox, OutboundMessage, Provider, SendFailed, SendResult, numbered
from bridges.webchat_limits import (
    ChatLimiter,
    ChatLimits,
    Network,
    OpenSockets,
    Refusal,
    SocketSlot,
    client_address,
)
from hilo.degraded import STORE_DOWN

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
PROVIDER: Provider = "webchat"
STORE_RETRY_S = 5  # a message refused while the store is away: send it again after this long
DEFAULT_SITE = "web"
MAILBOX_TTL_S = 7 * 24 * 3600  # replies wait this long for a visitor to come back
TEXT_MAX = 4096
HEARTBEAT_S = 20.0
RATE_LIMITED_CLOSE = 4429  # the socket's close code after a refused connection (4000-4999: the application's)
FEED_WAIT_S = 5.0  # a new socket waits this long for the node's live feed, else it is closed with 1013
SOCKET_BACKLOG = 200  # replies waiting for one slow socket; beyond, it is closed (it reconnects, reads its mailbox)
UNCOUNTED = ("ping", "delivered")  # frames the widget sends on its own: not counted against a visitor
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SITE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self';"
        " base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def new_token() -> str:
    return secrets.token_urlsafe(32)


def visitor_id(token: str) -> str:
    """The visitor's address and identity: a hash of the token (the token itself is never stored)."""
    return "v1-" + hashlib.sha256(token.encode()).hexdigest()[:40]


def mailbox_key(namespace: str, visitor: str) -> str:
    return f"{namespace}:webchat:mailbox:{visitor}"


def visitor_channel(namespace: str, visitor: str) -> str:
    return f"{namespace}:webchat:visitor:{visitor}"


def _glob_escaped(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class _Local:
    """One socket's side of the feed: the replies for it, in order; None means "closed, reconnect"."""

    def __init__(self, visitor: str) -> None:
        self.visitor = visitor
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()

    def push(self, body: str | None) -> None:
        if body is not None and self.queue.qsize() >= SOCKET_BACKLOG:
            body = None  # a socket this far behind is closed rather than buffered without end
        self.queue.put_nowait(body)


class VisitorFeed:
    """The node's one Redis subscription to every visitor's channel, handing each reply to the sockets open
    here for that visitor. It resubscribes after an error, waiting `retry_s` doubling up to `retry_max_s`,
    and closes every local socket when it loses the subscription (see the module's docstring)."""

    def __init__(
        self, redis: aioredis.Redis, namespace: str, *, retry_s: float = 0.5, retry_max_s: float = 10.0
    ) -> None:
        self.redis = redis
        self.prefix = visitor_channel(namespace, "")
        self.pattern = _glob_escaped(self.prefix) + "*"
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.ready = asyncio.Event()  # subscribed: what is published now reaches the sockets here
        self.subscriptions = 0  # how many times it subscribed (1 + reconnections)
        self._local: dict[str, set[_Local]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="webchat-feed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._drop_all()

    def attach(self, visitor: str) -> _Local:
        local = _Local(visitor)
        self._local.setdefault(visitor, set()).add(local)
        return local

    def detach(self, local: _Local) -> None:
        sockets = self._local.get(local.visitor)
        if sockets is not None:
            sockets.discard(local)
            if not sockets:
                del self._local[local.visitor]

    def _drop_all(self) -> None:
        for sockets in self._local.values():
            for local in sockets:
                local.push(None)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") != "pmessage":
            return
        visitor = _text(message["channel"]).removeprefix(self.prefix)
        body = _text(message["data"])
        for local in self._local.get(visitor, ()):
            local.push(body)

    async def _run(self) -> None:
        pause = self.retry_s
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.psubscribe(self.pattern)
                self.subscriptions += 1
                self.ready.set()
                pause = self.retry_s
                async for message in pubsub.listen():
                    self._dispatch(message)
                log.warning("web chat: the live feed ended; subscribing again")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("web chat: the live feed failed (%s: %s); subscribing again", type(exc).__name__, exc)
            finally:
                self.ready.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            self._drop_all()  # their widgets reconnect and read their mailboxes: nothing is lost meanwhile
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.retry_max_s)


class WebChatSender:
    """The outbox's ProviderSender for web chat: the reply into the visitor's mailbox, then announced."""

    provider: Provider = PROVIDER

    def __init__(self, redis: aioredis.Redis, namespace: str) -> None:
        self.redis = redis
        self.namespace = namespace

    async def send(self, message: OutboundMessage, outbox_id: int) -> SendResult:
        body = json.dumps(
            {
                "type": "message",
                "id": outbox_id,
                "text": numbered(message.text, message.choices),  # typed answers work too
                "choices": [{"id": c.id, "title": c.title} for c in message.choices],  # shown as buttons
                "at": dt.datetime.now(dt.UTC).isoformat(),
            }
        )
        key = mailbox_key(self.namespace, message.recipient)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, str(outbox_id), body)
                pipe.expire(key, MAILBOX_TTL_S)
                pipe.publish(visitor_channel(self.namespace, message.recipient), body)
                await pipe.execute()
        except (aioredis.RedisError, OSError) as exc:
            raise SendFailed(f"web chat mailbox unavailable: {type(exc).__name__}", retryable=True) from exc
        return SendResult(f"webchat-{outbox_id}")


class WebChat:
    """The visitor side: what the socket handler needs."""

    def __init__(
        self,
        inbox: Inbox,
        redis: aioredis.Redis,
        namespace: str,
        *,
        limits: ChatLimits | None = None,  # None: no rate limits
        trusted_proxies: list[Network] | None = None,
        channels: Channels | None = None,  # the sites visitors may open (None: only DEFAULT_SITE)
    ) -> None:
        self.inbox = inbox
        self.channels = channels or Channels([])
        self.redis = redis
        self.namespace = namespace
        self.limiter = ChatLimiter(redis, namespace, limits) if limits is not None else None
        self.sockets = OpenSockets(limits) if limits is not None else None
        self.trusted_proxies = trusted_proxies or []
        self.feed = VisitorFeed(redis, namespace)

    def start(self) -> None:
        """Subscribe the node's live feed (what relays replies to the sockets open here)."""
        self.feed.start()

    async def close(self) -> None:
        await self.feed.close()

    async def mailbox(self, visitor: str) -> list[str]:
        raw = await self.redis.hgetall(mailbox_key(self.namespace, visitor))
        return [_text(v) for _, v in sorted(raw.items(), key=lambda kv: int(_text(kv[0])))]

    async def delivered(self, visitor: str, ids: list[int]) -> None:
        if ids:
            await self.redis.hdel(mailbox_key(self.namespace, visitor), *[str(i) for i in ids])

    def site_open(self, site: str) -> bool:
        """A site listed in channels.yaml (provider webchat), or DEFAULT_SITE when none is listed."""
        return self.channels.site_open(site, DEFAULT_SITE)

    async def accept(self, visitor: str, site: str, frame: dict[str, Any]) -> dict[str, Any]:
        """One visitor message: checked, stored by the inbox, acknowledged."""
        client_id = frame.get("id")
        if not isinstance(client_id, str) or not _CLIENT_ID.match(client_id):
            return _error(None, "id", "a message needs an id of 1-64 letters, digits, _ or -")
        text, choice_id = frame.get("text"), frame.get("choice_id")
        if text is not None and not isinstance(text, str):
            return _error(client_id, "text", "must be text")
        if choice_id is not None and (not isinstance(choice_id, str) or len(choice_id) > 64):
            return _error(client_id, "choice_id", "must be text of at most 64 characters")
        text = (text or "").strip() or None
        if text is None and choice_id is None:
            return _error(client_id, "text", "is empty")
        if text is not None and len(text) > TEXT_MAX:
            return _error(client_id, "text", f"is {len(text)} characters long; at most {TEXT_MAX}")
        try:
            message_id, is_new = await self.inbox.accept(
                channel="webchat",
                provider=PROVIDER,
                provider_message_id=f"{visitor}:{client_id}",
                sender=visitor,
                recipient=site,
                text=text,
                choice_id=choice_id,
                channel_name=channel.name if (channel := self.channels.for_site(site)) else None,
            )
        except STORE_DOWN as exc:  # not stored, not acknowledged: the widget sends it again with the same id
            log.warning("webchat: message not stored, the store does not answer (%s)", type(exc).__name__)
            return {**_error(client_id, "store", "not stored: the store is unavailable"), "retry_after": STORE_RETRY_S}
        return {"type": "ack", "id": client_id, "message_id": message_id, "duplicate": not is_new}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _error(client_id: str | None, field: str, reason: str) -> dict[str, Any]:
    return {"type": "error", "id": client_id, "field": field, "reason": reason}


def _refused(client_id: str | None, refusal: Refusal) -> dict[str, Any]:
    return {**_error(client_id, refusal.field, refusal.reason), "retry_after": refusal.retry_after}


async def visitor_ws(request: web.Request, chat: WebChat) -> web.StreamResponse:
    site = request.query.get("site", DEFAULT_SITE)
    if not _SITE.match(site):
        return web.json_response(
            {"error": "bad_request", "field": "site", "reason": "site: 1-64 letters, digits, _ . -"}, status=400
        )
    if not chat.site_open(site):  # visitors are anonymous: they open the sites listed, never any flow
        return web.json_response(
            {"error": "not_found", "field": "site", "reason": f"no web chat site {site!r}"}, status=404
        )
    address = client_address(request, chat.trusted_proxies)
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=64 * 1024)
    await ws.prepare(request)  # a refusal is a frame the widget can read (a refused handshake would not be)
    send_lock = asyncio.Lock()

    async def send(body: dict[str, Any] | str) -> None:
        async with send_lock:
            if not ws.closed:
                await ws.send_str(body if isinstance(body, str) else json.dumps(body))

    async def refuse_connection(refusal: Refusal) -> web.WebSocketResponse:
        await send(_refused(None, refusal))
        await ws.close(code=RATE_LIMITED_CLOSE, message=b"rate limited")
        return ws

    slot = chat.sockets.admit(address) if chat.sockets is not None else None
    if isinstance(slot, Refusal):
        return await refuse_connection(slot)
    try:
        return await _visitor_session(ws, chat, site, address, slot, send, refuse_connection)
    finally:
        if slot is not None:
            slot.release()


async def _visitor_session(
    ws: web.WebSocketResponse,
    chat: WebChat,
    site: str,
    address: str,
    slot: SocketSlot | None,
    send: Callable[[dict[str, Any] | str], Awaitable[None]],
    refuse_connection: Callable[[Refusal], Awaitable[web.WebSocketResponse]],
) -> web.WebSocketResponse:
    limiter = chat.limiter
    if limiter is not None and (refusal := await limiter.connection(address)) is not None:
        return await refuse_connection(refusal)
    hello = await _first_frame(ws)
    if hello is None:
        await send(_error(None, "type", 'the first message must be {"type": "hello", "token": ...}'))
        await ws.close()
        return ws
    token = hello.get("token")
    if not isinstance(token, str) or not _TOKEN.match(token):
        token = new_token()
    visitor = visitor_id(token)
    if slot is not None and (refusal := slot.join(visitor)) is not None:
        return await refuse_connection(refusal)
    if limiter is not None and (refusal := await limiter.connection(address, visitor)) is not None:
        return await refuse_connection(refusal)
    try:
        await asyncio.wait_for(chat.feed.ready.wait(), FEED_WAIT_S)
    except TimeoutError:
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"live feed unavailable")
        return ws
    local = chat.feed.attach(visitor)  # before the mailbox: nothing falls between
    relay: asyncio.Task[None] | None = None
    try:
        await send({"type": "welcome", "token": token})
        for pending in await chat.mailbox(visitor):
            await send(pending)
        relay = asyncio.create_task(_relay(local, ws, send))
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(frame.data)
            except ValueError:
                data = ValueError  # not JSON: counted, then refused
            if limiter is not None and not (isinstance(data, dict) and data.get("type") in UNCOUNTED):
                refusal = await limiter.message(address, visitor)
                if refusal is not None:
                    client_id = data.get("id") if isinstance(data, dict) else None
                    await send(_refused(client_id if isinstance(client_id, str) else None, refusal))
                    continue
            if data is ValueError:
                await send(_error(None, "body", "not JSON"))
            elif not isinstance(data, dict):
                await send(_error(None, "body", "must be a JSON object"))
            elif data.get("type") == "message":
                await send(await chat.accept(visitor, site, data))
            elif data.get("type") == "delivered":
                ids = data.get("ids")
                if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                    await send(_error(None, "ids", "must be a list of reply ids"))
                else:
                    await chat.delivered(visitor, ids)
            elif data.get("type") == "ping":
                await send({"type": "pong"})
            else:
                await send(_error(None, "type", "one of message, delivered, ping"))
    finally:
        chat.feed.detach(local)
        if relay is not None:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await relay
    return ws


async def _first_frame(ws: web.WebSocketResponse) -> dict[str, Any] | None:
    try:
        frame = await ws.receive(timeout=30)
    except TimeoutError:
        return None
    if frame.type != WSMsgType.TEXT:
        return None
    try:
        data = json.loads(frame.data)
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("type") == "hello" else None


async def _relay(local: _Local, ws: web.WebSocketResponse, send: Callable[[str], Awaitable[None]]) -> None:
    """The feed's replies for this socket, in order, until the feed says the socket must reconnect."""
    while (body := await local.queue.get()) is not None:
        await send(body)
    await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"live feed lost: reconnect")


async def widget_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "chat.html", headers=PAGE_HEADERS)


async def to_widget(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/chat/")


def add_routes(app: web.Application, lookup: Callable[[], WebChat | None]) -> None:
    async def socket(request: web.Request) -> web.StreamResponse:
        chat = lookup()
        if chat is None:
            raise web.HTTPServiceUnavailable(text="web chat is not running")
        return await visitor_ws(request, chat)

    app.router.add_get("/chat", to_widget)
    app.router.add_get("/chat/", widget_page)
    app.router.add_static("/chat/static/", STATIC_DIR, follow_symlinks=False)
    app.router.add_get("/chat/ws", socket)
