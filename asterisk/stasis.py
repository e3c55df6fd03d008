"""Routes ARI events of the Stasis app to the channels Hilo is handling.

Each channel we handle gets a `ChannelState`: the digits typed (kept as type-ahead, so a caller who knows
the menu need not wait for the prompt), whether it has entered Stasis (for an agent leg: answered), and
whether it is gone. Handlers stay synchronous and never block: they only set futures and events that the
call's own task awaits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from asterisk.events import (
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelHangupRequest,
    Event,
    LiveRecording,
    PlaybackEvent,
    RecordingEvent,
    StasisEnd,
    StasisStart,
)

log = logging.getLogger(__name__)

# AST_SOFTHANGUP_SHUTDOWN in Asterisk's include/asterisk/channel.h: the channel is hung up because
# Asterisk is stopping, not because anyone on the call hung up.
SOFTHANGUP_SHUTDOWN = 0x04


class ChannelState:
    def __init__(self, channel_id: str) -> None:
        self.id = channel_id
        self.digits: list[str] = []
        self.digit_arrived = asyncio.Event()
        self.in_stasis = asyncio.Event()
        self.gone = asyncio.Event()
        # "hangup" when the far end hung up; "lost" when Asterisk restarted or the socket dropped and
        # the channel was not there any more on resync.
        self.gone_reason = ""
        self.cause = 0
        self.asterisk_stopping = False

    def push_digit(self, digit: str) -> None:
        self.digits.append(digit)
        self.digit_arrived.set()

    def pop_digit(self) -> str | None:
        if not self.digits:
            self.digit_arrived.clear()
            return None
        digit = self.digits.pop(0)
        if not self.digits:
            self.digit_arrived.clear()
        return digit

    def unread_digit(self, digit: str) -> None:
        """Put a digit read ahead of time back in front of the type-ahead."""
        self.digits.insert(0, digit)
        self.digit_arrived.set()

    def mark_gone(self, reason: str, cause: int = 0) -> None:
        if not self.gone.is_set():
            self.gone_reason, self.cause = ("lost" if self.asterisk_stopping else reason), cause
            self.gone.set()


NewCall = Callable[[StasisStart], None]


class StasisRouter:
    def __init__(self, on_new_call: NewCall) -> None:
        self.on_new_call = on_new_call
        self.channels: dict[str, ChannelState] = {}
        self._playbacks: dict[str, asyncio.Future[str]] = {}
        self._recordings: dict[str, asyncio.Future[LiveRecording]] = {}

    def watch(self, channel_id: str) -> ChannelState:
        state = self.channels.get(channel_id)
        if state is None:
            state = self.channels[channel_id] = ChannelState(channel_id)
        return state

    def forget(self, channel_id: str) -> None:
        self.channels.pop(channel_id, None)

    def expect_playback(self, playback_id: str) -> asyncio.Future[str]:
        """A future for the playback's final state: "done", or "failed" (e.g. the file is missing)."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._playbacks[playback_id] = future
        return future

    def forget_playback(self, playback_id: str) -> None:
        self._playbacks.pop(playback_id, None)

    def expect_recording(self, name: str) -> asyncio.Future[LiveRecording]:
        """A future for the recording as it ended: state "done" (with its duration) or "failed"."""
        future: asyncio.Future[LiveRecording] = asyncio.get_running_loop().create_future()
        self._recordings[name] = future
        return future

    def forget_recording(self, name: str) -> None:
        self._recordings.pop(name, None)

    def handle(self, event: Event) -> None:
        if isinstance(event, StasisStart):
            state = self.channels.get(event.channel.id)
            if state is not None:  # a leg we originated (an agent) has answered and entered the app
                state.in_stasis.set()
            else:
                self.watch(event.channel.id).in_stasis.set()
                self.on_new_call(event)
        elif isinstance(event, ChannelDtmfReceived):
            if (state := self.channels.get(event.channel.id)) is not None:
                state.push_digit(event.digit)
        elif isinstance(event, PlaybackEvent) and event.type == "PlaybackFinished":
            future = self._playbacks.pop(event.playback.id, None)
            if future is not None and not future.done():
                future.set_result(event.playback.state)
        elif isinstance(event, RecordingEvent) and event.type in ("RecordingFinished", "RecordingFailed"):
            done = self._recordings.pop(event.recording.name, None)
            if done is not None and not done.done():
                done.set_result(event.recording)
        elif isinstance(event, ChannelHangupRequest):
            if event.soft and event.cause == SOFTHANGUP_SHUTDOWN and (state := self.channels.get(event.channel.id)):
                state.asterisk_stopping = True
        elif isinstance(event, StasisEnd | ChannelDestroyed):
            if (state := self.channels.get(event.channel.id)) is not None:
                state.mark_gone("hangup", getattr(event, "cause", 0))
