"""A caller who cancels as Hilo answers: ARI refuses the answer, and the call is the caller's abandon once the
channel is seen going (its StasisEnd, or Asterisk no longer having it) — not a failed call. An answer refused
for a channel that stays is still a failure."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from asterisk.ari import AriError
from asterisk.stasis import ChannelState
from ivr import inbound
from ivr.inbound import InboundCalls
from ivr.voice import CallerGone


class RefusingAri:
    def __init__(self, channel_exists: bool) -> None:
        self.channel_exists = channel_exists

    async def answer(self, channel_id: str) -> None:
        raise AriError(404, "POST", f"/channels/{channel_id}/answer", '{"message":"Channel not found"}')

    async def get_channel(self, channel_id: str) -> Any:
        return {"id": channel_id} if self.channel_exists else None


async def _answer(ari: RefusingAri, channel: ChannelState) -> None:
    await InboundCalls._answer(SimpleNamespace(ari=ari), channel)  # type: ignore[arg-type]


async def test_a_refused_answer_of_a_channel_that_ends_is_the_callers_hang_up() -> None:
    channel = ChannelState("c1")
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, channel.mark_gone, "hangup", 16)  # its StasisEnd, a moment after the refusal
    with pytest.raises(CallerGone) as gone:
        await _answer(RefusingAri(channel_exists=True), channel)
    assert gone.value.reason == "hangup"


async def test_a_channel_asterisk_no_longer_has_is_gone_even_before_its_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inbound, "ANSWER_REFUSED_GONE_S", 0.05)
    channel = ChannelState("c1")
    with pytest.raises(CallerGone):
        await _answer(RefusingAri(channel_exists=False), channel)
    assert channel.gone.is_set()


async def test_a_refused_answer_of_a_channel_that_stays_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inbound, "ANSWER_REFUSED_GONE_S", 0.05)
    with pytest.raises(AriError):
        await _answer(RefusingAri(channel_exists=True), ChannelState("c1"))
