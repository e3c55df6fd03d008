"""Text to speech with pyttsx3 (espeak-ng driver), rendered once to the format Asterisk plays natively
(8 kHz mono 16-bit WAV, i.e. slin) and cached by text, voice and language.

Synthesis is blocking and pyttsx3 engines are not thread-safe, so all renders go through one worker
thread, one at a time. Prompts known in advance are rendered when Hilo starts, so no caller
ever waits for a static prompt.

Two kinds of prompt. *Kept* ones (`keep=True`: a flow's texts without a template, queue announcements,
apologies) are the same for every caller: cached for good in `cache_dir` and published under their hash.
*Personal* ones, any other text (a flow text rendered from variables: "Welcome back, Ana García", a
balance read by an http node), may carry a customer's data: never cached, published as `p-<keyed hash>`
(the key is this process's own, so a name cannot be checked against a guessed text) and deleted once
unused for `personal_ttl_s`; every use makes one fresh again. Published files are as closed as the sounds
folder: 0640 with its group (Asterisk's) when it lets other users nothing, 0644 only when it is open to
them anyway."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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


PERSONAL_PREFIX = "p-"  # published personal prompts: p-<keyed hash>.wav


@dataclass
class _Pending:
    """The renders of one prompt under way: the lock they take turns on, and how many want it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class PromptCache:
    """Renders prompts into `cache_dir` and publishes them into Asterisk's `sounds_dir` (subfolder `hilo`)."""

    def __init__(self, cache_dir: Path, sounds_dir: Path, *, personal_ttl_s: float = 3600.0) -> None:
        self.cache_dir = cache_dir
        self.sounds_dir = sounds_dir
        self.personal_ttl_s = personal_ttl_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts")
        self._locks: dict[str, _Pending] = {}  # only prompts being rendered now
        self._kept: set[str] = set()  # keys rendered with keep=True
        self._salt = secrets.token_bytes(32)
        self._sweeper: asyncio.Task[None] | None = None

    def media_uri(self, key: str) -> str:
        return f"sound:{self.sounds_dir.name}/{key}"

    async def render(self, text: str, voice: str, language: str, *, keep: bool = False) -> str:
        """Return the ARI media URI of the prompt, synthesizing it only when it is not published. `keep`: the
        text is the same for every caller (see the module's docstring); otherwise it is personal unless the
        same text was rendered with keep before."""
        self._start_sweeping()
        key = prompt_key(text, voice, language)
        if keep or key in self._kept:
            self._kept.add(key)
            return await self._render_kept(key, text, voice, language)
        return await self._render_personal(text, voice, language)

    async def _render_kept(self, key: str, text: str, voice: str, language: str) -> str:
        published = self.sounds_dir / f"{key}.wav"
        if published.exists():
            return self.media_uri(key)
        async with self._turn(key):
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
                self._readable_by_asterisk(tmp)
                os.replace(tmp, published)
        return self.media_uri(key)

    async def _render_personal(self, text: str, voice: str, language: str) -> str:
        digest = hmac.new(self._salt, f"{language}\0{voice}\0{text}".encode(), hashlib.sha256).hexdigest()
        name = PERSONAL_PREFIX + digest[:32]
        published = self.sounds_dir / f"{name}.wav"
        async with self._turn(name):
            try:
                os.utime(published)  # used again: fresh for another personal_ttl_s
            except FileNotFoundError:
                self.sounds_dir.mkdir(parents=True, exist_ok=True)
                partial = published.with_suffix(".partial.wav")
                try:
                    loop = asyncio.get_running_loop()
                    await loop.run_in_executor(self._executor, _synthesize, text, voice, partial)
                    self._readable_by_asterisk(partial)
                    os.replace(partial, published)
                finally:
                    partial.unlink(missing_ok=True)
                log.info("rendered a personal prompt (%s, %d chars)", language, len(text))
        return self.media_uri(name)

    @contextlib.asynccontextmanager
    async def _turn(self, key: str) -> AsyncIterator[None]:
        """One render of `key` at a time; the entry goes when nobody waits for it (`_locks` stays small)."""
        pending = self._locks.setdefault(key, _Pending())
        pending.users += 1
        try:
            async with pending.lock:
                yield
        finally:
            pending.users -= 1
            if pending.users == 0:
                del self._locks[key]

    def _readable_by_asterisk(self, path: Path) -> None:
        """As closed as the sounds folder allows: Asterisk runs as its own user and must read the file."""
        folder = self.sounds_dir.stat()
        if folder.st_mode & stat.S_IRWXO:
            os.chmod(path, 0o644)  # the folder is open to everyone: Asterisk may be anyone
            return
        if path.stat().st_gid != folder.st_gid:
            os.chown(path, -1, folder.st_gid)  # the folder's group is Asterisk's
        os.chmod(path, 0o640)

    def sweep(self, now: float | None = None) -> int:
        """Delete the personal prompts unused for `personal_ttl_s` (any process's: they share the folder);
        returns how many."""
        cutoff = (now if now is not None else time.time()) - self.personal_ttl_s
        removed = 0
        try:
            entries = list(os.scandir(self.sounds_dir))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if not entry.name.startswith(PERSONAL_PREFIX) or not entry.name.endswith(".wav"):
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def _start_sweeping(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_periodically(), name="tts-sweep")

    async def _sweep_periodically(self) -> None:
        every = max(10.0, self.personal_ttl_s / 4)
        while True:
            try:
                removed = self.sweep()  # in the loop: no render can freshen a file between look and delete
                if removed:
                    log.info("deleted %d personal prompts unused for %.0f s", removed, self.personal_ttl_s)
            except OSError as exc:
                log.warning("cannot sweep personal prompts in %s: %s", self.sounds_dir, exc)
            await asyncio.sleep(every)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._executor.shutdown(wait=False, cancel_futures=True)


def synthesize_wav(text: str, voice: str, out_wav: Path) -> None:
    """Render `text` once to `out_wav` (8 kHz mono 16-bit), outside any cache: for tools and tests."""
    _synthesize(text, voice, out_wav)
