"""Where synthesized prompts go and for how long: a prompt rendered from a caller's data is never cached,
is published under a name that cannot be checked against a guessed text, is as closed as the sounds folder
allows, and is deleted once unused; the texts every caller hears are kept. Synthesis itself is replaced by
a stand-in here (speech/tts.py's espeak run is covered by the speech tests)."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from speech import tts
from speech.tts import PromptCache, prompt_key

VOICE, LANGUAGE = "gmw/en-US", "en"
PERSONAL = "Welcome back to Hilo, Ana García. Your balance is 1,234 euros."
KEPT = "For sales, press 1."


@pytest.fixture
def synthesized(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    texts: list[str] = []

    def fake(text: str, voice: str, out_wav: Path) -> None:
        texts.append(text)
        out_wav.write_bytes(b"RIFF" + text.encode())

    monkeypatch.setattr(tts, "_synthesize", fake)
    return texts


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    cache, sounds = tmp_path / "tts-cache", tmp_path / "sounds" / "hilo"
    sounds.mkdir(parents=True)
    sounds.chmod(0o750)  # as stack/asterisk.sh makes it: root and Asterisk's group
    yield cache, sounds


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_personal_prompt_is_not_cached_and_not_world_readable(
    synthesized: list[str], folders: tuple[Path, Path]
) -> None:
    cache_dir, sounds = folders
    prompts = PromptCache(cache_dir, sounds)
    try:
        media = await prompts.render(PERSONAL, VOICE, LANGUAGE)
        name = media.removeprefix("sound:hilo/")
        assert name.startswith("p-") and name != prompt_key(PERSONAL, VOICE, LANGUAGE)
        published = sounds / f"{name}.wav"
        assert published.read_bytes().endswith(PERSONAL.encode())
        assert _mode(published) == 0o640 and published.stat().st_gid == sounds.stat().st_gid
        assert not cache_dir.exists() or list(cache_dir.iterdir()) == []
        assert await prompts.render(PERSONAL, VOICE, LANGUAGE) == media and synthesized == [PERSONAL]
        # another process (another key) names the same text otherwise: a name says nothing about a text
        other = PromptCache(cache_dir, sounds)
        try:
            assert await other.render(PERSONAL, VOICE, LANGUAGE) != media
        finally:
            other.close()
    finally:
        prompts.close()


async def test_kept_prompts_are_cached_and_a_later_plain_render_finds_them(
    synthesized: list[str], folders: tuple[Path, Path]
) -> None:
    cache_dir, sounds = folders
    prompts = PromptCache(cache_dir, sounds)
    try:
        media = await prompts.render(KEPT, VOICE, LANGUAGE, keep=True)
        key = prompt_key(KEPT, VOICE, LANGUAGE)
        assert media == f"sound:hilo/{key}" and (cache_dir / f"{key}.wav").exists()
        assert _mode(sounds / f"{key}.wav") == 0o640
        assert await prompts.render(KEPT, VOICE, LANGUAGE) == media  # a flow's say of the same static text
        assert synthesized == [KEPT]
    finally:
        prompts.close()


async def test_in_a_folder_open_to_everyone_prompts_stay_readable_by_asterisk(
    synthesized: list[str], folders: tuple[Path, Path]
) -> None:
    cache_dir, sounds = folders
    sounds.chmod(0o755)  # Asterisk may be any user: it must still read them
    prompts = PromptCache(cache_dir, sounds)
    try:
        media = await prompts.render(PERSONAL, VOICE, LANGUAGE)
        assert _mode(sounds / f"{media.removeprefix('sound:hilo/')}.wav") == 0o644
    finally:
        prompts.close()


async def test_personal_prompts_unused_for_their_ttl_are_deleted(
    synthesized: list[str], folders: tuple[Path, Path]
) -> None:
    cache_dir, sounds = folders
    prompts = PromptCache(cache_dir, sounds, personal_ttl_s=600)
    try:
        old = sounds / f"{(await prompts.render(PERSONAL, VOICE, LANGUAGE)).removeprefix('sound:hilo/')}.wav"
        used = sounds / f"{(await prompts.render('Hi Bob', VOICE, LANGUAGE)).removeprefix('sound:hilo/')}.wav"
        kept = sounds / f"{(await prompts.render(KEPT, VOICE, LANGUAGE, keep=True)).removeprefix('sound:hilo/')}.wav"
        an_hour_ago = time.time() - 3600
        for path in (old, used, kept):
            os.utime(path, (an_hour_ago, an_hour_ago))
        await prompts.render("Hi Bob", VOICE, LANGUAGE)  # used again: fresh
        assert prompts.sweep() == 1
        assert not old.exists() and used.exists() and kept.exists()
        assert await prompts.render(PERSONAL, VOICE, LANGUAGE)  # rendered again when needed
        assert synthesized.count(PERSONAL) == 2
    finally:
        prompts.close()


async def test_no_lock_is_kept_per_text_once_rendered(synthesized: list[str], folders: tuple[Path, Path]) -> None:
    cache_dir, sounds = folders
    prompts = PromptCache(cache_dir, sounds)
    try:
        texts = [f"Hello caller {n}" for n in range(50)]
        await asyncio.gather(*(prompts.render(t, VOICE, LANGUAGE) for t in texts + texts))
        assert prompts._locks == {}
        assert sorted(synthesized) == sorted(texts)  # each once, though asked twice at the same time
    finally:
        prompts.close()
