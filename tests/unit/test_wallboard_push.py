"""Wallboard pushes: every page gets the picture at once (not one after another), and a page that cannot take
it in time, or fails, is dropped and told so (its socket is closed, the page reconnects), without holding up
the others."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest
import redis.asyncio as aioredis

from reports import monitor as monitor_module
from reports.monitor import WallboardMonitor
from reports.service import Reports
from reports.wallboard import Wallboard
from reports.wallboard_view import ALL
from tests.unit.test_wallboard_view import snapshot


def new_monitor() -> WallboardMonitor:
    return WallboardMonitor(cast(Wallboard, None), cast(Reports, None), cast(aioredis.Redis, None), "test")


async def test_pages_get_the_picture_together_and_a_stalled_one_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitor_module, "PUSH_TIMEOUT_S", 0.5, raising=False)
    board = new_monitor()
    fast_got = asyncio.Event()
    received: dict[str, list[str]] = {"waiting": [], "fast": []}
    dropped: list[str] = []
    never = asyncio.Event()

    async def waiting(text: str) -> None:
        # Finishes only once `fast` has its picture: sent one after another (this page first), it would
        # wait the whole timeout and be dropped.
        await fast_got.wait()
        received["waiting"].append(text)

    async def fast(text: str) -> None:
        received["fast"].append(text)
        fast_got.set()

    async def stalled(text: str) -> None:  # a socket whose peer stopped reading
        await never.wait()

    async def broken(text: str) -> None:
        raise ConnectionResetError("gone")

    board._viewers = {waiting: ALL, stalled: ALL, broken: ALL, fast: ALL}
    board._on_drop = {stalled: lambda: dropped.append("stalled"), broken: lambda: dropped.append("broken")}

    await asyncio.wait_for(board._push(snapshot()), 5)

    assert len(received["fast"]) == 1 and received["waiting"] == received["fast"]
    assert set(board._viewers) == {waiting, fast}
    assert sorted(dropped) == ["broken", "stalled"]
    assert board._on_drop == {}


async def test_a_page_that_stalls_on_its_first_picture_is_dropped_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitor_module, "PUSH_TIMEOUT_S", 0.2, raising=False)
    board = new_monitor()
    board.snapshot = snapshot()
    dropped: list[bool] = []
    never = asyncio.Event()

    async def stalled(text: str) -> None:
        await never.wait()

    await asyncio.wait_for(board.add_viewer(stalled, ALL, on_drop=lambda: dropped.append(True)), 5)
    assert dropped == [True] and stalled not in board._viewers
