"""Voice-activity endpointing: where an utterance starts and where it ends, from the audio alone.

Frames of 20 ms are classified by WebRTC's voice-activity detector (the `webrtcvad` wheel), and a frame
counts as speech only if it is also loud enough (a floor against line noise the detector takes for voice).
Speech starts when most of the last 100 ms is speech, and the 500 ms before that are handed over too, so
the recognizer hears the first sound and a little of the line; it ends after `end_silence_s` without
speech, or at `max_speech_s`. Pauses inside the utterance are handed on when speech resumes.
No fixed waits: the end of the utterance is the moment the caller stops talking, plus that silence."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

from speech.audio import SAMPLE_BYTES

FRAME_S = 0.02
START_WINDOW = 5  # frames (100 ms) looked at for the start ...
START_VOICED = 4  # ... of which this many must be speech
PRE_ROLL_S = 0.5
# How much of the closing silence is handed on with the utterance: all of it, in practice. pocketsphinx
# normalises over the utterance and does better with the silence than without (bench/speech.py).
KEEP_TAIL_S = 3.0
MIN_RMS = 120.0  # about -48 dBFS


@dataclass(frozen=True)
class VadEvent:
    kind: str  # "start" (audio = the pre-roll and the frames that started it), "speech", "end"
    audio: bytes = b""


class Endpointer:
    def __init__(
        self,
        rate: int,
        *,
        end_silence_s: float = 0.6,
        max_speech_s: float = 10.0,
        aggressiveness: int = 2,
    ) -> None:
        self.rate = rate
        self.frame_bytes = int(rate * FRAME_S) * SAMPLE_BYTES
        self._vad = webrtcvad.Vad(aggressiveness)
        self._end_frames = max(1, round(end_silence_s / FRAME_S))
        self._max_frames = max(1, round(max_speech_s / FRAME_S))
        self._pending = b""
        self._recent: deque[tuple[bytes, bool]] = deque(maxlen=max(START_WINDOW, round(PRE_ROLL_S / FRAME_S)))
        self.in_speech = False
        self.ended = False
        self._silent = 0
        self._held: list[bytes] = []  # non-speech frames after speech: handed on only if speech resumes
        self._keep_tail = max(0, round(KEEP_TAIL_S / FRAME_S))
        self._speech_frames = 0
        self.speech_start_s: float | None = None
        self.speech_end_s: float | None = None  # when the caller last spoke (before the closing silence)
        self._frames_seen = 0

    def is_speech(self, frame: bytes) -> bool:
        rms = float(np.sqrt(np.mean(np.frombuffer(frame, dtype="<i2").astype(np.float64) ** 2)))
        return rms >= MIN_RMS and self._vad.is_speech(frame, self.rate)

    def feed(self, samples: bytes) -> list[VadEvent]:
        """Events for this audio; nothing more once the utterance has ended."""
        events: list[VadEvent] = []
        self._pending += samples
        while len(self._pending) >= self.frame_bytes and not self.ended:
            frame, self._pending = self._pending[: self.frame_bytes], self._pending[self.frame_bytes :]
            self._frames_seen += 1
            voiced = self.is_speech(frame)
            if not self.in_speech:
                self._recent.append((frame, voiced))
                window = list(self._recent)[-START_WINDOW:]
                if sum(v for _, v in window) >= START_VOICED:
                    self.in_speech = True
                    self.speech_start_s = (self._frames_seen - len(window)) * FRAME_S
                    events.append(VadEvent("start", b"".join(f for f, _ in self._recent)))
                    self._recent.clear()
                continue
            self._speech_frames += 1
            if voiced:
                events += [VadEvent("speech", held) for held in self._held]
                self._held = []
                events.append(VadEvent("speech", frame))
                self._silent = 0
                self.speech_end_s = self._frames_seen * FRAME_S
            else:
                self._held.append(frame)
                self._silent += 1
            if self._silent >= self._end_frames or self._speech_frames >= self._max_frames:
                # A long closing silence would only dilute the utterance: keep its beginning.
                events += [VadEvent("speech", held) for held in self._held[: self._keep_tail]]
                self._held = []
                self.ended = True
                events.append(VadEvent("end"))
        return events
