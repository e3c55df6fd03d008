"""WAV handling for recordings: put back the silence of paused spans, measure length and loudness.

Asterisk leaves a paused span out of the file altogether (its recorder drops the audio frames while paused,
main/app.c), so the file is shorter than the call by the paused time. The stored recording must keep the
call's own time line: where the pause was, it holds silence of the paused length. The spans are kept as
offsets in that time line (seconds from the start of the recording), which is also where the silence
goes."""

from __future__ import annotations

import array
import math
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

COPY_FRAMES = 8000


@dataclass(frozen=True)
class Span:
    start_s: float
    end_s: float

    @property
    def length_s(self) -> float:
        return max(self.end_s - self.start_s, 0.0)


def duration_s(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def insert_silence(source: Path, target: Path, spans: list[Span]) -> float:
    """Copy the WAV `source` to `target` with silence of each span's length where that span began in the
    call's time line. `spans` are in call time, in order, not overlapping. Returns the new duration."""
    with wave.open(str(source), "rb") as src, wave.open(str(target), "wb") as dst:
        if src.getcomptype() != "NONE":
            raise ValueError(f"{source.name}: only PCM WAV can be given silence, not {src.getcomptype()}")
        dst.setparams(src.getparams())
        rate, width, channels = src.getframerate(), src.getsampwidth(), src.getnchannels()
        frame = width * channels
        quiet = (b"\x80" if width == 1 else b"\x00" * width) * channels  # 8-bit WAV is unsigned
        total = src.getnframes()
        copied = 0
        paused_before = 0.0
        for span in sorted(spans, key=lambda s: s.start_s):
            # Where the pause began, counted in the file Asterisk wrote (which lacks the earlier pauses).
            at = min(max(round((span.start_s - paused_before) * rate), copied), total)
            _copy(src, dst, at - copied, frame)
            copied = at
            dst.writeframes(quiet * round(span.length_s * rate))
            paused_before += span.length_s
        _copy(src, dst, total - copied, frame)
        return dst.getnframes() / rate


def _copy(src: wave.Wave_read, dst: wave.Wave_write, frames: int, frame_size: int) -> None:
    while frames > 0:
        data = src.readframes(min(frames, COPY_FRAMES))
        if not data:
            return
        dst.writeframes(data)
        frames -= len(data) // frame_size


def rms(pcm: bytes, width: int = 2) -> float:
    """Root mean square of signed little-endian PCM samples (16-bit unless told otherwise)."""
    if width != 2:
        raise ValueError("only 16-bit samples are measured")
    count = len(pcm) // 2
    if count == 0:
        return 0.0
    samples = array.array("h", pcm[: count * 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return math.sqrt(sum(s * s for s in samples) / count)
