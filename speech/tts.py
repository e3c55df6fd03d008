"""Text to speech with pyttsx3 (espeak-ng driver), rendered once to the format Asterisk plays natively
(8 kHz mono 16-bit WAV, i.e. slin) and cached by text, voice and language.

Synthesis is blocking and pyttsx3 engines are not thread-safe, so all renders go through one worker
thread, one at a time. Prompts known in advance are rendered when Hilo starts, so no caller
ever waits for a static prompt."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)


class TtsError(RuntimeError):
    pass


# espeak-ng voices used when a flow names none.
DEFAULT_VOICES = {"en": "gmw/en-US", "es": "roa/es"}


def voice_for(language: str, voice: str | None) -> str:
    return voice or DEFAULT_VOICES.get(language, DEFAULT_VOICES["en"])


def prompt_key(text: str, voice: str, language: str) -> str:
    return hashlib.sha256(f"{language}\0{voice}\0{text}".encode()).hexdigest()[:32]


def _synthesize(text: str, voice: str, out_wav: Path) -> None:
    import pyttsx3  # imported here: loading the espeak library is only needed when rendering

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        engine = pyttsx3.init("espeak")
        try:
            engine.setProperty("voice", voice)
            engine.setProperty("rate", 165)
            engine.save_to_file(text, str(raw))
            engine.runAndWait()
        finally:
            engine.stop()
        if not raw.exists() or raw.stat().st_size < 100:
            raise TtsError(f"espeak produced no audio for voice {voice!r}")
        # sox: resample the 22.05 kHz espeak output to the 8 kHz slin Asterisk plays without transcoding.
        done = subprocess.run(
            ["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(out_wav)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise TtsError(f"sox failed: {done.stderr.strip()}")


class PromptCache:
    """Renders prompts into `cache_dir` and publishes them into Asterisk's `sounds_dir` (subfolder `hilo`)."""

    def __init__(self, cache_dir: Path, sounds_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.sounds_dir = sounds_dir
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts")
        self._locks: dict[str, asyncio.Lock] = {}

    def media_uri(self, key: str) -> str:
        return f"sound:{self.sounds_dir.name}/{key}"

    async def render(self, text: str, voice: str, language: str) -> str:
        """Return the ARI media URI of the prompt, synthesizing it only the first time."""
        key = prompt_key(text, voice, language)
        published = self.sounds_dir / f"{key}.wav"
        if published.exists():
            return self.media_uri(key)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if not published.exists():
                cached = self.cache_dir / f"{key}.wav"
                if not cached.exists():
                    self.cache_dir.mkdir(parents=True, exist_ok=True)
                    partial = cached.with_suffix(".partial.wav")
                    loop = asyncio.get_running_loop()
                    await loop.run_in_executor(self._executor, _synthesize, text, voice, partial)
                    os.replace(partial, cached)
                    log.info("rendered prompt %s (%s, %d chars)", key, language, len(text))
                self.sounds_dir.mkdir(parents=True, exist_ok=True)
                tmp = published.with_suffix(".tmp")
                shutil.copyfile(cached, tmp)
                os.chmod(tmp, 0o644)  # Asterisk runs as its own user and must read it
                os.replace(tmp, published)
        return self.media_uri(key)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def synthesize_wav(text: str, voice: str, out_wav: Path) -> None:
    """Render `text` once to `out_wav` (8 kHz mono 16-bit), outside any cache: for tools and tests."""
    _synthesize(text, voice, out_wav)
