"""Audio as the recognizers want it: 16-bit signed little-endian mono PCM (`slin`), at 8 or 16 kHz.

Telephone audio is 8 kHz; the models work at 16 kHz, so 8 kHz audio is upsampled here (windowed-sinc
interpolation, with numpy) and the engines get the rate they ask for."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

RATES = (8000, 16000)
SAMPLE_BYTES = 2

# A half-band low-pass filter for 2x interpolation: windowed sinc, 65 taps (about -60 dB stop band).
_TAPS = np.arange(-32, 33)
_HALF_BAND = np.sinc(_TAPS / 2) / 2 * np.hamming(len(_TAPS))


class AudioError(ValueError):
    """The audio cannot be used (names the file and what is wrong)."""


@dataclass(frozen=True)
class Pcm:
    samples: bytes  # 16-bit signed little-endian mono
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_BYTES / self.rate


def read_wav(path: Path) -> Pcm:
    """A mono 16-bit WAV at 8 or 16 kHz; AudioError naming the file and the problem otherwise."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file") from None
    except (wave.Error, EOFError) as exc:
        raise AudioError(f"{path}: not a PCM WAV file ({exc})") from None
    problems = []
    if channels != 1:
        problems.append(f"{channels} channels (mono needed)")
    if width != SAMPLE_BYTES:
        problems.append(f"{width * 8}-bit samples (16-bit needed)")
    if rate not in RATES:
        problems.append(f"{rate} Hz (8000 or 16000 needed)")
    if problems:
        fix = f"sox {path} -r 8000 -c 1 -b 16 out.wav"
        raise AudioError(f"{path}: {', '.join(problems)}; convert it, e.g. `{fix}`")
    return Pcm(frames, rate)


def write_wav(path: Path, pcm: Pcm) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_BYTES)
        wav.setframerate(pcm.rate)
        wav.writeframes(pcm.samples)


def as_array(samples: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(samples, dtype="<i2").astype(np.float64)


def to_bytes(signal: npt.NDArray[np.float64]) -> bytes:
    return np.clip(np.round(signal), -32768, 32767).astype("<i2").tobytes()


def upsample_2x(signal: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """8 kHz -> 16 kHz: zero-stuffing, then the half-band filter removes the mirror image above 4 kHz."""
    stuffed = np.zeros(len(signal) * 2)
    stuffed[::2] = signal * 2
    return np.convolve(stuffed, _HALF_BAND, mode="same")


def downsample_2x(signal: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """16 kHz -> 8 kHz: the half-band filter first, so nothing above 4 kHz folds back."""
    return np.convolve(signal, _HALF_BAND, mode="same")[::2]


def resample(pcm: Pcm, rate: int) -> Pcm:
    if pcm.rate == rate:
        return pcm
    if (pcm.rate, rate) == (8000, 16000):
        return Pcm(to_bytes(upsample_2x(as_array(pcm.samples))), rate)
    if (pcm.rate, rate) == (16000, 8000):
        return Pcm(to_bytes(downsample_2x(as_array(pcm.samples))), rate)
    raise AudioError(f"cannot resample {pcm.rate} Hz to {rate} Hz (8000 and 16000 only)")


def is_narrowband(pcm: Pcm) -> bool:
    """True for telephone audio: 8 kHz, or 16 kHz with (almost) nothing above 4 kHz, such as a call that
    Asterisk transcoded to slin16 or a phone recording saved at 16 kHz."""
    if pcm.rate == 8000:
        return True
    signal = as_array(pcm.samples)
    if len(signal) < 64:
        return True
    low = np.convolve(signal, _HALF_BAND, mode="same")
    high = signal - low
    total = float(np.sum(signal**2)) or 1.0
    return float(np.sum(high**2)) / total < 1e-3
