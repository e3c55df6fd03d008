"""The suite's per-test bound on asyncio tests (tests/timeouts.py), in a pytest of its own with a 1 s bound:
a hung test fails with the timeout's message and a dump of every thread and asyncio task, the tests after it
run on the same event loop, and a test that swallows its cancellation or is not on a loop fails too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hilo.settings import REPO_ROOT

TESTS = """
import asyncio
import time


async def waits_for_good() -> None:
    await asyncio.Event().wait()


async def test_hangs() -> None:
    await waits_for_good()


async def test_the_loop_serves_the_next_test() -> None:
    await asyncio.sleep(0.01)


async def test_swallows_its_cancellation() -> None:
    for _ in range(2):
        try:
            await asyncio.sleep(3)
        except asyncio.CancelledError:
            pass


def test_not_on_a_loop() -> None:
    time.sleep(10)


async def test_and_the_last_one_passes() -> None:
    await asyncio.sleep(0.01)
"""

INI = """[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = session
asyncio_default_test_loop_scope = session
timeout = 1
timeout_method = signal
faulthandler_timeout = 60
"""


def test_a_hung_asyncio_test_is_cancelled_with_a_dump_and_the_suite_goes_on(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "conftest.py").write_text("from tests.timeouts import pytest_timeout_set_timer  # noqa: F401\n")
    (tmp_path / "test_hangs.py").write_text(TESTS)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "test_hangs.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    summary = {
        line.split(" ")[1].split("::")[1]: line.split(" ")[0]
        for line in out.splitlines()
        if "::" in line and line.startswith(("PASSED", "FAILED"))
    }
    assert summary == {
        "test_hangs": "FAILED",
        "test_the_loop_serves_the_next_test": "PASSED",
        "test_swallows_its_cancellation": "FAILED",
        "test_not_on_a_loop": "FAILED",
        "test_and_the_last_one_passes": "PASSED",
    }, out
    # The hung test: every thread's stack and every task's chain of awaits, down to what it waits on.
    assert "Timeout (>1.0s): test_hangs.py::test_hangs" in out
    assert "Stack of thread MainThread" in out
    assert "asyncio task" in out and "(the test's)" in out
    dump = out.split("Timeout (>1.0s): test_hangs.py::test_hangs", 2)[1]
    assert "in test_hangs" in dump and "in waits_for_good" in dump and "waiting on <Future pending" in dump
    assert "CancelledError: Timeout (>1.0s) from pytest-timeout. The test's task was cancelled" in out
    assert "Cancelling the test's task did not end it" in out  # the test that swallowed it
    assert "Failed: Timeout (>1.0s) from pytest-timeout." in out  # the one not on a loop
