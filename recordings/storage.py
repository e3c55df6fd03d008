"""Where recording files live: a small blob interface, a filesystem backend, and the encrypting store on
top that every recording goes through (nothing is written in the clear).

A backend only keeps opaque bytes under a key such as `2026/11/23/<recording id>.hrec`; an object store
would implement the same four methods. Blocking I/O and encryption run in a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncGenerator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from recordings.crypto import KeyRing, decrypt_stream, encrypt_stream

_KEY = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_.-]+)*$")


class BlobBackend(Protocol):
    def write(self, key: str, fill: _Filler) -> None:
        """Store what `fill` writes to the file object it is given; visible under `key` only once complete."""

    def open(self, key: str) -> BinaryIO:
        """Read the blob (FileNotFoundError when there is none)."""

    def delete(self, key: str) -> bool:
        """Remove the blob; False when there was none."""

    def exists(self, key: str) -> bool: ...


class _Filler(Protocol):
    def __call__(self, out: BinaryIO) -> None: ...


def check_key(key: str) -> str:
    if not _KEY.match(key) or ".." in key or len(key) > 300:
        raise ValueError(f"unusable storage key {key!r}")
    return key


def private_dirs(folder: Path) -> None:
    """Create `folder` and any missing parent, each readable by this user only (mkdir's `parents=True` would
    give the parents the default mode)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for each in reversed(missing):
        each.mkdir(mode=0o700, exist_ok=True)


class FilesystemBackend:
    """Blobs as files under `root` (created with mode 0700; files 0600). A write goes to a temporary file in
    the same folder, is flushed to disk, then renamed into place: a crash never leaves half a file under
    the final name."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def write(self, key: str, fill: _Filler) -> None:
        path = self._path(key)
        private_dirs(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as out:
                fill(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()


@dataclass(frozen=True)
class StoredFile:
    key: str
    key_id: str
    sha256: str  # of the plaintext
    size: int  # plaintext bytes


class IntegrityError(RuntimeError):
    """The encrypted copy does not read back as the plaintext that was stored."""


def _file_chunks(path: Path, size: int = 1 << 16) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(size):
            yield chunk


class EncryptedStore:
    def __init__(self, backend: BlobBackend, ring: KeyRing) -> None:
        self.backend = backend
        self.ring = ring

    def _put(self, key: str, chunks: Iterable[bytes], context: str) -> StoredFile:
        written: dict[str, tuple[str, int]] = {}

        def fill(out: BinaryIO) -> None:
            written["result"] = encrypt_stream(self.ring, chunks, out, context)

        self.backend.write(key, fill)
        sha256, size = written["result"]
        # Read the copy back before anyone deletes the original: the plaintext is only ever removed once
        # its encrypted copy is known to decrypt to the same bytes.
        check = hashlib.sha256()
        read = 0
        with self.backend.open(key) as source:
            for part in decrypt_stream(self.ring, source, context):
                check.update(part)
                read += len(part)
        if check.hexdigest() != sha256 or read != size:
            raise IntegrityError(f"{key}: the encrypted copy does not read back as the original")
        return StoredFile(key, self.ring.current, sha256, size)

    async def put_file(self, key: str, plaintext: Path, context: str) -> StoredFile:
        """Encrypt the file at `plaintext` into `key`, verified. The caller deletes the plaintext."""
        return await asyncio.to_thread(self._put, key, _file_chunks(plaintext), context)

    async def read(self, key: str, context: str) -> AsyncGenerator[bytes, None]:
        """The decrypted content, segment by segment (DecryptionError if it does not authenticate)."""
        source = await asyncio.to_thread(self.backend.open, key)
        try:
            segments = decrypt_stream(self.ring, source, context)
            while True:
                part = await asyncio.to_thread(next, segments, None)
                if part is None:
                    return
                yield part
        finally:
            source.close()

    async def delete(self, key: str) -> bool:
        return await asyncio.to_thread(self.backend.delete, key)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.backend.exists, key)
