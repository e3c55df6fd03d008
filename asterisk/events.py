"""Typed ARI events: the few fields Hilo reads, validated; everything else is kept in `raw`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CallerId(_Model):
    name: str = ""
    number: str = ""


class DialplanCep(_Model):
    context: str = ""
    exten: str = ""
    priority: int = 0


class Channel(_Model):
    id: str
    name: str = ""
    state: str = ""
    caller: CallerId = Field(default_factory=CallerId)
    dialplan: DialplanCep = Field(default_factory=DialplanCep)


class Bridge(_Model):
    id: str
    channels: list[str] = Field(default_factory=list)


class Playback(_Model):
    id: str
    target_uri: str = ""
    state: str = ""


class Event(_Model):
    type: str
    application: str = ""
    raw: dict[str, Any] = Field(default_factory=dict, exclude=True)


class ChannelEvent(Event):
    channel: Channel


class StasisStart(ChannelEvent):
    args: list[str] = Field(default_factory=list)


class StasisEnd(ChannelEvent):
    pass


class ChannelDtmfReceived(ChannelEvent):
    digit: str
    duration_ms: int = 0


class ChannelHangupRequest(ChannelEvent):
    cause: int = 0
    # For a soft hangup, `cause` holds Asterisk's AST_SOFTHANGUP_* flag instead of a Q.850 cause.
    soft: bool = False


class ChannelDestroyed(ChannelEvent):
    cause: int = 0
    cause_txt: str = ""


class ChannelStateChange(ChannelEvent):
    pass


class PlaybackEvent(Event):
    playback: Playback


class LiveRecording(_Model):
    name: str
    format: str = ""
    state: str = ""  # queued, recording, paused, done, failed, canceled
    target_uri: str = ""
    duration: int | None = None  # seconds, on RecordingFinished
    cause: str | None = None  # on RecordingFailed


class RecordingEvent(Event):
    recording: LiveRecording


class BridgeChannelEvent(Event):
    bridge: Bridge
    channel: Channel


_TYPES: dict[str, type[Event]] = {
    "StasisStart": StasisStart,
    "StasisEnd": StasisEnd,
    "ChannelDtmfReceived": ChannelDtmfReceived,
    "ChannelHangupRequest": ChannelHangupRequest,
    "ChannelDestroyed": ChannelDestroyed,
    "ChannelStateChange": ChannelStateChange,
    "PlaybackStarted": PlaybackEvent,
    "PlaybackFinished": PlaybackEvent,
    "RecordingStarted": RecordingEvent,
    "RecordingFinished": RecordingEvent,
    "RecordingFailed": RecordingEvent,
    "ChannelEnteredBridge": BridgeChannelEvent,
    "ChannelLeftBridge": BridgeChannelEvent,
}


def parse_event(message: dict[str, Any]) -> Event:
    cls = _TYPES.get(str(message.get("type")), Event)
    event = cls.model_validate(message)
    event.raw = message
    return event
