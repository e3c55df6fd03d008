"""A stored recording into text: decrypted as a stream, cut into chunks, each decoded by a free-form (not
grammar-bound) recognizer of the configured speech engine.

Memory stays small whatever the length of the call: the file is decrypted one store segment at a time and
read as a WAV stream, never written out in plaintext, in chunks of at most `MAX_CHUNK_S` (cut where it is
quietest, between words rather than through one). In each chunk the voice-activity detector of the speech
input (speech/vad.py) finds the utterances, and each is decoded on its own with a little of the line
around it: pocketsphinx normalises over what it is given, and long silences or hold music around the words
cost it most of them (measured on synthesized callers: the same sentence decoded right alone, wrong inside
two seconds of silence).

Paused spans (PCI) are never decoded: Asterisk did not record them (the file holds silence there), and the
chunks are taken from the speech regions between the spans only, so nothing said, keyed or imagined by the
recognizer inside a pause can reach a transcript."""

from __future__ import annotations

import io
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np

from recordings.audio import Span
from speech.audio import Pcm, as_array, resample
from speech.engines import Engine
from speech.vad import Endpointer

MAX_CHUNK_S = 20.0
CUT_SEARCH_S = 4.0  # the cut is at the quietest moment of a chunk's last seconds
FRAME_S = 0.1
SILENT_RMS = 30.0  # a chunk quieter than this (hold, paused silence, an empty line) is not decoded
FEED_S = 0.1
UTTERANCE_GAP_S = 0.6  # this long without speech ends an utterance
UTTERANCE_PAD_S = 0.15  # of the line kept before and after an utterance


@dataclass(frozen=True)
class Transcript:
    text: str
    audio_s: float  # of speech decoded
    decode_s: float  # the recognizer's work


def speech_regions(duration_s: float, paused: list[Span]) -> list[Span]:
    """The recording's time line without its paused spans (in order, clipped to the recording)."""
    regions: list[Span] = []
    at = 0.0
    for span in sorted(paused, key=lambda s: s.start_s):
        start, end = max(span.start_s, 0.0), min(span.end_s, duration_s)
        if start > at:
            regions.append(Span(at, min(start, duration_s)))
        at = max(at, end)
    if at < duration_s:
        regions.append(Span(at, duration_s))
    return [r for r in regions if r.length_s > 0]


def quietest_cut(samples: bytes, rate: int, search_s: float = CUT_SEARCH_S) -> int:
    """Where to end a chunk of `samples` (16-bit PCM): the sample index in the middle of the quietest
    FRAME_S of its last `search_s` seconds."""
    signal = as_array(samples)
    frame = max(int(rate * FRAME_S), 1)
    first = max(len(signal) - int(rate * search_s), 0)
    best, best_energy = len(signal), float("inf")
    for start in range(first, len(signal) - frame + 1, frame):
        energy = float(np.mean(signal[start : start + frame] ** 2))
        if energy < best_energy:
            best, best_energy = start + frame // 2, energy
    return best


def chunks(wav: wave.Wave_read, regions: list[Span], max_chunk_s: float = MAX_CHUNK_S) -> Iterator[Pcm]:
    """The audio of `regions`, in chunks of at most `max_chunk_s`, read forward through the stream (frames
    between regions are read and dropped, never returned)."""
    rate, width = wav.getframerate(), wav.getsampwidth()
    if wav.getnchannels() != 1 or width != 2:
        raise ValueError(f"recordings are mono 16-bit, not {wav.getnchannels()} channel(s) of {width * 8} bits")
    position = 0  # frames read so far
    limit = int(max_chunk_s * rate)
    for region in regions:
        start, end = round(region.start_s * rate), min(round(region.end_s * rate), wav.getnframes())
        while position < start:  # skip up to the region (paused silence): read and forget
            step = min(start - position, rate)
            dropped = len(wav.readframes(step)) // width
            if dropped == 0:
                return
            position += dropped
        carry = b""
        while position < end or carry:
            want = min(limit - len(carry) // width, end - position)
            data = wav.readframes(want) if want > 0 else b""
            position += len(data) // width
            pending = carry + data
            if not pending:
                break
            if position < end and len(pending) // width >= limit:
                cut = quietest_cut(pending, rate) * width
                yield Pcm(pending[:cut], rate)
                carry = pending[cut:]
            else:
                yield Pcm(pending, rate)
                carry = b""
            if not data and carry == b"":
                break


def utterances(pcm: Pcm) -> list[Pcm]:
    """The stretches of `pcm` with speech in them (by the endpointer's frame classifier), each with
    UTTERANCE_PAD_S of what surrounds it; stretches closer than UTTERANCE_GAP_S are one utterance."""
    detector = Endpointer(pcm.rate)
    frame = detector.frame_bytes
    voiced = [
        i for i in range(0, len(pcm.samples) - frame + 1, frame) if detector.is_speech(pcm.samples[i : i + frame])
    ]
    if not voiced:
        return []
    gap, pad = int(UTTERANCE_GAP_S * pcm.rate) * 2, int(UTTERANCE_PAD_S * pcm.rate) * 2
    spans: list[list[int]] = [[voiced[0], voiced[0] + frame]]
    for start in voiced[1:]:
        if start - spans[-1][1] < gap:
            spans[-1][1] = start + frame
        else:
            spans.append([start, start + frame])
    return [Pcm(pcm.samples[max(a - pad, 0) : b + pad], pcm.rate) for a, b in spans]


def rms(pcm: Pcm) -> float:
    signal = as_array(pcm.samples)
    return float(np.sqrt(np.mean(signal**2))) if len(signal) else 0.0


def transcribe_wav(source: IO[bytes], paused: list[Span], engine: Engine, language: str) -> Transcript:
    """Decode the WAV stream `source`, skipping `paused`, with a free-form recognizer (blocking: run it in a
    thread)."""
    recognizer = engine.recognizer(language, None)
    words: list[str] = []
    audio_s = decode_s = 0.0
    try:
        with wave.open(source, "rb") as wav:
            duration = wav.getnframes() / wav.getframerate()
            for chunk in chunks(wav, speech_regions(duration, paused)):
                if rms(chunk) < SILENT_RMS:
                    continue
                for utterance in utterances(chunk):
                    audio = resample(utterance, recognizer.rate)
                    step = int(recognizer.rate * FEED_S) * 2
                    started = time.perf_counter()
                    recognizer.start(narrowband=utterance.rate == 8000)
                    for i in range(0, len(audio.samples), step):
                        recognizer.feed(audio.samples[i : i + step])
                    heard = recognizer.finish()
                    decode_s += time.perf_counter() - started
                    audio_s += utterance.seconds
                    if heard.text.strip():
                        words.append(heard.text.strip())
    finally:
        recognizer.close()
    return Transcript(" ".join(words), round(audio_s, 3), round(decode_s, 3))


class SegmentStream(io.RawIOBase):
    """A read-only stream over an iterator of byte strings (the store's decrypted segments)."""

    def __init__(self, parts: Iterator[bytes]) -> None:
        self._parts = parts
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            part = next(self._parts, None)
            if part is None:
                return 0
            self._buffer = part
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size
