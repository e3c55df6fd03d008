"""A small typed ARI client on aiohttp: REST commands plus the events WebSocket.

Written by hand because no maintained Python ARI client exists (ari-py is Python-2-era, aioari and
asyncari are unmaintained or tied to other stacks); ARI is plain REST + one WebSocket, so a thin client
that we fully control (heartbeats, reconnect, resync) is the right size.

The WebSocket reconnects with capped exponential backoff. Asterisk does not replay events missed while the
socket was down, so every (re)connection calls the `on_connect` callbacks, whose job is to resync: list
what is still in the Stasis app and take it over or end it.

One socket can carry several ARI applications (`app=a,b`; each event names its `application`): the main app's
events go to `handlers`, another app's only to the handler given with `add_app`, so an app that follows
e.g. endpoints never doubles the events of the calls the main app owns."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from asterisk.events import Event, parse_event

log = logging.getLogger(__name__)

EventHandler = Callable[[Event], None]
ConnectHandler = Callable[[], Awaitable[None]]


# Asterisk's HTTP server serves at most `sessionlimit` connections (http.conf, 100 by default) and closes one
# idle for `session_keep_alive` (15 s). The REST connections of one client stay well under the first (a
# request past them waits a moment for a free one, rather than being refused by Asterisk when several
# clients, workers or a burst open more), and are let go before the second, so a request is never sent on
# a connection Asterisk is closing at that moment.
ARI_CONNECTIONS = 32
ARI_KEEPALIVE_S = 10.0


class AriError(Exception):
    def __init__(self, status: int, method: str, path: str, body: str, params: dict[str, str] | None = None) -> None:
        query = f" {params}" if params else ""
        super().__init__(f"ARI {method} {path}{query} -> {status}: {body[:300]}")
        self.status = status


class AriClient:
    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        app: str,
        *,
        heartbeat: float = 5.0,
        max_backoff: float = 8.0,
        request_timeout: float = 10.0,
        subscribe_all: bool = False,
    ) -> None:
        self.url = url.rstrip("/")
        self.app = app
        self._subscribe_all = subscribe_all
        credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {credentials}"}
        self._heartbeat = heartbeat
        self._max_backoff = max_backoff
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._closing = False
        self._background: set[asyncio.Task[None]] = set()
        self.handlers: list[EventHandler] = []  # the events of `app`
        self._other_apps: dict[str, EventHandler] = {}  # app name -> the one handler of its events
        self.on_connect: list[ConnectHandler] = []
        self.connected = asyncio.Event()
        self.connections = 0  # how many times the events socket has been (re)established
        self._connection_waiters: list[asyncio.Future[None]] = []

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=ARI_CONNECTIONS, keepalive_timeout=ARI_KEEPALIVE_S)
        self._session = aiohttp.ClientSession(connector=connector, headers=self._headers, timeout=self._timeout)
        self._task = asyncio.create_task(self._run_events(), name=f"ari-events-{self.app}")

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._background):
            task.cancel()
        if self._session is not None:
            await self._session.close()

    async def drop_connection(self) -> None:
        """Close the events socket as a network failure would; the client reconnects by itself."""
        if self._ws is not None:
            await self._ws.close()

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout)

    async def wait_for_connection(self, number: int, timeout: float) -> None:
        """Wait until the events socket has been established `number` times in all (and is up)."""
        async with asyncio.timeout(timeout):
            while self.connections < number or not self.connected.is_set():
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._connection_waiters.append(waiter)
                await waiter

    def add_app(self, app: str, handler: EventHandler) -> None:
        """Serve one more ARI application on this socket (from the next connection: call before `start`).
        Its events go to `handler` only, never to `handlers`."""
        if app == self.app:
            raise ValueError(f"{app!r} is already this client's main application")
        self._other_apps[app] = handler

    # -- events ------------------------------------------------------------------------------------
    async def _run_events(self) -> None:
        assert self._session is not None
        ws_url = self.url.replace("http", "ws", 1) + "/events"
        backoff = 0.25
        while not self._closing:
            apps = ",".join([self.app, *self._other_apps])
            try:
                async with self._session.ws_connect(
                    ws_url,
                    params={"app": apps, "subscribeAll": _param(self._subscribe_all)},
                    heartbeat=self._heartbeat,
                    timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                ) as ws:
                    self._ws = ws
                    self.connections += 1
                    backoff = 0.25
                    log.info("ARI events connected for app %s (connection %d)", self.app, self.connections)
                    self.connected.set()
                    for waiter in self._connection_waiters:
                        if not waiter.done():
                            waiter.set_result(None)
                    self._connection_waiters.clear()
                    for callback in self.on_connect:
                        self._spawn(callback())
                    async for message in ws:
                        if message.type == aiohttp.WSMsgType.TEXT:
                            self._dispatch_text(message.data)
                        elif message.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                            break
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("ARI events socket unavailable: %s", exc)
            except Exception:
                # Whatever else goes wrong with one connection, the events task lives on: reconnect.
                log.exception("ARI events socket failed; reconnecting")
            finally:
                self._ws = None
                self.connected.clear()
            if self._closing:
                return
            # Jitter so several Hilo nodes do not reconnect in lockstep after an Asterisk restart.
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self._max_backoff)

    def _dispatch_text(self, text: str) -> None:
        """One frame of the events socket: a frame that is not a JSON object is logged and skipped (the
        socket and the events that follow are not given up for it)."""
        try:
            message = json.loads(text)
        except ValueError as exc:
            log.error("ARI sent a frame that is not JSON (%s), skipped: %.200r", exc, text)
            return
        if not isinstance(message, dict):
            log.error("ARI sent a frame that is not a JSON object, skipped: %.200r", text)
            return
        self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        try:
            event = parse_event(message)
        except Exception:
            log.exception("unparseable ARI event of type %s", message.get("type"))
            return
        other = self._other_apps.get(event.application)
        for handler in self.handlers if other is None else [other]:
            try:
                handler(event)
            except Exception:
                log.exception("handler failed on %s", event.type)

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run follow-up work of an event handler (handlers stay synchronous); closed with the client."""
        self._spawn(coro)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- REST --------------------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """One REST call. `missing_ok`: a 404 (the channel or bridge is already gone) is not an error."""
        assert self._session is not None, "AriClient.start() first"
        clean = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        async with self._session.request(method, self.url + path, params=clean, json=body) as resp:
            text = await resp.text()
            if resp.status == 404 and missing_ok:
                return None
            if resp.status >= 400:
                raise AriError(resp.status, method, path, text, clean)
            return json.loads(text) if text else None

    async def asterisk_info(self) -> Any:
        return await self.request("GET", "/asterisk/info")

    async def application(self) -> Any:
        return await self.request("GET", f"/applications/{quote(self.app)}")

    async def subscribe(self, event_source: str) -> None:
        """Keep receiving the events of e.g. `channel:<id>` after it left the app (for its ChannelDestroyed)."""
        await self.request(
            "POST", f"/applications/{quote(self.app)}/subscription", params={"eventSource": event_source}
        )

    async def get_channel(self, channel_id: str) -> Any:
        return await self.request("GET", f"/channels/{channel_id}", missing_ok=True)

    async def answer(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{channel_id}/answer")

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        await self.request("DELETE", f"/channels/{channel_id}", params={"reason": reason}, missing_ok=True)

    async def play(self, channel_id: str, media: str, playback_id: str) -> None:
        await self.request("POST", f"/channels/{channel_id}/play", params={"media": media, "playbackId": playback_id})

    async def stop_playback(self, playback_id: str) -> None:
        await self.request("DELETE", f"/playbacks/{playback_id}", missing_ok=True)

    async def start_moh(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{channel_id}/moh", missing_ok=True)

    async def stop_moh(self, channel_id: str) -> None:
        await self.request("DELETE", f"/channels/{channel_id}/moh", missing_ok=True)

    async def record(
        self,
        channel_id: str,
        name: str,
        *,
        fmt: str = "wav",
        max_duration_s: int = 120,
        max_silence_s: int = 5,
        beep: bool = True,
        terminate_on: str = "#",
    ) -> None:
        """Record the channel into Asterisk's recording spool as `<name>.<fmt>` (RecordingFinished/Failed)."""
        params = {
            "name": name,
            "format": fmt,
            "maxDurationSeconds": max_duration_s,
            "maxSilenceSeconds": max_silence_s,
            "beep": beep,
            "terminateOn": terminate_on,
            "ifExists": "fail",
        }
        await self.request("POST", f"/channels/{channel_id}/record", params=params)

    async def stop_recording(self, name: str) -> None:
        await self.request("POST", f"/recordings/live/{name}/stop", missing_ok=True)

    async def stored_recording(self, name: str) -> Any:
        return await self.request("GET", f"/recordings/stored/{name}", missing_ok=True)

    async def delete_stored_recording(self, name: str) -> None:
        await self.request("DELETE", f"/recordings/stored/{name}", missing_ok=True)

    async def stored_recordings(self) -> list[dict[str, Any]]:
        """Every finished recording in Asterisk's spool: [{"name", "format"}, ...]."""
        found = await self.request("GET", "/recordings/stored")
        return list(found or [])

    async def download_stored_recording(self, name: str, target: Path) -> int:
        """Write a finished recording's file (as Asterisk stored it) to `target`; returns its size.
        Through ARI rather than the spool folder, so Hilo need not share a disk with Asterisk."""
        assert self._session is not None, "AriClient.start() first"
        path = f"/recordings/stored/{quote(name)}/file"
        size = 0
        async with self._session.get(self.url + path, timeout=aiohttp.ClientTimeout(total=None, sock_read=30)) as resp:
            if resp.status >= 400:
                raise AriError(resp.status, "GET", path, await resp.text())
            with target.open("wb") as out:
                async for chunk in resp.content.iter_chunked(1 << 16):
                    out.write(chunk)
                    size += len(chunk)
        return size

    async def record_bridge(self, bridge_id: str, name: str, *, fmt: str = "wav") -> None:
        """Record the bridge's mixed audio into the spool as `<name>.<fmt>` until the bridge is destroyed or the
        recording stopped (RecordingStarted, then RecordingFinished/Failed with target_uri bridge:<id>)."""
        params = {"name": name, "format": fmt, "ifExists": "fail", "beep": False, "terminateOn": "none"}
        await self.request("POST", f"/bridges/{bridge_id}/record", params=params)

    async def live_recording(self, name: str) -> Any:
        """A recording in progress ({"name", "state", ...}), or None once it is finished (or never was)."""
        return await self.request("GET", f"/recordings/live/{quote(name)}", missing_ok=True)

    async def pause_recording(self, name: str) -> None:
        """Pause a live recording: Asterisk leaves the paused audio out of the file (main/app.c drops the
        frames), it does not write silence."""
        await self.request("POST", f"/recordings/live/{quote(name)}/pause")

    async def unpause_recording(self, name: str) -> None:
        await self.request("DELETE", f"/recordings/live/{quote(name)}/pause")

    async def discard_recording(self, name: str) -> None:
        """Stop a live recording and throw its file away."""
        await self.request("DELETE", f"/recordings/live/{quote(name)}", missing_ok=True)

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        await self.request("POST", f"/channels/{channel_id}/variable", params={"variable": name, "value": value})

    async def continue_in_dialplan(self, channel_id: str, context: str, extension: str, priority: int = 1) -> None:
        """Hand the channel back to the dialplan (it leaves the Stasis app)."""
        params = {"context": context, "extension": extension, "priority": priority}
        await self.request("POST", f"/channels/{channel_id}/continue", params=params)

    async def send_dtmf(self, channel_id: str, dtmf: str, between_ms: int = 100) -> None:
        await self.request("POST", f"/channels/{channel_id}/dtmf", params={"dtmf": dtmf, "between": between_ms})

    async def originate(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        app_args: str | None = None,
        context: str | None = None,
        extension: str | None = None,
        caller_id: str | None = None,
        timeout_s: int = 30,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        variables: dict[str, str] | None = None,
    ) -> Any:
        params = {
            "endpoint": endpoint,
            "app": app,
            "appArgs": app_args,
            "context": context,
            "extension": extension,
            "priority": 1 if extension else None,
            "callerId": caller_id,
            "timeout": timeout_s,
            "channelId": channel_id,
            "otherChannelId": other_channel_id,
        }
        return await self.request("POST", "/channels", params=params, body={"variables": variables or {}})

    async def create_bridge(self, bridge_id: str, kind: str = "mixing") -> Any:
        return await self.request("POST", f"/bridges/{bridge_id}", params={"type": kind})

    async def add_to_bridge(self, bridge_id: str, channel_ids: list[str]) -> None:
        await self.request("POST", f"/bridges/{bridge_id}/addChannel", params={"channel": ",".join(channel_ids)})

    async def remove_from_bridge(self, bridge_id: str, channel_ids: list[str]) -> None:
        """Take channels out of a bridge; they stay in this app (e.g. a caller put on hold)."""
        params = {"channel": ",".join(channel_ids)}
        await self.request("POST", f"/bridges/{bridge_id}/removeChannel", params=params, missing_ok=True)

    async def start_bridge_moh(self, bridge_id: str) -> None:
        await self.request("POST", f"/bridges/{bridge_id}/moh", missing_ok=True)

    async def stop_bridge_moh(self, bridge_id: str) -> None:
        await self.request("DELETE", f"/bridges/{bridge_id}/moh", missing_ok=True)

    async def destroy_bridge(self, bridge_id: str) -> None:
        await self.request("DELETE", f"/bridges/{bridge_id}", missing_ok=True)

    async def snoop(
        self, channel_id: str, snoop_id: str, *, spy: str = "in", whisper: str = "none", app_args: str = ""
    ) -> Any:
        """A channel in this app that hears `channel_id` (`spy`: "in" = audio coming from the channel, i.e.
        what its caller says; "out" = audio sent to the channel, what its caller hears; "both") without
        being bridged with it. What the snoop channel is given to play is mixed into `whisper`: "in" = into
        the audio coming from the channel (whoever it talks to hears it, its caller does not), "out" = into
        the audio sent to it (its caller hears it), "both"."""
        params = {"spy": spy, "whisper": whisper, "app": self.app, "appArgs": app_args, "snoopId": snoop_id}
        return await self.request("POST", f"/channels/{channel_id}/snoop", params=params)

    async def external_media(self, channel_id: str, external_host: str, *, fmt: str = "slin16") -> Any:
        """A channel in this app whose audio Asterisk streams as RTP over UDP to `external_host` (host:port)."""
        params = {
            "app": self.app,
            "channelId": channel_id,
            "external_host": external_host,
            "encapsulation": "rtp",
            "transport": "udp",
            "connection_type": "client",
            "format": fmt,
            "direction": "both",
        }
        return await self.request("POST", "/channels/externalMedia", params=params)


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
