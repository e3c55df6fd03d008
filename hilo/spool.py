"""A node's durable local spool: records that could not reach PostgreSQL in time, kept in order on local disk
until they can be written.

The spool is one append-only file of JSON lines. A record is accepted once its line is written and fsync'd
(`append`); the consumer replays records in order (`run`) and says each one is written (`done`), which moves
the replay offset kept beside the file (`<file>.done`, replaced atomically and fsync'd). So after a crash the
replay starts again at the first record not known to be written: at most that one record is applied twice,
and the consumer's writes are idempotent (each record carries its own id). When the replay catches up the file
is emptied. A torn last line (the node died in the middle of an append) was never accepted and is cut off
when the spool is opened; a record the store refuses for good (not a dependency being down: bad data, a bug)
is moved to `<file>.rejected` for a person to look at, so it cannot hold up the ones behind it.

The spool is bounded (`max_bytes`): when it is full, `append` raises SpoolFull and the record is not accepted.

Written by hand: the libraries that keep a queue on disk (persist-queue, queuelib, aiodiskqueue) are either
synchronous or keep their own serialisation and acknowledgement schemes, and none gives what this needs most
(fsync before acceptance, an in-order replay offset that survives a crash, rejecting a poisoned record); the
file and its offset take less code than adapting one of them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPLAY_BACKOFF_S = (0.2, 5.0)  # first and longest pause between replay attempts while the store is down


class SpoolFull(Exception):
    pass


@dataclass(frozen=True)
class Entry:
    seq: int  # the order of acceptance on this node since the spool was opened
    offset: int  # where its line starts in the file
    end: int  # where the next line starts
    record: dict[str, Any]


class Spool:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.progress = path.with_name(path.name + ".done")
        self.rejected = path.with_name(path.name + ".rejected")
        self._entries: deque[Entry] = deque()
        self._size = 0  # bytes in the file
        self._seq = 0
        self._done_seq = 0
        self._lock = asyncio.Lock()  # appends, and emptying the file, one at a time
        self._changed = asyncio.Condition()
        self._file: Any = None

    # -- opening -----------------------------------------------------------------------------------
    def open(self) -> int:
        """Open (or create) the file and take back the records not yet written; how many there are."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # kept open for the spool's life
        data = self.path.read_bytes()
        start = self._read_progress()
        if start > len(data):  # the file was emptied and the node died before resetting the offset
            start = 0
        complete = data.rfind(b"\n") + 1
        if complete < len(data):  # a torn last line: never accepted
            log.warning("spool %s: cutting off a torn last record (%d bytes)", self.path, len(data) - complete)
            os.truncate(self.path, complete)
            data = data[:complete]
        offset = start
        for line in data[start:].splitlines(keepends=True):
            end = offset + len(line)
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                self._reject_line(line, f"unreadable: {exc}")
            else:
                self._seq += 1
                self._entries.append(Entry(self._seq, offset, end, record))
            offset = end
        self._done_seq = self._seq - len(self._entries)
        self._size = len(data)
        if not self._entries and self._size:
            self._empty()
        return len(self._entries)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- state -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        return self._size

    def head(self) -> Entry | None:
        return self._entries[0] if self._entries else None

    def pending(self) -> list[Entry]:
        return list(self._entries)

    def last(self) -> Entry | None:
        return self._entries[-1] if self._entries else None

    # -- accepting ---------------------------------------------------------------------------------
    async def append(self, record: dict[str, Any]) -> Entry:
        """Accept a record: written and fsync'd when this returns. SpoolFull when it does not fit."""
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        async with self._lock:
            if self._size + len(line) > self.max_bytes:
                raise SpoolFull(f"spool {self.path} is full ({self._size} of {self.max_bytes} bytes)")
            await asyncio.to_thread(self._write, line)
            self._seq += 1
            entry = Entry(self._seq, self._size, self._size + len(line), record)
            self._size = entry.end
            self._entries.append(entry)
        async with self._changed:
            self._changed.notify_all()
        return entry

    def _write(self, line: bytes) -> None:
        assert self._file is not None, "the spool is not open"
        try:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError:
            # a partial line must not stay: the next record would be glued to it
            with contextlib.suppress(OSError):
                self._file.truncate(self._size)
            raise

    # -- replaying ---------------------------------------------------------------------------------
    async def done(self, entry: Entry) -> None:
        """The head record is written: the replay offset moves past it (the file is emptied when it was the
        last one)."""
        assert self._entries and self._entries[0] is entry, "records are done in order"
        self._entries.popleft()
        if self._entries:
            await asyncio.to_thread(self._write_progress, entry.end)
        else:
            async with self._lock:
                if not self._entries:  # nothing came in meanwhile
                    await asyncio.to_thread(self._empty)
                else:
                    await asyncio.to_thread(self._write_progress, entry.end)
        self._done_seq = entry.seq
        async with self._changed:
            self._changed.notify_all()

    async def reject(self, entry: Entry, reason: str) -> None:
        """The store refuses the head record for good: kept aside in `<file>.rejected`, then done."""
        line = json.dumps(entry.record, separators=(",", ":"), default=str).encode() + b"\n"
        await asyncio.to_thread(self._reject_line, line, reason)
        await self.done(entry)

    async def written(self, entry: Entry, timeout: float | None = None) -> bool:
        """Wait until the record is written (or rejected); False if `timeout` passed first."""

        def over() -> bool:
            return self._done_seq >= entry.seq

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(over), timeout)
            except TimeoutError:
                return False
        return True

    async def run(
        self,
        apply: Callable[[dict[str, Any]], Awaitable[None]],
        *,
        transient: tuple[type[BaseException], ...],
    ) -> None:
        """Replay for good: apply the head record, and on success say it is done. A transient failure (the
        store is still down) is tried again after a pause that grows to REPLAY_BACKOFF_S[1]; any other
        failure rejects the record."""
        pause = REPLAY_BACKOFF_S[0]
        while True:
            entry = self.head()
            if entry is None:
                async with self._changed:
                    await self._changed.wait_for(lambda: bool(self._entries))
                continue
            try:
                await apply(entry.record)
            except asyncio.CancelledError:
                raise
            except transient as exc:
                log.warning("spool %s: %d records wait for the store (%s)", self.path, len(self), type(exc).__name__)
                await asyncio.sleep(pause)
                pause = min(pause * 2, REPLAY_BACKOFF_S[1])
                continue
            except Exception as exc:
                log.exception("spool %s: the store refused record %s; kept in %s", self.path, entry.seq, self.rejected)
                await self.reject(entry, f"{type(exc).__name__}: {exc}")
                continue
            pause = REPLAY_BACKOFF_S[0]
            await self.done(entry)

    # -- files -------------------------------------------------------------------------------------
    def _read_progress(self) -> int:
        try:
            return int(self.progress.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _write_progress(self, offset: int) -> None:
        temporary = self.progress.with_name(self.progress.name + ".new")
        with open(temporary, "w") as file:
            file.write(str(offset))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.progress)
        _fsync_dir(self.path.parent)

    def _empty(self) -> None:
        """Everything is written: the file is emptied first, then the offset reset (a crash between the two
        leaves an offset past the end of an empty file, which `open` takes as 0)."""
        assert self._file is not None
        self._file.truncate(0)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._size = 0
        self._write_progress(0)

    def _reject_line(self, line: bytes, reason: str) -> None:
        kept = {"reason": reason, "line": line.rstrip(b"\n").decode(errors="replace")}
        with open(self.rejected, "ab") as file:
            file.write(json.dumps(kept).encode() + b"\n")
            file.flush()
            os.fsync(file.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
