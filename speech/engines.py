"""Speech recognizers behind one interface.

An `Engine` (pocketsphinx, vosk) makes `Recognizer`s for a language and a `Grammar`: recognition is
constrained to the grammar's phrases, audio is fed as it arrives (`feed`, live from a call or in chunks
from a file) and `finish` gives what was heard with a confidence between 0 and 1. `decide` turns that
into a `Recognition`: the choice, or None when the text is outside the choices or the confidence is
below the minimum (a no-match).

Recognizers are expensive to make (a model, a compiled grammar) and cheap to reuse, so `RecognizerPool`
keeps idle ones per engine, language and grammar."""

from __future__ import annotations

import abc
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from speech.audio import Pcm, resample
from speech.matching import Grammar


class EngineUnavailable(RuntimeError):
    """This engine cannot recognize this language here (the reason says why and what to install)."""


@dataclass(frozen=True)
class Heard:
    text: str  # the phrase recognized ("" for nothing inside the grammar)
    confidence: float  # 0..1


@dataclass(frozen=True)
class Recognition:
    engine: str
    language: str
    text: str
    choice: str | None
    confidence: float
    audio_seconds: float
    decode_seconds: float

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["confidence"] = round(self.confidence, 3)
        out["audio_seconds"] = round(self.audio_seconds, 3)
        out["decode_seconds"] = round(self.decode_seconds, 4)
        return out


class Recognizer(abc.ABC):
    """One utterance at a time; `start` again for the next one."""

    rate: int  # the sample rate `feed` expects

    @abc.abstractmethod
    def start(self, *, narrowband: bool) -> None:
        """Begin an utterance. `narrowband`: telephone audio (nothing above 4 kHz), whatever its rate."""

    @abc.abstractmethod
    def feed(self, samples: bytes) -> None:
        """16-bit little-endian mono PCM at `rate`."""

    @abc.abstractmethod
    def finish(self) -> Heard: ...

    def close(self) -> None:  # noqa: B027 - most recognizers have nothing to release
        """Release what the recognizer holds."""


class Engine(abc.ABC):
    name: str

    @abc.abstractmethod
    def languages(self) -> list[str]:
        """The languages this engine can recognize here."""

    @abc.abstractmethod
    def unavailable(self, language: str) -> str | None:
        """Why `language` cannot be recognized (None when it can)."""

    @abc.abstractmethod
    def recognizer(self, language: str, grammar: Grammar | None) -> Recognizer:
        """Constrained to `grammar`'s phrases; None = free dictation (the CLI without --choices)."""


def decide(heard: Heard, grammar: Grammar | None, min_confidence: float) -> tuple[str | None, float]:
    """(choice, confidence): the choice the text selects if confident enough; None without a grammar."""
    choice = grammar.match(heard.text) if grammar is not None else None
    if choice is None or heard.confidence < min_confidence:
        return None, heard.confidence
    return choice, heard.confidence


class SpeechEngines:
    """The engines of this server and which one serves which language by default."""

    def __init__(self, engines: Iterable[Engine], preferred: dict[str, str] | None = None) -> None:
        self.engines = {e.name: e for e in engines}
        self.preferred = dict(preferred or {})

    def pick(self, language: str, name: str | None = None) -> Engine:
        """The engine named, else the preferred one for `language`, else the first that can serve it."""
        wanted = name or self.preferred.get(language)
        if wanted is not None:
            engine = self.engines.get(wanted)
            if engine is None:
                known = ", ".join(sorted(self.engines)) or "none"
                raise EngineUnavailable(f"no speech engine {wanted!r} (engines: {known})")
            reason = engine.unavailable(language)
            if reason is not None:
                raise EngineUnavailable(f"{engine.name} cannot recognize {language!r}: {reason}")
            return engine
        reasons = []
        for engine in self.engines.values():
            reason = engine.unavailable(language)
            if reason is None:
                return engine
            reasons.append(f"{engine.name}: {reason}")
        raise EngineUnavailable(f"no speech engine recognizes {language!r} here ({'; '.join(reasons)})")

    def describe(self, languages: Iterable[str] = ("en", "es")) -> list[dict[str, Any]]:
        return [
            {
                "engine": e.name,
                "languages": {lang: e.unavailable(lang) or "available" for lang in languages},
            }
            for e in self.engines.values()
        ]


class RecognizerPool:
    """Idle recognizers kept per (engine, language, grammar), so a menu's next caller does not wait for
    a model to load. At most `keep` idle ones per key; the rest are closed. A pocketsphinx recognizer
    takes some 110 ms of CPU to make, holding the GIL (the whole server waits), and 28 MB: keeping as
    many as the calls listening at once at a peak costs no memory that peak did not take, while keeping
    fewer makes (and stalls the server for) one per turn above them (BENCHMARKS.md, Profile of a
    loaded server)."""

    def __init__(self, keep: int = 16) -> None:
        self.keep = keep
        self._idle: dict[tuple[str, str, Grammar | None], list[Recognizer]] = {}

    def acquire(self, engine: Engine, language: str, grammar: Grammar | None) -> Recognizer:
        return self.idle(engine, language, grammar) or engine.recognizer(language, grammar)

    def idle(self, engine: Engine, language: str, grammar: Grammar | None) -> Recognizer | None:
        """An idle recognizer for the key, or None (making one loads a model: not on the event loop)."""
        idle = self._idle.get((engine.name, language, grammar))
        return idle.pop() if idle else None

    def release(self, engine: Engine, language: str, grammar: Grammar | None, recognizer: Recognizer) -> None:
        idle = self._idle.setdefault((engine.name, language, grammar), [])
        if len(idle) < self.keep:
            idle.append(recognizer)
        else:
            recognizer.close()

    def close(self) -> None:
        for idle in self._idle.values():
            for recognizer in idle:
                recognizer.close()
        self._idle.clear()


CHUNK_S = 0.1  # how files are fed: as a call would deliver them, a tenth of a second at a time


def recognize_pcm(
    engine: Engine,
    recognizer: Recognizer,
    pcm: Pcm,
    grammar: Grammar | None,
    *,
    language: str,
    min_confidence: float,
    narrowband: bool,
) -> Recognition:
    """Recognize a whole utterance fed in chunks; `decode_seconds` counts the recognizer's work only."""
    audio = resample(pcm, recognizer.rate)
    step = int(recognizer.rate * CHUNK_S) * 2
    started = time.perf_counter()
    recognizer.start(narrowband=narrowband)
    for i in range(0, len(audio.samples), step):
        recognizer.feed(audio.samples[i : i + step])
    heard = recognizer.finish()
    decode_s = time.perf_counter() - started
    choice, confidence = decide(heard, grammar, min_confidence)
    return Recognition(engine.name, language, heard.text, choice, confidence, pcm.seconds, decode_s)
