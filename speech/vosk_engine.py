"""Vosk (Kaldi) recognizers, one model folder per language from the configuration (`HILO_VOSK_MODELS`,
e.g. `{"es": "/opt/vosk/vosk-model-small-es-0.42"}`). Models are not downloaded by Hilo: an admin unpacks
one and names its folder; a language without a model is reported unavailable, with that instruction.

Menus use vosk's runtime grammar (the phrases plus "[unk]" for anything else), so only the choices can be
recognized; the confidence is the lowest of the recognized words' confidences. Runtime grammars need a
model built for them (the "small" models are)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from speech.engines import Engine, Heard, Recognizer
from speech.matching import Grammar, GrammarError

NAME = "vosk"
RATE = 16000  # vosk resamples anything it gets; 16 kHz keeps one path for every model
UNKNOWN = "[unk]"


class VoskRecognizer(Recognizer):
    rate = RATE

    def __init__(self, model: Any, grammar: Grammar | None) -> None:
        import vosk

        self._vosk = vosk
        self.model = model
        self.grammar_json: str | None = None
        self.recognizer: Any = None
        if grammar is None:  # free dictation with the model's own language model
            return
        unknown = [w for w in grammar.words if model.vosk_model_find_word(w) < 0]
        if unknown:
            raise GrammarError(f"not in the vosk model's vocabulary: {', '.join(unknown)}")
        # Without "[unk]" in the grammar, anything said is forced onto a choice; models lacking it get none.
        extra = [UNKNOWN] if model.vosk_model_find_word(UNKNOWN) >= 0 else []
        self.grammar_json = json.dumps([*grammar.phrases, *extra], ensure_ascii=False)

    def start(self, *, narrowband: bool) -> None:
        # A fresh KaldiRecognizer per utterance: cheap next to the model, and no state leaks between callers.
        args = (self.model, RATE) if self.grammar_json is None else (self.model, RATE, self.grammar_json)
        self.recognizer = self._vosk.KaldiRecognizer(*args)
        self.recognizer.SetWords(True)

    def feed(self, samples: bytes) -> None:
        if samples:
            self.recognizer.AcceptWaveform(samples)

    def finish(self) -> Heard:
        result = json.loads(self.recognizer.FinalResult())
        self.recognizer = None
        words = [w for w in result.get("result", []) if w.get("word") != UNKNOWN]
        text = " ".join(w["word"] for w in words)
        if not text or len(words) != len(result.get("result", [])):
            return Heard("", 0.0)  # nothing, or something outside the grammar ([unk])
        confidences = [float(w.get("conf", 0.0)) for w in words]
        if self.grammar_json is None:
            return Heard(text, sum(confidences) / len(confidences))
        return Heard(text, min(confidences))


class VoskEngine(Engine):
    name = NAME

    def __init__(self, models: dict[str, Path]) -> None:
        self.model_dirs = dict(models)
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()

    def languages(self) -> list[str]:
        return [lang for lang in self.model_dirs if self.unavailable(lang) is None]

    def unavailable(self, language: str) -> str | None:
        try:
            import vosk  # noqa: F401
        except ImportError:
            return "the vosk package is not installed (pip install vosk)"
        folder = self.model_dirs.get(language)
        if folder is None:
            return (
                f"no vosk model configured for {language!r}: unpack one (e.g. vosk-model-small-{language}-*) and "
                f'set HILO_VOSK_MODELS=\'{{"{language}": "/path/to/model"}}\''
            )
        if not (folder / "am").is_dir() or not (folder / "conf").is_dir():
            return f"{folder} is not a vosk model folder (it needs am/ and conf/)"
        return None

    def model(self, language: str) -> Any:
        """Loaded once per language and shared by every recognizer (vosk models are thread-safe)."""
        with self._lock:
            if language not in self._models:
                import vosk

                vosk.SetLogLevel(-1)
                self._models[language] = vosk.Model(str(self.model_dirs[language]))
            return self._models[language]

    def recognizer(self, language: str, grammar: Grammar | None) -> VoskRecognizer:
        return VoskRecognizer(self.model(language), grammar)
