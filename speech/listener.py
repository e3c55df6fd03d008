"""Listening on a call: the caller's live audio through endpointing into a recognizer.

`SpeechService` is what the voice session asks for a listening turn: it picks the engine for the language,
takes a recognizer from the pool, opens the call's audio (`media.CallAudio`) and runs a `Listener` task:

  audio frames -> Endpointer -> on speech start: `speech_started` is set (the session stops the prompt:
  barge-in) and the recognizer starts, fed the pre-roll and then every frame while the caller speaks
  -> on the end of the utterance: `result` holds what was heard.

The recognizer gets every frame while the caller speaks: vosk decodes as it goes; pocketsphinx gathers the
utterance and decodes it when it ends (see pocketsphinx_engine), a few tens of milliseconds for a short
answer. Either way the answer follows the endpointer's closing silence at once: there is no fixed wait."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from asterisk.ari import AriClient, AriError
from asterisk.stasis import StasisRouter
from speech.engines import Engine, Heard, Recognizer, RecognizerPool, SpeechEngines, decide
from speech.matching import Grammar
from speech.media import CallAudio
from speech.standard import standard_engines
from speech.vad import Endpointer

log = logging.getLogger(__name__)


class ListenFailed(RuntimeError):
    """The call's audio could not be opened for this turn (the caller just left, the events socket is
    reconnecting, Asterisk refused the snoop): the turn goes on with keys only."""

    def __init__(self, reason: str, *, channel_missing: bool) -> None:
        super().__init__(reason)
        self.channel_missing = channel_missing  # Asterisk no longer has the caller's channel


@dataclass(frozen=True)
class Turn:
    """What to listen for in one turn."""

    grammar: Grammar
    language: str
    min_confidence: float = 0.5
    engine: str | None = None
    end_silence_s: float = 0.6
    max_speech_s: float = 8.0


@dataclass
class Outcome:
    choice: str | None
    text: str
    confidence: float
    engine: str
    speech_s: float  # how long the caller spoke
    latency_s: float  # from the end of their speech to this result


@dataclass
class Listener:
    audio: CallAudio
    recognizer: Recognizer
    endpointer: Endpointer
    turn: Turn
    engine: Engine
    speech_started: asyncio.Event = field(default_factory=asyncio.Event)
    result: asyncio.Future[Outcome] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    async def run(self) -> None:
        started = False
        try:
            async for frame in self.audio.frames():
                for event in self.endpointer.feed(frame):
                    if event.kind == "start":
                        started = True
                        self.recognizer.start(narrowband=True)
                        self.speech_started.set()
                        self.recognizer.feed(event.audio)
                    elif event.kind == "speech":
                        self.recognizer.feed(event.audio)
                    else:
                        self._finish(self.recognizer.finish())
                        return
                if self.endpointer.ended:
                    return
            if started and not self.result.done():  # the audio stopped mid-utterance: take what was heard
                self._finish(self.recognizer.finish())
        finally:
            # Cancelled (the turn is over) or no speech at all: nothing to decode; the recognizer's next
            # start() discards a half-heard utterance.
            if not self.result.done():
                self.result.cancel()

    def _finish(self, heard: Heard) -> None:
        end_of_speech = time.monotonic()  # the endpointer's decision is this instant
        choice, confidence = decide(heard, self.turn.grammar, self.turn.min_confidence)
        spoke = (self.endpointer.speech_end_s or 0.0) - (self.endpointer.speech_start_s or 0.0)
        outcome = Outcome(
            choice, heard.text, confidence, self.engine.name, max(spoke, 0.0), time.monotonic() - end_of_speech
        )
        if not self.result.done():
            self.result.set_result(outcome)


class SpeechService:
    """Engines, recognizer pool and media settings of this server."""

    def __init__(self, engines: SpeechEngines, media_host: str = "127.0.0.1") -> None:
        self.engines = engines
        self.media_host = media_host
        self.pool = RecognizerPool()
        # Turns found servable: checked again, they answer at once instead of making a recognizer each time.
        self._servable: dict[tuple[str, str | None, Grammar], Engine] = {}

    @classmethod
    def from_config(
        cls, vosk_models: Mapping[str, Path], preferred: Mapping[str, str], media_host: str = "127.0.0.1"
    ) -> SpeechService:
        """Vosk for the languages it has a model for, pocketsphinx (English, out of the box) otherwise."""
        return cls(standard_engines(vosk_models, preferred), media_host)

    def checked(self, turn: Turn) -> Engine | None:
        """The engine of a turn like this one already found servable, or None (then `check` it)."""
        return self._servable.get((turn.language, turn.engine, turn.grammar))

    def check(self, turn: Turn) -> Engine:
        """The engine for this turn; EngineUnavailable or GrammarError when it cannot be served."""
        if (engine := self.checked(turn)) is not None:
            return engine
        engine = self.engines.pick(turn.language, turn.engine)
        recognizer = self.pool.acquire(engine, turn.language, turn.grammar)  # compiles the grammar once
        self.pool.release(engine, turn.language, turn.grammar, recognizer)
        self._servable[(turn.language, turn.engine, turn.grammar)] = engine
        return engine

    @contextlib.asynccontextmanager
    async def listen(
        self, ari: AriClient, stasis: StasisRouter, channel_id: str, turn: Turn
    ) -> AsyncIterator[Listener]:
        engine = self.engines.pick(turn.language, turn.engine)
        recognizer = self.pool.idle(engine, turn.language, turn.grammar)
        if recognizer is None:  # all in use: a new one loads its model (in a thread; pocketsphinx keeps the GIL)
            loop = asyncio.get_running_loop()
            recognizer = await loop.run_in_executor(None, engine.recognizer, turn.language, turn.grammar)
        audio = CallAudio(ari, stasis, channel_id, self.media_host)
        task: asyncio.Task[None] | None = None
        try:
            try:
                await audio.open()
            except (AriError, TimeoutError, OSError) as exc:
                missing = isinstance(exc, AriError) and exc.status == 404
                raise ListenFailed(f"could not open the call's audio: {exc!r}", channel_missing=missing) from exc
            endpointer = Endpointer(audio.rate, end_silence_s=turn.end_silence_s, max_speech_s=turn.max_speech_s)
            listener = Listener(audio, recognizer, endpointer, turn, engine)
            task = asyncio.create_task(listener.run(), name=f"listen-{channel_id}")
            yield listener
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await audio.close()
            self.pool.release(engine, turn.language, turn.grammar, recognizer)

    def close(self) -> None:
        self.pool.close()
