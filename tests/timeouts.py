"""The per-test bound of the suite (pytest-timeout's `timeout` in pyproject.toml), made to suit asyncio tests.

pytest-timeout's `signal` method raises its failure from inside whatever the main thread runs when the time
is up; in an asyncio test that is the event loop, which is broken out of, leaving the test's task pending
on the one loop every test shares. Here the timer is pytest-timeout's, and what happens when it fires is:

1. a dump, on the terminal, of every thread's stack (the main one included) and of every asyncio task of
   the running loop with its chain of awaits, so a hang says where it hangs;
2. the task pytest is running (the test, or the fixture set up or torn down when the time ran out) is
   cancelled, as Ctrl-C does: the test fails with the timeout's message at the await it hung on, its
   fixtures' teardowns run, and the suite goes on with the same loop;
3. a test that is not on an event loop, or that is still running CANCEL_GRACE later (it swallowed the
   cancellation, or the loop is blocked), fails as pytest-timeout makes it fail.

`faulthandler_timeout` (pytest's own, also in pyproject.toml) stays the last resort: later than the bound, it
dumps every thread's C-level stack from a watchdog thread, which works even when the main thread never
returns to Python, and ends the run."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import traceback
from types import FrameType
from typing import Any

import pytest
from pytest_timeout import PYTEST_FAILURE_MESSAGE, is_debugging


def cancel_grace(timeout: float) -> float:
    """How long a cancelled test gets to end before it is failed the hard way."""
    return min(30.0, max(1.0, timeout / 10))


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    if settings.method != "signal" or threading.current_thread() is not threading.main_thread():
        return None  # pytest-timeout's own (the thread method dumps the stacks and ends the run)
    message = PYTEST_FAILURE_MESSAGE % settings.timeout

    def expired(signum: int, frame: FrameType | None) -> None:
        if not settings.disable_debugger_detection and is_debugging():
            return
        task = _running_task(frame)
        _dump(item, f"Timeout (>{settings.timeout}s): {item.nodeid}", task)
        if task is None:
            pytest.fail(message)
        task.cancel(f"{message} The test's task was cancelled where it waited (stacks above).")
        task.get_loop().call_soon_threadsafe(lambda: None)  # wake the loop from its select, as Ctrl-C does
        signal.signal(signal.SIGALRM, still_running)
        signal.setitimer(signal.ITIMER_REAL, cancel_grace(settings.timeout))

    def still_running(signum: int, frame: FrameType | None) -> None:
        _dump(item, f"Timeout: {item.nodeid} did not end when cancelled", _running_task(frame))
        pytest.fail(f"{message} Cancelling the test's task did not end it.")

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    item.cancel_timeout = cancel  # type: ignore[attr-defined]  # what pytest-timeout calls at the end
    signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    return True


def _running_task(frame: FrameType | None) -> asyncio.Task[Any] | None:
    """The task an event loop in this thread is running to completion (pytest-asyncio runs each test, and
    each async fixture's setup and teardown, as one: `Runner.run` -> `loop.run_until_complete(task)`)."""
    while frame is not None:
        if frame.f_code.co_name == "run_until_complete":
            future = frame.f_locals.get("future")
            if isinstance(future, asyncio.Task) and not future.done():
                return future
        frame = frame.f_back
    return None


def _dump(item: pytest.Item, title: str, task: asyncio.Task[Any] | None) -> None:
    terminal = item.config.get_terminal_writer()
    terminal.sep("+", title=title)
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        terminal.sep("~", title=f"Stack of thread {names.get(ident, '<unknown>')} ({ident})")
        terminal.write("".join(traceback.format_stack(frame)))
    if task is not None:
        for other in sorted(asyncio.all_tasks(task.get_loop()), key=lambda t: t is not task):
            mark = " (the test's)" if other is task else ""
            terminal.sep("~", title=f"asyncio task {other.get_name()}{mark}")
            terminal.write(_awaits(other) or f"{other!r}\n")
    terminal.sep("+", title=title)
    terminal.flush()


def _awaits(task: asyncio.Task[Any]) -> str:
    """Where a task waits: its coroutine and each coroutine it awaits, outermost first, then what the
    innermost one waits on (a future, a sleep...)."""
    lines: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            break
        lines += traceback.format_list([(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name, None)])
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    waiter = getattr(task, "_fut_waiter", None)  # the future the task is suspended on (asyncio keeps it so)
    if waiter is not None:
        lines.append(f"  waiting on {waiter!r}\n")
    return "".join(lines)
