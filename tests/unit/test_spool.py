"""The node's durable spool (hilo/spool.py): records accepted are on disk, survive a crash, are replayed in
order, each written once (at most the one in flight again, and the writes are idempotent), and a torn or
refused record holds up nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from hilo.spool import Spool, SpoolFull


def opened(path: Path, max_bytes: int = 1_000_000) -> Spool:
    spool = Spool(path, max_bytes)
    spool.open()
    return spool


class Store:
    """A store that keeps what it is given by id (as ON CONFLICT DO NOTHING does) and can be down."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.applied = 0
        self.down = False
        self.refuse: set[str] = set()

    async def apply(self, record: dict[str, Any]) -> None:
        if self.down:
            raise ConnectionRefusedError("store down")
        if record["uid"] in self.refuse:
            raise ValueError("bad data")
        self.applied += 1
        if record["uid"] not in self.rows:
            self.rows[record["uid"]] = record
            self.order.append(record["uid"])


async def replay_until_empty(spool: Spool, store: Store) -> None:
    task = asyncio.create_task(spool.run(store.apply, transient=(OSError,)))
    try:
        last = spool.last()
        if last is not None:
            assert await spool.written(last, timeout=10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_records_are_on_disk_when_accepted_and_replayed_in_order(tmp_path: Path) -> None:
    spool = opened(tmp_path / "node.spool")
    for n in range(5):
        await spool.append({"uid": f"e{n}", "n": n})
    lines = (tmp_path / "node.spool").read_bytes().splitlines()
    assert [json.loads(line)["uid"] for line in lines] == ["e0", "e1", "e2", "e3", "e4"]
    assert len(spool) == 5

    store = Store()
    await replay_until_empty(spool, store)
    assert store.order == ["e0", "e1", "e2", "e3", "e4"]
    assert store.applied == 5
    assert len(spool) == 0
    assert (tmp_path / "node.spool").stat().st_size == 0  # emptied once all is written
    spool.close()


async def test_a_crash_keeps_what_was_accepted_and_the_replay_goes_on_where_it_was(tmp_path: Path) -> None:
    path = tmp_path / "node.spool"
    spool = opened(path)
    entries = [await spool.append({"uid": f"e{n}"}) for n in range(4)]
    store = Store()
    await store.apply(entries[0].record)
    await spool.done(entries[0])  # e0 written, and the spool told so
    await store.apply(entries[1].record)  # e1 written; the node dies before telling the spool
    spool.close()

    recovered = opened(path)
    assert [e.record["uid"] for e in recovered.pending()] == ["e1", "e2", "e3"]
    await replay_until_empty(recovered, store)
    # e1 was applied twice (before and after the crash) with one effect; e0 was not applied again
    assert store.order == ["e0", "e1", "e2", "e3"]
    assert store.applied == 5
    recovered.close()


async def test_a_torn_last_line_was_never_accepted_and_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "node.spool"
    spool = opened(path)
    await spool.append({"uid": "e0"})
    spool.close()
    path.write_bytes(path.read_bytes() + b'{"uid": "e1", "da')  # the node died in the middle of an append
    recovered = opened(path)
    assert [e.record["uid"] for e in recovered.pending()] == ["e0"]
    await recovered.append({"uid": "e2"})
    recovered.close()
    again = opened(path)
    assert [e.record["uid"] for e in again.pending()] == ["e0", "e2"]
    again.close()


async def test_a_replay_waits_for_the_store_and_a_refused_record_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "node.spool"
    spool = opened(path)
    for uid in ("e0", "bad", "e2"):
        await spool.append({"uid": uid})
    store = Store()
    store.down = True
    store.refuse = {"bad"}
    task = asyncio.create_task(spool.run(store.apply, transient=(OSError,)))
    try:
        first = spool.head()
        assert first is not None
        assert not await spool.written(first, timeout=0.5)  # the store is down: nothing moves
        assert len(spool) == 3
        store.down = False
        last = spool.last()
        assert last is not None and await spool.written(last, timeout=10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert store.order == ["e0", "e2"]
    rejected = [json.loads(line) for line in (tmp_path / "node.spool.rejected").read_text().splitlines()]
    assert [json.loads(r["line"])["uid"] for r in rejected] == ["bad"]
    assert rejected[0]["reason"].startswith("ValueError")
    spool.close()


async def test_a_full_spool_refuses_and_says_so(tmp_path: Path) -> None:
    spool = opened(tmp_path / "node.spool", max_bytes=40)
    await spool.append({"uid": "e0"})
    with pytest.raises(SpoolFull, match="is full"):
        await spool.append({"uid": "e1", "data": "x" * 40})
    assert len(spool) == 1
    spool.close()


async def test_records_appended_while_replaying_are_replayed_too(tmp_path: Path) -> None:
    spool = opened(tmp_path / "node.spool")
    store = Store()
    task = asyncio.create_task(spool.run(store.apply, transient=(OSError,)))
    try:
        entries = [await spool.append({"uid": f"e{n}"}) for n in range(20)]
        assert await spool.written(entries[-1], timeout=10)
        late = await spool.append({"uid": "late"})
        assert await spool.written(late, timeout=10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert store.order == [f"e{n}" for n in range(20)] + ["late"]
    spool.close()

