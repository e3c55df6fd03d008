"""A caller waiting in a queue: music on hold, the queue's announcements (place in the queue, estimated wait)
and the flow's callback offer ("press 1 to be called back") at intervals, until routing makes an offer,
the caller presses the callback key, or the wait runs out.

An announcement is played over the music: the music stops, the prompt plays, the music comes back. An offer
that arrives meanwhile is never lost: routing is watched all the time (its wake-ups over Redis pub/sub), and
an offer stops the prompt at once. Prompts are TTS with fixed parts and numbers rendered once and cached
(`warm_up` renders the usual ones ahead), played as one ARI playback of several sound files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from asterisk.ari import AriClient
from dialplans.models import QueueAnnounce
from hilo.degraded import DOWN, part_of
from ivr.voice import VoiceSession
from routing.engine import RoutingEngine
from routing.estimate import WaitEstimate, spoken_minutes
from routing.model import Assignment
from speech.tts import PromptCache

log = logging.getLogger(__name__)

POLL_S = 2.0  # routing is asked again at least this often, should a wake-up be missed
# The fixed parts of an announcement; numbers are said between them.
YOU_ARE = "You are number"
IN_QUEUE = "in the queue."
WAIT_ABOUT = "Your estimated wait is about"
MINUTE, MINUTES = "minute.", "minutes."
UNDER_A_MINUTE = "Your estimated wait is less than a minute."
FIXED_PARTS = (YOU_ARE, IN_QUEUE, WAIT_ABOUT, MINUTE, MINUTES, UNDER_A_MINUTE)
WARM_NUMBERS = range(1, 11)


@dataclass(frozen=True)
class CallbackKey:
    """The flow's callback offer on this wait: the prompt (already rendered from its template) and key."""

    every_s: int
    key: str
    prompt: str


@dataclass(frozen=True)
class WaitEnd:
    kind: Literal["offer", "timeout", "callback"]
    offer: Assignment | None = None


def announcement_parts(estimate: WaitEstimate, announce: QueueAnnounce) -> list[str]:
    """The texts of one announcement, in order: fixed parts and numbers (each rendered and cached apart)."""
    parts: list[str] = []
    if announce.position:
        parts += [YOU_ARE, str(estimate.position), IN_QUEUE]
    if announce.wait and estimate.wait_s is not None:
        minutes = spoken_minutes(estimate.wait_s)
        parts += [UNDER_A_MINUTE] if minutes == 0 else [WAIT_ABOUT, str(minutes), MINUTE if minutes == 1 else MINUTES]
    return parts


async def warm_up(prompts: PromptCache, voice: str, language: str) -> None:
    """Render the fixed parts and the small numbers ahead, so the first announcement needs no synthesis."""
    try:
        for text in [*FIXED_PARTS, *(str(n) for n in WARM_NUMBERS)]:
            await prompts.render(text, voice, language, keep=True)
    except Exception:  # a caller's announcement renders what it needs itself (and says why if it cannot)
        log.exception("could not render the queue announcements ahead")


class QueueWait:
    """One caller's time in one queue; `on_hold` tells whether the music is playing (it stays on while an
    offered agent rings, and the bridge stops it)."""

    def __init__(
        self,
        ari: AriClient,
        session: VoiceSession,
        engine: RoutingEngine,
        interaction_id: str,
        *,
        announce: QueueAnnounce | None,
        callback: CallbackKey | None,
        on_degraded: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        self.ari = ari
        self.session = session
        self.channel = session.channel
        self.engine = engine
        self.interaction_id = interaction_id
        self.announce = announce
        self.callback = callback
        self.on_hold = False
        self.announcements = 0
        # (part, what): routing did not answer for a while; the caller keeps waiting with the music
        self.on_degraded = on_degraded

    async def until_offer(self, deadline: float) -> WaitEnd:
        """Wait (loop time `deadline` at the latest) for an offer, the callback key or the end of the wait.
        Raises CallerGone if the caller hangs up."""
        loop = asyncio.get_running_loop()
        self.channel.digits.clear()  # keys typed in the menu are not an answer to the callback offer
        self.channel.digit_arrived.clear()
        watcher = asyncio.ensure_future(self._watch())
        offered = asyncio.Event()
        watcher.add_done_callback(lambda _: offered.set())
        now = loop.time()
        next_announce = now + self.announce.every_s if self.announce else float("inf")
        next_offer = now + self.callback.every_s if self.callback else float("inf")
        try:
            await self.hold()
            while True:
                self.session.check_alive()
                if watcher.done():
                    return WaitEnd("offer", watcher.result())
                if self._callback_pressed():
                    return WaitEnd("callback")
                now = loop.time()
                if now >= deadline:
                    return WaitEnd("timeout")
                if now >= next_announce:
                    await self._interlude(await self._announcement(), offered)
                    next_announce = loop.time() + self.announce.every_s if self.announce else float("inf")
                elif now >= next_offer and self.callback is not None:
                    session = self.session
                    # rendered from the flow's variables: kept only if the flow's text has no template
                    prompt = await session.render(self.callback.prompt)
                    await self._interlude([prompt] if prompt is not None else [], offered)
                    next_offer = loop.time() + self.callback.every_s
                else:
                    until = min(next_announce, next_offer, deadline) - now
                    await self._first(watcher, until)
        finally:
            if not watcher.done():
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    async def hold(self) -> None:
        if not self.on_hold and not self.channel.gone.is_set():
            await self.ari.start_moh(self.channel.id)
            self.on_hold = True

    async def unhold(self) -> None:
        if self.on_hold and not self.channel.gone.is_set():
            await self.ari.stop_moh(self.channel.id)
        self.on_hold = False

    async def _watch(self) -> Assignment:
        """Routing's offer. While routing (Redis, or its record in PostgreSQL) does not answer, the caller keeps
        the music and routing is asked again: once per outage it is a degraded moment."""
        down = False
        while True:
            try:
                offer = await self.engine.wait_for_offer(self.interaction_id, POLL_S)
            except DOWN as exc:
                if not down and self.on_degraded is not None:
                    await self.on_degraded(part_of(exc), "wait")
                down = True
                await asyncio.sleep(POLL_S / 2)
                continue
            down = False
            if offer is not None:
                return offer

    def _callback_pressed(self) -> bool:
        while (digit := self.channel.pop_digit()) is not None:
            if self.callback is not None and digit == self.callback.key:
                return True
        return False

    async def _first(self, watcher: asyncio.Future[Any], timeout: float) -> None:
        gone: asyncio.Future[Any] = asyncio.ensure_future(self.channel.gone.wait())
        digit: asyncio.Future[Any] = asyncio.ensure_future(self.channel.digit_arrived.wait())
        try:
            await asyncio.wait([watcher, gone, digit], timeout=max(timeout, 0.01), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            digit.cancel()

    async def _announcement(self) -> list[str]:
        assert self.announce is not None
        try:
            estimate = await self.engine.wait_estimate(self.interaction_id)
        except DOWN as exc:  # routing does not answer: no announcement this time, the music goes on
            log.warning("call %s: no announcement, routing did not answer (%s)", self.channel.id, type(exc).__name__)
            return []
        if estimate is None:  # offered a moment ago: nothing to announce
            return []
        texts = announcement_parts(estimate, self.announce)
        log.info("call %s: announcing %s", self.channel.id, " ".join(texts))
        # fixed parts and numbers, the same for every caller; a part that cannot be rendered leaves out the whole
        # announcement (half of "you are number 2 in the queue" says nothing)
        media = [await self.session.render(t, keep=True) for t in texts]
        rendered = [m for m in media if m is not None]
        return rendered if len(rendered) == len(media) else []

    async def _interlude(self, media: list[str], offered: asyncio.Event) -> None:
        """Music off, the prompt (stopped at once by an offer or a key), music on again (also while an
        offered agent's phone rings)."""
        if not media or offered.is_set():
            return
        self.announcements += 1
        await self.unhold()
        await self.session.play_media(",".join(media), stop_on=offered)
        await self.hold()
