"""A recording's transcript decoded in a child process gives what the same decode gives in this one, and a
child that fails says why (recordings/decode_child.py: decoding in the server's own process stalled it)."""

from __future__ import annotations

import base64
import math
import os
import struct
import wave
from pathlib import Path

import pytest

from recordings.audio import Span
from recordings.crypto import KeyRing
from recordings.decode_child import DecodeJob, decode, decode_in_child
from recordings.storage import EncryptedStore, FilesystemBackend

RATE = 8000


def a_recording(path: Path) -> None:
    """Two seconds of silence, then three of a warbling tone loud enough to be heard as an utterance."""
    samples = [0] * (2 * RATE) + [
        int(9000 * math.sin(2 * math.pi * (300 + 200 * math.sin(i / 800)) * i / RATE)) for i in range(3 * RATE)
    ]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))


async def a_job(tmp_path: Path, *, storage_key: str = "2026/12/08/rec.hrec") -> DecodeJob:
    ring = KeyRing.parse(f"k1:{base64.b64encode(os.urandom(32)).decode()}", "k1")
    store = EncryptedStore(FilesystemBackend(tmp_path / "store"), ring)
    a_recording(tmp_path / "call.wav")
    await store.put_file("2026/12/08/rec.hrec", tmp_path / "call.wav", context="rec")
    return DecodeJob(
        store=store,
        storage_key=storage_key,
        recording_id="rec",
        paused=[Span(0.0, 0.5)],
        vosk_models={},
        preferred={},
        engine="pocketsphinx",
        language="en",
    )


async def test_the_child_decodes_what_this_process_decodes(tmp_path: Path) -> None:
    job = await a_job(tmp_path)
    in_child = await decode_in_child(job)
    here = decode(job)
    assert (in_child.text, in_child.audio_s) == (here.text, here.audio_s)
    assert in_child.audio_s > 0  # the tone was heard as an utterance and decoded


async def test_a_child_that_fails_says_why(tmp_path: Path) -> None:
    job = await a_job(tmp_path, storage_key="2026/12/08/missing.hrec")
    with pytest.raises(RuntimeError, match=r"decoding process exited with 1: FileNotFoundError.*missing\.hrec"):
        await decode_in_child(job)
