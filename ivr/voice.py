"""The caller's side of an IVR on a phone call: speak prompts and read keypad digits over ARI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from asterisk.ari import AriClient, AriError
from asterisk.events import LiveRecording
from asterisk.stasis import ChannelState, StasisRouter
from flows.engine import Answer, SpeechRequest
from speech.engines import EngineUnavailable
from speech.listener import ListenFailed, SpeechService, Turn
from speech.matching import Grammar, GrammarError
from speech.tts import PromptCache

log = logging.getLogger(__name__)

RECORDING_GRACE_S = 5  # beyond a message's time limit, for Asterisk to close the file and report it
SPEECH_RESULT_GRACE_S = 2.0  # beyond the longest utterance, for its last words to be decoded
GONE_GRACE_S = 2.0  # for a channel Asterisk no longer has, until its StasisEnd arrives
TERMINATOR_GRACE_S = 1.0  # how long a terminator typed after the last allowed digit still counts
FAILED_PLAYBACK_GONE_S = 0.5  # after a failed playback, for the hang-up that may have caused it to arrive


class CallerGone(Exception):
    """The caller's channel is gone (hung up, or lost in an Asterisk restart)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _first(*awaitables: asyncio.Future[object] | asyncio.Task[object]) -> None:
    await asyncio.wait(awaitables, return_when=asyncio.FIRST_COMPLETED)


class VoiceSession:
    def __init__(
        self,
        ari: AriClient,
        stasis: StasisRouter,
        channel: ChannelState,
        prompts: PromptCache,
        *,
        voice: str,
        language: str,
        speech: SpeechService | None = None,
    ) -> None:
        self.ari = ari
        self.stasis = stasis
        self.channel = channel
        self.prompts = prompts
        self.voice = voice
        self.language = language
        self.speech = speech
        self.failed_prompts = 0

    def check_alive(self) -> None:
        if self.channel.gone.is_set():
            raise CallerGone(self.channel.gone_reason)

    async def render(self, text: str, *, keep: bool = False) -> str | None:
        """The media of `text` in this call's voice, or None when text to speech fails for it (an empty text,
        espeak or sox failing, a full disk): the caller hears nothing where that prompt should be, and the
        call goes on, as for a prompt Asterisk cannot play. Logged without the text (it may be personal)."""
        try:
            return await self.prompts.render(text, self.voice, self.language, keep=keep)
        except Exception:
            log.exception("a prompt (%d characters) could not be rendered for %s: left out", len(text), self.channel.id)
            self.failed_prompts += 1
            return None

    async def say(self, text: str, *, interruptible: bool = True) -> None:
        """Speak `text`. If `interruptible`, a digit typed meanwhile stops the prompt (barge-in)."""
        media = await self.render(text)
        if media is None:
            self.check_alive()
            return
        await self.play_media(media, interruptible=interruptible)

    async def play(self, file: str, text_alt: str) -> None:
        """Play an audio file from Asterisk's sounds (the text alternative is for text channels)."""
        await self.play_media(f"sound:{file}")

    async def play_media(self, media: str, *, interruptible: bool = True, stop_on: asyncio.Event | None = None) -> None:
        """`stop_on`: a second reason to stop the prompt, such as the caller starting to speak."""
        self.check_alive()
        if interruptible and (self.channel.digits or (stop_on is not None and stop_on.is_set())):
            return  # type-ahead: the caller already answered, do not make them listen
        playback_id = f"pb-{uuid.uuid4()}"
        finished = self.stasis.expect_playback(playback_id)
        waiters: list[asyncio.Future[object] | asyncio.Task[object]] = [
            finished,  # type: ignore[list-item]
            asyncio.ensure_future(self.channel.gone.wait()),
        ]
        if interruptible:
            waiters.append(asyncio.ensure_future(self.channel.digit_arrived.wait()))
            if stop_on is not None:
                waiters.append(asyncio.ensure_future(stop_on.wait()))
        try:
            try:
                await self.ari.play(self.channel.id, media, playback_id)
            except AriError:
                self.check_alive()  # the play failed because the channel just went away
                raise
            await _first(*waiters)
        finally:
            for waiter in waiters[1:]:
                waiter.cancel()
            if not finished.done():
                self.stasis.forget_playback(playback_id)
                with contextlib.suppress(AriError):
                    await self.ari.stop_playback(playback_id)
        if finished.done() and finished.result() == "failed":
            # Asterisk fails a playback on a channel being hung up, before its hang-up reaches us: a caller
            # who left, not a broken prompt.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.channel.gone.wait(), FAILED_PLAYBACK_GONE_S)
            self.check_alive()
            # The caller heard silence where a prompt should be: a broken deployment, not a caller error.
            log.error("prompt %s could not be played on %s", media, self.channel.id)
            self.failed_prompts += 1
        self.check_alive()

    async def read_digit(self, timeout: float) -> str | None:
        """The next digit typed (type-ahead first), or None after `timeout` seconds of silence."""
        self.check_alive()
        digit = self.channel.pop_digit()
        if digit is not None:
            return digit
        arrived = asyncio.ensure_future(self.channel.digit_arrived.wait())
        gone = asyncio.ensure_future(self.channel.gone.wait())
        try:
            await asyncio.wait([arrived, gone], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            arrived.cancel()
            gone.cancel()
        self.check_alive()
        return self.channel.pop_digit()

    async def read_choice(self, timeout_s: float) -> str | None:
        return await self.read_digit(timeout_s)

    async def speech_unavailable(self, request: SpeechRequest) -> str | None:
        if self.speech is None:
            return "speech recognition is not set up on this server"
        try:
            turn = _turn(request)
            # The first time, this loads the model and compiles the grammar: off the event loop; afterwards
            # the answer is known.
            if self.speech.checked(turn) is None:
                await asyncio.get_running_loop().run_in_executor(None, self.speech.check, turn)
        except (EngineUnavailable, GrammarError) as exc:
            return str(exc)
        return None

    async def ask_choice(self, prompt: str, request: SpeechRequest) -> Answer | None:
        """The prompt, then the first of: a key, a spoken choice (speech stops the prompt), the timeout."""
        self.check_alive()
        typed = self.channel.pop_digit()
        if typed is not None:
            return Answer("dtmf", typed)
        assert self.speech is not None, "speech_unavailable() said speech can be used"
        try:
            return await self._ask_listening(prompt, request, self.speech)
        except ListenFailed as exc:
            # Speech is a convenience: a turn that cannot listen still takes keys, the call never fails on it.
            if exc.channel_missing:  # the caller hung up: their StasisEnd is on its way
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.channel.gone.wait(), GONE_GRACE_S)
            self.check_alive()
            log.warning("speech on %s: %s; this turn takes keys only", self.channel.id, exc)
            await self.say(prompt)
            digit = await self.read_digit(request.timeout_s)
            return Answer("dtmf", digit) if digit is not None else None

    async def _ask_listening(self, prompt: str, request: SpeechRequest, speech: SpeechService) -> Answer | None:
        async with speech.listen(self.ari, self.stasis, self.channel.id, _turn(request)) as listener:
            media = await self.render(prompt)
            if media is not None:
                await self.play_media(media, stop_on=listener.speech_started)
            if not listener.speech_started.is_set():
                await self._first_of([self.channel.digit_arrived, listener.speech_started], request.timeout_s)
            if (typed := self.channel.pop_digit()) is not None:
                return Answer("dtmf", typed)
            if not listener.speech_started.is_set():
                return None
            result: asyncio.Future[Any] = asyncio.ensure_future(asyncio.shield(listener.result))
            digit: asyncio.Future[Any] = asyncio.ensure_future(self.channel.digit_arrived.wait())
            gone: asyncio.Future[Any] = asyncio.ensure_future(self.channel.gone.wait())
            try:
                await asyncio.wait(
                    [result, digit, gone],
                    timeout=request.max_speech_s + SPEECH_RESULT_GRACE_S,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for waiter in (result, digit, gone):
                    waiter.cancel()
            self.check_alive()
            if (typed := self.channel.pop_digit()) is not None:
                return Answer("dtmf", typed)
            if listener.result.done() and not listener.result.cancelled():
                heard = listener.result.result()
                log.info(
                    "speech on %s: %r -> %s (confidence %.2f, %s, %.0f ms after the end of speech)",
                    self.channel.id,
                    # Spoken digits may be an account number: their count only.
                    f"<{len(heard.text.split())} words>" if request.digits else heard.text,
                    f"<{len(heard.choice)} digits>" if request.digits and heard.choice else heard.choice,
                    heard.confidence,
                    heard.engine,
                    heard.latency_s * 1000,
                )
                return Answer("speech", heard.choice, heard.text, heard.confidence)
            return Answer("speech", None, "", 0.0)  # they spoke, but nothing came of it in time

    async def _first_of(self, events: list[asyncio.Event], timeout: float) -> None:
        waiters = [asyncio.ensure_future(e.wait()) for e in [*events, self.channel.gone]]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        self.check_alive()

    async def read_digits(
        self,
        *,
        min_digits: int,
        max_digits: int,
        terminator: str | None,
        timeout_s: float,
        inter_digit_timeout_s: float,
    ) -> str | None:
        """Keys until `max_digits`, the terminator (returned with it), or a pause between keys longer than
        `inter_digit_timeout_s`; None when nothing at all came within `timeout_s`."""
        first = await self.read_digit(timeout_s)
        if first is None:
            return None
        typed = first
        while len(typed) < max_digits and not (terminator and typed.endswith(terminator)):
            digit = await self.read_digit(inter_digit_timeout_s)
            if digit is None:
                break
            typed += digit
        if terminator and len(typed) >= max_digits and not typed.endswith(terminator):
            # The caller typed all the digits and then, out of habit, the terminator: swallow it, or it
            # would be taken as (an empty) answer to the next question.
            after = await self.read_digit(min(inter_digit_timeout_s, TERMINATOR_GRACE_S))
            if after is not None and after != terminator:
                self.channel.unread_digit(after)
        return typed

    async def record_message(
        self, name: str, *, max_duration_s: int, max_silence_s: int, terminate_on: str = "#"
    ) -> LiveRecording:
        """Record what the caller says after a beep until silence, `terminate_on`, the time limit or their
        hang-up (the usual way to end a message: Asterisk still finishes and keeps the file then)."""
        self.check_alive()
        self.channel.digits.clear()  # a key typed before the beep must not end the message at once
        finished = self.stasis.expect_recording(name)
        try:
            await self.ari.record(
                self.channel.id,
                name,
                max_duration_s=max_duration_s,
                max_silence_s=max_silence_s,
                terminate_on=terminate_on,
            )
            # The hang-up and the RecordingFinished event race: wait for the event in any case.
            return await asyncio.wait_for(asyncio.shield(finished), max_duration_s + RECORDING_GRACE_S)
        finally:
            if not finished.done():
                self.stasis.forget_recording(name)
                with contextlib.suppress(AriError):
                    await self.ari.stop_recording(name)


def _turn(request: SpeechRequest) -> Turn:
    if request.digits is not None:
        grammar = Grammar.digits(request.language, *request.digits)
    else:
        grammar = Grammar.of(request.phrases)
    return Turn(
        grammar,
        request.language,
        min_confidence=request.min_confidence,
        engine=request.engine,
        end_silence_s=request.end_silence_s,
        max_speech_s=request.max_speech_s,
    )
