"""cancel_until_done: a task that swallows a cancellation is cancelled again, and the wait ends."""

from __future__ import annotations

import asyncio

from hilo.tasks import cancel_until_done


async def test_a_task_that_swallows_one_cancellation_is_cancelled_again() -> None:
    swallowed = 0
    started, never = asyncio.Event(), asyncio.Event()

    async def loop_that_loses_a_cancel() -> None:
        nonlocal swallowed
        started.set()
        while True:
            try:
                await never.wait()
            except asyncio.CancelledError:
                if swallowed == 0:  # as a cancellation lost on its way would leave it: sleeping on
                    swallowed += 1
                    continue
                raise

    task = asyncio.create_task(loop_that_loses_a_cancel())
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(cancel_until_done([task], recancel_s=0.05), 5)
    assert task.cancelled() and swallowed == 1


async def test_a_task_that_failed_before_is_waited_for_and_its_failure_retrieved() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fails())
    await asyncio.wait([failed])
    running = asyncio.create_task(asyncio.Event().wait())
    await cancel_until_done([failed, running])
    assert running.cancelled() and failed.done()
