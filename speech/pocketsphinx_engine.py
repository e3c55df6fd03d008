"""The recognizer that works out of the box: pocketsphinx from PyPI, whose wheel carries a US English model
(16 kHz, trained on wideband speech). English only.

What makes it usable on telephone audio (each step measured in bench/speech.py):
- The model never heard speech with nothing above 4 kHz: the empty band gives log filter-bank energies far
  below anything in training. Narrowband audio gets a faint steady noise (the "noise fill": white above
  4 kHz, and a floor over the whole band so a file's digital silence is not the void either).
- Cepstral mean normalisation over the whole utterance: a short answer ("sales") ends long before a running
  mean settles on a new line, so the audio of an utterance is gathered as it streams in (the endpointer
  decides where it ends) and decoded when it ends, with the mean of the utterance itself. Decoding a
  1.5-second answer takes a few tens of milliseconds.
- Fricatives at the edges of words (the s of "sales") live mostly above 4 kHz and are lost on the phone:
  each grammar word that starts or ends with one also gets a pronunciation without it.
- Outside-the-choices speech must be rejected: the grammar offers, beside the choices, a "garbage" path of
  any phone sequence, penalised per phone. When garbage explains the audio best the result is a no-match;
  otherwise the confidence is the share of the N-best list's probability that the winning choice holds."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np

from speech.audio import as_array, to_bytes
from speech.engines import Engine, Heard, Recognizer
from speech.matching import Grammar, GrammarError

NAME = "pocketsphinx"
LANGUAGE = "en"
RATE = 16000
WORD_PENALTY = 1e-5  # per word; each garbage phone is a word, so long garbage paths pay most
NBEST = 30
FRICATIVES = frozenset({"S", "Z", "F", "V", "TH", "DH", "SH", "HH"})
PHONES = (
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH"
).split()
GARBAGE_PREFIX = "gb_"
NOISE_FILL_RMS = 100.0  # about -50 dBFS between 4 and 8 kHz
DITHER_RMS = 100.0  # about -50 dBFS over the whole band, as a quiet phone line has


def _fill_noise(seconds: int = 4) -> np.ndarray:
    """A fixed loop of noise: white above 4 kHz, plus a faint dither everywhere (seeded: results repeat)."""
    rng = np.random.default_rng(20260417)
    noise = rng.normal(0.0, 1.0, RATE * seconds)
    taps = np.arange(-32, 33)
    low = np.convolve(noise, np.sinc(taps / 2) / 2 * np.hamming(len(taps)), mode="same")
    return (noise - low) * NOISE_FILL_RMS + rng.normal(0.0, DITHER_RMS, len(noise))


_NOISE = _fill_noise()


GARBAGE_WEIGHT = 1.0  # of the garbage path against the choices, before any phone
GARBAGE_MORE = 0.5  # probability that garbage goes on for one more phone


def _jsgf(grammar: Grammar) -> str:
    choices = " | ".join(grammar.phrases)
    garbage = " | ".join(GARBAGE_PREFIX + p.lower() for p in PHONES)
    # A sequence (spoken digits) is any number of choices here; Grammar.match checks how many.
    answer = "<choice>+" if grammar.repeat is not None else "<choice>"
    return (
        "#JSGF V1.0;\ngrammar menu;\n"
        f"public <menu> = /1/ {answer} | /{GARBAGE_WEIGHT:g}/ <garbage>;\n"
        f"<choice> = {choices};\n"
        f"<garbage> = /{1 - GARBAGE_MORE:g}/ <phone> | /{GARBAGE_MORE:g}/ <phone> <garbage>;\n"
        f"<phone> = {garbage};\n"
    )


class PocketsphinxRecognizer(Recognizer):
    rate = RATE

    def __init__(self, grammar: Grammar | None, model_dir: Path | None = None) -> None:
        import pocketsphinx

        self._narrowband = True
        self._noise_at = 0
        self.grammar = grammar
        self._audio: list[bytes] = []
        options: dict[str, object] = {"loglevel": "FATAL", "samprate": RATE, "cmn": "batch"}
        if model_dir is not None:
            options["hmm"] = str(model_dir)
        if grammar is None:  # free dictation with the wheel's English language model
            self.decoder = pocketsphinx.Decoder(bestpath=True, **options)
        else:
            self.decoder = pocketsphinx.Decoder(lm=None, wip=WORD_PENALTY, **options)
        if grammar is None:
            return
        unknown = [w for w in grammar.words if self.decoder.lookup_word(w) is None]
        if unknown:
            raise GrammarError(
                f"not in pocketsphinx's English dictionary: {', '.join(unknown)} (use common English words, "
                "or spell them as they sound)"
            )
        for word in grammar.words:
            # The dictionary may hold word(2), word(3)...: variants of each, numbered after them.
            known = [self.decoder.lookup_word(word)]
            while (more := self.decoder.lookup_word(f"{word}({len(known) + 1})")) is not None:
                known.append(more)
            variants = {" ".join(v) for k in known for v in _telephone_variants(k.split())} - set(known)
            for i, phones in enumerate(sorted(variants), start=len(known) + 1):
                self.decoder.add_word(f"{word}({i})", phones, False)
        for phone in PHONES:
            self.decoder.add_word(GARBAGE_PREFIX + phone.lower(), phone, False)
        self.decoder.add_word(f"{GARBAGE_PREFIX}aa(2)", "AA", True)  # the last one applies them all
        self.decoder.add_jsgf_string("menu", _jsgf(grammar))
        self.decoder.activate_search("menu")

    def start(self, *, narrowband: bool) -> None:
        self._narrowband = narrowband
        self._noise_at = 0
        self._audio = []

    def feed(self, samples: bytes) -> None:
        if self._narrowband and samples:
            signal = as_array(samples)
            at = self._noise_at
            idx = np.arange(at, at + len(signal)) % len(_NOISE)
            self._noise_at = (at + len(signal)) % len(_NOISE)
            samples = to_bytes(signal + _NOISE[idx])
        self._audio.append(samples)

    def finish(self) -> Heard:
        audio, self._audio = b"".join(self._audio), []
        self.decoder.start_utt()
        self.decoder.process_raw(audio, False, True)  # the whole utterance: its own cepstral mean
        self.decoder.end_utt()
        best = self.decoder.hyp()
        text = best.hypstr if best is not None else ""
        if self.grammar is None:
            return Heard(text, float(best.prob) if best is not None and text else 0.0)
        if not text or GARBAGE_PREFIX in text:
            return Heard("", 0.0)
        if self.grammar.repeat is not None:
            # A sequence's N-best list is crowded with near-identical sequences that split the probability
            # between them; each word's own posterior says better how sure the weakest digit is.
            return Heard(text, self._weakest_word())
        return Heard(text, self._share_of(text))

    def _weakest_word(self) -> float:
        words = [seg.prob for seg in self.decoder.seg() if seg.word not in ("<s>", "</s>", "<sil>")]
        return min(words) if words else 0.0

    def _share_of(self, text: str) -> float:
        # Best log score per distinct result (each choice, or garbage) in the N-best list, then the winner's
        # share of their probability.
        scores: dict[str, float] = {}
        for hyp in itertools.islice(self.decoder.nbest(), NBEST):
            if hyp is None:
                continue
            key = "" if not hyp.hypstr or GARBAGE_PREFIX in hyp.hypstr else hyp.hypstr
            scores[key] = max(scores.get(key, -math.inf), math.log(max(hyp.score, 1e-300)))
        if text not in scores:
            return 1.0 if not scores else 0.5
        top = max(scores.values())
        total = sum(math.exp(v - top) for v in scores.values())
        return math.exp(scores[text] - top) / total


def _telephone_variants(phones: list[str]) -> list[list[str]]:
    """The word without the fricative it starts or ends with (lost above 4 kHz on the phone)."""
    variants = []
    if len(phones) > 1 and phones[0] in FRICATIVES:
        variants.append(phones[1:])
    if len(phones) > 1 and phones[-1] in FRICATIVES:
        variants.append(phones[:-1])
    if len(phones) > 2 and phones[0] in FRICATIVES and phones[-1] in FRICATIVES:
        variants.append(phones[1:-1])
    return variants


class PocketsphinxEngine(Engine):
    name = NAME

    def __init__(self, model_dir: Path | None = None) -> None:
        self.model_dir = model_dir

    def languages(self) -> list[str]:
        return [LANGUAGE] if self.unavailable(LANGUAGE) is None else []

    def unavailable(self, language: str) -> str | None:
        try:
            import pocketsphinx  # noqa: F401
        except ImportError:
            return "the pocketsphinx package is not installed (pip install pocketsphinx)"
        if language != LANGUAGE:
            return "its PyPI wheel carries an English model only; use vosk with a model for this language"
        return None

    def recognizer(self, language: str, grammar: Grammar | None) -> PocketsphinxRecognizer:
        return PocketsphinxRecognizer(grammar, self.model_dir)
