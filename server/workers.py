"""`hilo serve --workers N`: N worker processes on one machine, one per core, and a small parent that keeps
them running.

Worker i (1..N) is a whole Hilo server (`hilo serve` with HILO_WORKER=i, HILO_WORKERS=N): its own Stasis app
`<namespace>-w<i>`, so it owns the calls Asterisk hands that app (the dialplan's context `hilo-stasis` picks
a live one); all workers share the HTTP port (SO_REUSEPORT), Redis and PostgreSQL. The parent only starts
the workers, starts again one that exits (after a back-off that grows while it keeps failing at once), and
on SIGTERM or SIGINT stops them all: SIGTERM to each, SIGKILL to any still there after `stop_s`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STEADY_S = 60.0  # a worker that ran this long before exiting starts again at once


def next_backoff(previous_s: float, ran_s: float) -> float:
    """How long to wait before starting again a worker that exited after running `ran_s` seconds."""
    if ran_s >= STEADY_S:
        return 0.0
    return min(MAX_BACKOFF_S, max(FIRST_BACKOFF_S, previous_s * 2))


def worker_env(base: dict[str, str], worker: int, workers: int) -> dict[str, str]:
    return {**base, "HILO_WORKER": str(worker), "HILO_WORKERS": str(workers)}


@dataclass
class Supervisor:
    workers: int
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "server.cli", "serve"])
    stop_s: float = 10.0  # inside stack/down.sh's 15 s before its SIGKILL
    starts: dict[int, int] = field(default_factory=dict)  # worker -> how many times it was started
    started: asyncio.Event = field(default_factory=asyncio.Event)  # set at each start (tests wait on it)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _procs: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        keepers = [asyncio.create_task(self._keep(i), name=f"worker-{i}") for i in range(1, self.workers + 1)]
        await self._stopping.wait()
        log.info("stopping %d workers", len(self._procs))
        for task in keepers:
            task.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        await self._stop_all()
        return 0

    async def _keep(self, worker: int) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            started = asyncio.get_running_loop().time()
            proc = await asyncio.create_subprocess_exec(
                *self.command, env=worker_env(dict(os.environ), worker, self.workers)
            )
            self._procs[worker] = proc
            self.starts[worker] = self.starts.get(worker, 0) + 1
            self.started.set()
            log.info("worker %d started (pid %d)", worker, proc.pid)
            code = await proc.wait()
            ran = asyncio.get_running_loop().time() - started
            backoff = next_backoff(backoff, ran)
            log.error(
                "worker %d (pid %d) exited (%s) after %.0f s: again in %.0f s", worker, proc.pid, code, ran, backoff
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)

    async def _stop_all(self) -> None:
        running = [p for p in self._procs.values() if p.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), self.stop_s)
        except TimeoutError:
            for proc in running:
                if proc.returncode is None:
                    log.warning("worker pid %d did not stop within %.0f s: killing it", proc.pid, self.stop_s)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in running))


def serve_workers(workers: int) -> int:
    return asyncio.run(Supervisor(workers).run())
