"""Paused spans come back as silence of their length, where they were in the call."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

from recordings.audio import Span, duration_s, insert_silence, rms

RATE = 8000


def tone_wav(path: Path, seconds: float) -> None:
    frames = b"".join(
        struct.pack("<h", int(3000 * math.sin(2 * math.pi * 440 * n / RATE))) for n in range(int(seconds * RATE))
    )
    with wave.open(str(path), "wb") as w:
        w.setparams((1, 2, RATE, 0, "NONE", "not compressed"))
        w.writeframes(frames)


def level(path: Path, start: float, end: float) -> float:
    with wave.open(str(path)) as w:
        w.setpos(int(start * RATE))
        return rms(w.readframes(int((end - start) * RATE)))


def test_silence_goes_where_each_pause_was_in_the_call(tmp_path: Path) -> None:
    # The call: 1 s talk, 1 s paused, 2 s talk, 1.5 s paused, 1 s talk. Asterisk wrote only the 4 s of talk.
    tone_wav(tmp_path / "asterisk.wav", 4.0)
    spans = [Span(1.0, 2.0), Span(4.0, 5.5)]
    length = insert_silence(tmp_path / "asterisk.wav", tmp_path / "stored.wav", spans)
    assert length == duration_s(tmp_path / "stored.wav") == 6.5
    out = tmp_path / "stored.wav"
    for start, end, talking in [(0, 1, True), (1, 2, False), (2, 4, True), (4, 5.5, False), (5.5, 6.5, True)]:
        measured = level(out, start + 0.05, end - 0.05)
        assert (measured > 1000) if talking else (measured == 0), (start, end, measured)


def test_a_pause_open_until_the_end_is_silence_to_the_end(tmp_path: Path) -> None:
    tone_wav(tmp_path / "asterisk.wav", 2.0)
    length = insert_silence(tmp_path / "asterisk.wav", tmp_path / "stored.wav", [Span(2.0, 5.0)])
    assert length == 5.0
    assert level(tmp_path / "stored.wav", 2.05, 4.95) == 0


def test_a_pause_measured_a_little_late_never_cuts_audio(tmp_path: Path) -> None:
    # The span's start lies past the file's end (clocks differ slightly): the silence is appended.
    tone_wav(tmp_path / "asterisk.wav", 1.0)
    assert insert_silence(tmp_path / "asterisk.wav", tmp_path / "stored.wav", [Span(1.2, 2.2)]) == 2.0


def test_rms() -> None:
    assert rms(b"") == 0.0
    assert rms(struct.pack("<4h", 3, -3, 3, -3)) == 3.0
