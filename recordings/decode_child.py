"""A recording's transcript decoded in a process of its own (`python -m recordings.decode_child`).

Why a process and not a thread: the recognizers (pocketsphinx, vosk) decode in C without letting go of
Python's global lock, so a decode in a thread of the server stalled its event loop (every call, ARI event
and API request) for seconds at a time: after a 20-minute recorded call, the server answered nothing for
minutes. Here the server's loop only waits on a pipe, and the child runs at a lower priority (nice 10), so
the cores go to calls first.

The job comes pickled on the child's stdin (the store, with its key ring: a pipe, never argv nor the
environment) from the server that started it; the transcript comes back as JSON on stdout. Whatever the
recognizers print goes to stderr (stdout is the result's alone)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pickle
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from recordings.audio import Span
from recordings.crypto import decrypt_stream
from recordings.storage import EncryptedStore
from recordings.transcribe import SegmentStream, Transcript, transcribe_wav
from speech.standard import standard_engines

log = logging.getLogger(__name__)

NICE = 10
STDERR_TAIL = 2000  # characters of the child's stderr kept in the error when it fails


@dataclass(frozen=True)
class DecodeJob:
    store: EncryptedStore
    storage_key: str
    recording_id: str
    paused: list[Span]
    vosk_models: dict[str, Path]
    preferred: dict[str, str]
    engine: str
    language: str


def decode(job: DecodeJob) -> Transcript:
    """Blocking: decrypt the recording segment by segment and decode it, skipping the paused spans."""
    engine = standard_engines(job.vosk_models, job.preferred).engines[job.engine]
    with job.store.backend.open(job.storage_key) as source:
        stream = io.BufferedReader(SegmentStream(decrypt_stream(job.store.ring, source, job.recording_id)))
        return transcribe_wav(stream, job.paused, engine, job.language)


async def decode_in_child(job: DecodeJob) -> Transcript:
    """Runs `decode` in a child process; a cancelled wait kills the child. RuntimeError when it fails."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "recordings.decode_child",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate(pickle.dumps(job))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        tail = err.decode(errors="replace")[-STDERR_TAIL:]
        log.warning("the decoding process of recording %s failed:\n%s", job.recording_id, tail)
        lines = [line for line in tail.splitlines() if line.strip()]
        raise RuntimeError(f"the decoding process exited with {proc.returncode}: {lines[-1] if lines else '-'}")
    return Transcript(**json.loads(out))


def main() -> None:
    # Run as `-m`, this file is __main__; the job was pickled with the importable module's class.
    from recordings import decode_child

    os.nice(NICE)
    result = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a recognizer prints goes to stderr: stdout carries the result only
    job = pickle.load(sys.stdin.buffer)  # noqa: S301 (from the server that started this process, over a pipe)
    if not isinstance(job, decode_child.DecodeJob):
        raise SystemExit(f"expected a DecodeJob on stdin, got {type(job).__name__}")
    json.dump(asdict(decode_child.decode(job)), result)
    result.close()


if __name__ == "__main__":
    main()
