"""`hilo serve --workers N`: each worker's Stasis app and environment, the parent's back-off, restart and stop."""

from __future__ import annotations

import asyncio
import sys

import pytest
from pydantic import ValidationError

from hilo.settings import Settings
from server.workers import MAX_BACKOFF_S, STEADY_S, Supervisor, next_backoff, worker_env


def test_one_worker_keeps_the_namespace_as_stasis_app_and_spool_name() -> None:
    settings = Settings(namespace="hilo")
    assert (settings.stasis_app, settings.node) == ("hilo", "hilo")


def test_worker_i_of_several_owns_its_own_stasis_app() -> None:
    settings = Settings(namespace="hilo", workers=3, worker=2)
    assert (settings.stasis_app, settings.node) == ("hilo-w2", "hilo-w2")


def test_a_worker_index_beyond_the_count_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="HILO_WORKER=3 is not one of the HILO_WORKERS=2 workers"):
        Settings(workers=2, worker=3)


def test_each_worker_is_told_its_index_and_the_count() -> None:
    assert worker_env({"HILO_NAMESPACE": "x"}, 2, 4) == {"HILO_NAMESPACE": "x", "HILO_WORKER": "2", "HILO_WORKERS": "4"}


def test_backoff_grows_while_a_worker_keeps_failing_and_resets_once_it_ran_a_while() -> None:
    waits = [0.0]
    for _ in range(8):
        waits.append(next_backoff(waits[-1], ran_s=0.5))
    assert waits[1:4] == [1.0, 2.0, 4.0]
    assert max(waits) == MAX_BACKOFF_S
    assert next_backoff(MAX_BACKOFF_S, ran_s=STEADY_S) == 0.0


async def test_a_dead_worker_is_started_again_and_sigterm_stops_them_all() -> None:
    # Worker 1 exits at once (so it is started again, after its back-off); worker 2 stays.
    script = "import os, time; time.sleep(0 if os.environ['HILO_WORKER'] == '1' else 600)"
    supervisor = Supervisor(2, command=[sys.executable, "-c", script], stop_s=5)
    running = asyncio.create_task(supervisor.run())

    async def restarted() -> None:
        while supervisor.starts.get(1, 0) < 2 or supervisor.starts.get(2, 0) < 1:
            supervisor.started.clear()
            await supervisor.started.wait()

    await asyncio.wait_for(restarted(), 10)
    supervisor._stopping.set()  # what SIGTERM does
    assert await asyncio.wait_for(running, 10) == 0
    assert all(p.returncode is not None for p in supervisor._procs.values()), "no worker outlives the parent"
    assert supervisor.starts[2] == 1, "a worker that keeps running is not started again"
