"""The recording store: files written atomically, private, only as ciphertext, verified before the plaintext
may go; keys that cannot escape the store's folder."""

from __future__ import annotations

import base64
import io
import os
import stat
import wave
from pathlib import Path
from typing import BinaryIO

import pytest

from recordings.crypto import DecryptionError, KeyRing
from recordings.storage import EncryptedStore, FilesystemBackend, IntegrityError, check_key


def ring() -> KeyRing:
    return KeyRing.parse(f"k1:{base64.b64encode(os.urandom(32)).decode()}", "k1")


def a_wav(path: Path, seconds: float = 2.5) -> bytes:
    with wave.open(str(path), "wb") as w:
        w.setparams((1, 2, 8000, 0, "NONE", "not compressed"))
        w.writeframes(os.urandom(int(8000 * seconds)) * 2)
    return path.read_bytes()


async def test_a_file_is_stored_encrypted_private_and_reads_back(tmp_path: Path) -> None:
    plain = a_wav(tmp_path / "call.wav")
    store = EncryptedStore(FilesystemBackend(tmp_path / "store"), ring())
    stored = await store.put_file("2026/11/23/abc.hrec", tmp_path / "call.wav", context="abc")
    on_disk = tmp_path / "store" / "2026" / "11" / "23" / "abc.hrec"
    assert stored.size == len(plain) and stored.key_id == "k1"
    assert stat.S_IMODE(on_disk.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "store" / "2026").stat().st_mode) == 0o700
    assert not on_disk.read_bytes().startswith(b"RIFF")
    with pytest.raises((wave.Error, EOFError)):
        wave.open(str(on_disk))
    assert b"".join([part async for part in store.read(stored.key, context="abc")]) == plain
    with pytest.raises(DecryptionError):
        [part async for part in store.read(stored.key, context="another recording")]
    assert await store.delete(stored.key) and not await store.exists(stored.key)
    assert not await store.delete(stored.key)


class FailingMidway(FilesystemBackend):
    def write(self, key: str, fill: object) -> None:
        def broken(out: BinaryIO) -> None:
            out.write(b"half a file")
            raise OSError("disk full")

        super().write(key, broken)


async def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    a_wav(tmp_path / "call.wav")
    store = EncryptedStore(FailingMidway(tmp_path / "store"), ring())
    with pytest.raises(OSError, match="disk full"):
        await store.put_file("x/y.hrec", tmp_path / "call.wav", context="y")
    assert list((tmp_path / "store" / "x").iterdir()) == []


class Corrupting(FilesystemBackend):
    def open(self, key: str) -> BinaryIO:
        data = bytearray(super().open(key).read())
        data[-3] ^= 0xFF
        return io.BytesIO(bytes(data))


async def test_a_copy_that_does_not_read_back_is_refused(tmp_path: Path) -> None:
    a_wav(tmp_path / "call.wav")
    store = EncryptedStore(Corrupting(tmp_path / "store"), ring())
    with pytest.raises((IntegrityError, DecryptionError)):
        await store.put_file("x/y.hrec", tmp_path / "call.wav", context="y")


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a/../../b", "a//b", "", "a/b c"])
def test_keys_cannot_leave_the_store(key: str) -> None:
    with pytest.raises(ValueError, match="unusable storage key"):
        check_key(key)
