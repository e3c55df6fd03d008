"""Recordings against the test database, with Asterisk's side stubbed: plaintext that a killed process left in
the work folder is deleted by the sweep (unless a store is using it), the work files are 0600 from their
first byte, and `recording.stored` / `recording.deleted` are written in the transaction of the change they
report (a failure of either leaves neither)."""

from __future__ import annotations

import io
import os
import stat
import uuid
import wave
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from recordings import catalog, retention
from recordings.calls import CallRecorder
from recordings.storage import private_dirs
from tests.stack.conftest import Stack
from tests.stack.test_recordings import _old_recording, recorder


def _wav(seconds: float = 0.5) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setparams((1, 2, 8000, 0, "NONE", "not compressed"))
        w.writeframes(b"\x10\x00" * int(8000 * seconds))
    return out.getvalue()


class StubAri:
    """Asterisk's side of storing: its spool holds one WAV per recording name."""

    app = "hilo-test"

    def __init__(self) -> None:
        self.handlers: list[object] = []
        self.modes: list[int] = []  # the mode of each downloaded file once its audio is written
        self.deleted: list[str] = []

    async def download_stored_recording(self, name: str, target: Path) -> int:
        audio = _wav()
        with target.open("wb") as out:  # as asterisk/ari.py writes it
            out.write(audio)
        self.modes.append(stat.S_IMODE(os.stat(target).st_mode))
        return len(audio)

    async def delete_stored_recording(self, name: str) -> None:
        self.deleted.append(name)

    async def stored_recordings(self) -> list[dict[str, str]]:
        return []


def stub_recorder(stack: Stack, work_dir: Path) -> tuple[CallRecorder, StubAri]:
    ari = StubAri()
    real = recorder(stack)
    assert stack.services.timeline is not None
    made = CallRecorder(
        ari=ari,  # type: ignore[arg-type]
        pool=stack.pool,
        timeline=stack.services.timeline,
        store=real.store,
        policy=real.policy,
        work_dir=work_dir,
    )
    return made, ari


async def _in_state(stack: Stack, state: str, *, updated_ago: timedelta = timedelta(0)) -> catalog.Recording:
    rec = await _old_recording(stack, days_ago=1, retention_days=30)
    await stack.pool.execute(
        "UPDATE recordings SET state = $2, ended_at = started_at + interval '1 second',"
        " updated_at = now() - make_interval(secs => $3) WHERE id = $1",
        rec.id,
        state,
        updated_ago.total_seconds(),
    )
    got = await catalog.get(stack.pool, rec.id)
    assert got is not None
    return got


@pytest.fixture(autouse=True)
def recordings_dir(stack: Stack) -> None:
    private_dirs(stack.settings.recordings_dir)  # _old_recording writes its plaintext there


class Refusals:
    """A trigger that makes PostgreSQL refuse chosen timeline events (by type and recording id)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.name = f"refuse_event_{uuid.uuid4().hex[:8]}"
        self.pairs: list[tuple[str, uuid.UUID]] = []

    async def install(self) -> None:
        condition = " OR ".join(
            f"(NEW.type = '{t}' AND NEW.data ->> 'recording_id' = '{rid}')" for t, rid in self.pairs
        )
        await self.stack.pool.execute(
            f"CREATE OR REPLACE FUNCTION {self.name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF {condition or 'false'} THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$"
        )

    async def refuse(self, type_: str, recording_id: uuid.UUID) -> None:
        self.pairs.append((type_, recording_id))
        await self.install()

    async def allow_all(self) -> None:
        self.pairs.clear()
        await self.install()


@pytest.fixture
async def refusals(stack: Stack) -> AsyncIterator[Refusals]:
    made = Refusals(stack)
    await made.install()
    await stack.pool.execute(
        f"CREATE TRIGGER {made.name} BEFORE INSERT ON timeline_events FOR EACH ROW EXECUTE FUNCTION {made.name}()"
    )
    try:
        yield made
    finally:
        await stack.pool.execute(f"DROP TRIGGER IF EXISTS {made.name} ON timeline_events")
        await stack.pool.execute(f"DROP FUNCTION IF EXISTS {made.name}()")


async def test_the_sweep_deletes_plaintext_left_behind_unless_a_store_is_using_it(stack: Stack, tmp_path: Path) -> None:
    work = tmp_path / "incoming"
    work.mkdir(mode=0o755)
    rec, _ = stub_recorder(stack, work)
    stored = await _in_state(stack, "stored")
    failed = await _in_state(stack, "failed")
    dead_store = await _in_state(stack, "storing", updated_ago=timedelta(minutes=30))  # its node died
    busy = await _in_state(stack, "storing")  # another process on this folder is storing it right now
    mine = uuid.uuid4()  # this process is storing it (no row needed)
    orphan = uuid.uuid4()  # no recording at all
    ids = [stored.id, failed.id, dead_store.id, busy.id, mine, orphan]
    for rid in ids:
        for name in (f"{rid}.asterisk.wav", f"{rid}.wav"):
            (work / name).write_bytes(_wav())
    (work / "README").write_text("not a recording's work file")
    rec._storing = {mine}  # as _store marks what it works on

    assert await rec.sweep() == 0  # nothing in Asterisk's spool to store

    left = sorted(p.name for p in work.iterdir())
    assert left == sorted(["README", *(f"{rid}{ext}" for rid in (busy.id, mine) for ext in (".asterisk.wav", ".wav"))])
    assert stat.S_IMODE(work.stat().st_mode) == 0o700
    # Nothing else changed: the rows are as they were.
    states = {r["id"]: r["state"] for r in await stack.pool.fetch("SELECT id, state FROM recordings")}
    assert [states[r.id] for r in (stored, failed, dead_store, busy)] == ["stored", "failed", "storing", "storing"]


async def test_a_store_keeps_its_plaintext_private_and_writes_stored_with_its_event(
    stack: Stack, tmp_path: Path, refusals: Refusals
) -> None:
    rec, ari = stub_recorder(stack, tmp_path / "incoming")
    good = await _in_state(stack, "storing")
    bad = await _in_state(stack, "storing")
    await refusals.refuse("recording.stored", bad.id)
    # (the two were made stored, with their events, before being set back to `storing`: only later ones count)
    last_event = await stack.pool.fetchval("SELECT coalesce(max(id), 0) FROM timeline_events")
    umask = os.umask(0o022)
    try:
        assert await rec._store(good) is not None
        assert await rec._store(bad) is None  # its event refused: the store fails as a whole
    finally:
        os.umask(umask)
    assert ari.modes == [0o600, 0o600], "the plaintext work file was readable by others"
    assert list((tmp_path / "incoming").iterdir()) == []

    rows = {r["id"]: r for r in await stack.pool.fetch("SELECT id, state, storage_key FROM recordings")}
    events = {
        r["data"]["recording_id"]
        for r in await stack.pool.fetch(
            "SELECT data FROM timeline_events WHERE type = 'recording.stored' AND id > $1", last_event
        )
    }
    assert rows[good.id]["state"] == "stored" and str(good.id) in events
    # Without its event the recording is not `stored`: it is `failed`, for the sweep to store again, and
    # Asterisk's plaintext is kept for that.
    assert rows[bad.id]["state"] == "failed" and str(bad.id) not in events
    assert ari.deleted == [good.asterisk_name]


async def test_retention_deletes_a_recording_and_writes_its_event_together(stack: Stack, refusals: Refusals) -> None:
    expired = await _old_recording(stack, days_ago=40, retention_days=30)
    await refusals.refuse("recording.deleted", expired.id)
    store = recorder(stack).store.backend
    assert stack.services.timeline is not None

    report = await retention.purge(stack.pool, store, stack.services.timeline, now=datetime.now(UTC))
    assert report.deleted == 0 and len(report.errors) == 1 and str(expired.id) in report.errors[0]
    row = await stack.pool.fetchrow("SELECT state, deleted_at FROM recordings WHERE id = $1", expired.id)
    assert row is not None and (row["state"], row["deleted_at"]) == ("stored", None), "deleted without its event"
    assert not await stack.pool.fetchval("SELECT count(*) FROM timeline_events WHERE type = 'recording.deleted'")

    # The next round, with the event allowed, deletes it with its event.
    await refusals.allow_all()
    mark = stack.hilo_events.mark()
    report = await retention.purge(stack.pool, store, stack.services.timeline, now=datetime.now(UTC))
    assert report.deleted == 1 and not report.errors
    await stack.hilo_events.expect("recording.deleted", within=5, since=mark, data__recording_id=str(expired.id))
    row = await stack.pool.fetchrow("SELECT state FROM recordings WHERE id = $1", expired.id)
    assert row is not None and row["state"] == "deleted"
