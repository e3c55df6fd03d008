"""The stack fixtures: a Hilo server of its own (Stasis app and namespace `hilo-test`, database
`hilo_test`, the tests' own configuration tests/dialplans/) run in-process against the real Asterisk,
PostgreSQL and Redis that `make stack` started.

After every test: no call task still running, no test channel or bridge left in Asterisk, no timeline
write left in the node's spool, no row left in the test database, and every agent available again. The
session starts so too, whatever an interrupted session left (`start_clean`)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from asterisk.ari import AriClient, AriError
from dialplans.models import load_routing
from flows.bundle import FlowBundle
from hilo.db import migrate
from hilo.notifier import events_channel
from hilo.settings import REPO_ROOT, Settings
from server.app import init_app
from server.seed import seed_demo
from server.services import SERVICES, Services
from tests.paths import DIALPLANS
from tests.stack.expect import EventStream, follow_ari, follow_redis
from tests.stack.faults import fault_report, pytest_runtest_call, pytest_terminal_summary

# The fault suite's fixture and hooks (tests/stack/faults.py), for every stack test.
__all__ = ["fault_report", "pytest_runtest_call", "pytest_terminal_summary"]

NAMESPACE = "hilo-test"
ENV_FILE = REPO_ROOT / ".run" / "env"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    unreported = []
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.stack)
            # A fault test reports what its fault cost, and what reports is a fault test (`make faults`).
            reports = "fault_report" in getattr(item, "fixturenames", ())
            if reports != (item.get_closest_marker("fault") is not None):
                unreported.append(item.nodeid)
    if unreported:
        raise pytest.UsageError(f"a test marked `fault` must take `fault_report`, and only those do: {unreported}")


# Stack tests share one Asterisk, one `hilo-test` Stasis app and one test database, and empty its tables
# between tests: two sessions at once on one machine would end each other's calls and rows. A session that
# runs stack tests holds this lock from collection to exit (the kernel drops it if the process dies), and a
# second one waits its turn, saying so, for a bounded time.
STACK_LOCK = Path(tempfile.gettempdir()) / "hilo-stack-tests.lock"
STACK_LOCK_WAIT_S = 45 * 60
_held: list[int] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    if _held or not any(item.get_closest_marker("stack") for item in session.items):
        return
    fd = os.open(STACK_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    start, told = time.monotonic(), -30.0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            waited = time.monotonic() - start
            if waited > STACK_LOCK_WAIT_S:
                os.close(fd)
                pytest.exit(f"another stack-test session has held {STACK_LOCK} for {STACK_LOCK_WAIT_S} s", 1)
            if waited - told >= 30:
                print(f"waiting {waited:.0f} s for another stack-test session ({STACK_LOCK})", file=sys.stderr)
                told = waited
            time.sleep(1)
    _held.append(fd)


def read_env() -> dict[str, str]:
    if not ENV_FILE.exists():
        pytest.fail(f"{ENV_FILE} is missing: start the stack with `make stack` (or run `make test`)")
    pairs = (line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.startswith("#")}


@dataclass
class Stack:
    env: dict[str, str]
    settings: Settings
    services: Services
    client: TestClient  # type: ignore[type-arg]
    observer: AriClient  # subscribed to everything in Asterisk, for declared ARI expectations
    ari_events: EventStream
    hilo_events: EventStream
    token: str
    follower: asyncio.Task[None] | None = None  # follows Hilo's events on Redis into hilo_events

    def check_followers(self) -> None:
        """The event streams are still fed: without this, a dead follower makes every later test fail with
        a misleading "expected X within N s"."""
        if self.follower is not None and self.follower.done():
            error = None if self.follower.cancelled() else self.follower.exception()
            raise AssertionError(f"the follower of Hilo's events on Redis has stopped: {error!r}")

    @property
    def pool(self) -> asyncpg.Pool:
        assert self.services.pool is not None
        return self.services.pool


@pytest.fixture(scope="session")
async def stack() -> AsyncIterator[Stack]:
    env = read_env()
    settings = Settings(
        namespace=NAMESPACE,
        database_url=SecretStr(env["HILO_TEST_DATABASE_URL"]),
        ring_timeout_s=8,
        queue_max_wait_s=30,
        wrapup_s=0,
        recordings_dir=REPO_ROOT / ".run" / "recordings-test",  # not the demo server's recordings
        dialplans_dir=DIALPLANS,  # the tests' own configuration (tests/paths.py), never what admins edit
    )
    await start_clean(settings)
    app = init_app(settings)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    services = app[SERVICES]

    observer = AriClient(
        settings.ari_url,
        settings.ari_user,
        settings.ari_password.get_secret_value(),
        f"{NAMESPACE}-observer",
        subscribe_all=True,
    )
    ari_events, hilo_events = EventStream("ARI"), EventStream("Hilo")
    follow_ari(observer, ari_events)
    await observer.start()
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    ready = asyncio.Event()
    follower = asyncio.create_task(follow_redis(redis, events_channel(NAMESPACE), hilo_events, ready))
    await asyncio.wait_for(ready.wait(), 5)
    await observer.wait_connected(10)
    assert services.ari is not None
    await services.ari.wait_connected(10)
    assert services.ami is not None
    await asyncio.wait_for(services.ami.logged_in.wait(), 10)
    # A session stopped mid-call (killed, timed out) can leave its calls up in Asterisk and its recordings in
    # Asterisk's spool; the tests start without them (the checks after each test then see only its own).
    for channel in await observer.request("GET", "/channels"):
        if channel["id"].startswith(OURS):
            with contextlib.suppress(AriError):
                await observer.hangup(channel["id"])
    for bridge in await observer.request("GET", "/bridges"):
        if bridge["id"].startswith(OURS):
            with contextlib.suppress(AriError):
                await observer.destroy_bridge(bridge["id"])
    for recording in await observer.request("GET", "/recordings/stored"):
        if recording["name"].startswith(f"{NAMESPACE}-"):
            with contextlib.suppress(AriError):
                await observer.request("DELETE", f"/recordings/stored/{recording['name']}")

    yield Stack(
        env,
        settings,
        services,
        client,
        observer,
        ari_events,
        hilo_events,
        settings.api_token.get_secret_value(),
        follower,
    )

    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follower
    await redis.aclose()
    await observer.close()
    await client.close()


# Tables that hold configuration the tests share rather than rows a test makes.
KEPT_TABLES = frozenset({"schema_migrations", "agents"})
OURS = ("sim-", f"{NAMESPACE}-")  # the channels and bridges of the tests' calls


async def start_clean(settings: Settings) -> None:
    """Before the first test, what every test leaves behind is made true too: no row, only the configuration's
    agents, no key in the namespace, nothing spooled or recorded. A session stopped mid-way (killed, timed
    out) leaves agents busy or ringing, rows and live routing state (which Redis keeps on disk), and its
    spooled writes, which the first test would otherwise inherit."""
    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        await migrate(conn)
        await clean_rows_and_agents(conn, settings)
    finally:
        await conn.close()
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    try:
        await delete_namespace(redis, settings.namespace)
    finally:
        await redis.aclose()
    spool = settings.spool_dir / f"{settings.namespace}.spool"
    for path in (spool, spool.with_name(spool.name + ".done"), spool.with_name(spool.name + ".rejected")):
        path.unlink(missing_ok=True)
    await asyncio.to_thread(shutil.rmtree, settings.recordings_dir / "store", True)


async def clean_rows_and_agents(db: asyncpg.Pool | asyncpg.Connection, settings: Settings) -> None:
    await truncate_test_rows(db)
    configured = [agent.id for agent in load_routing(settings.dialplans_dir).agents]
    await db.execute("DELETE FROM agents WHERE NOT (id = ANY($1::text[]))", configured)


async def delete_namespace(redis: aioredis.Redis, namespace: str) -> None:
    keys = [key async for key in redis.scan_iter(match=f"{namespace}:*", count=1000)]
    for start in range(0, len(keys), 1000):
        await redis.delete(*keys[start : start + 1000])


async def truncate_test_rows(pool: asyncpg.Pool | asyncpg.Connection) -> None:
    """Empty every table a test may have written to (all but KEPT_TABLES), so new tables are covered too."""
    names = [
        r["tablename"]
        for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        if r["tablename"] not in KEPT_TABLES
    ]
    if not names:
        return
    for attempt in range(5):
        try:
            await pool.execute(f"TRUNCATE {', '.join(map(quote_ident, names))} RESTART IDENTITY CASCADE")
            return
        except (asyncpg.DeadlockDetectedError, asyncpg.exceptions.LockNotAvailableError):
            # A background worker of the test server (transcripts, outbox, ...) read the same tables in
            # another order, or held one longer than the pool's lock bound (HILO_DB_LOCK_TIMEOUT_S):
            # PostgreSQL gave up on one side, so the truncation can simply be tried again.
            if attempt == 4:
                raise


async def restore_working_copy_flows(services: Services) -> None:
    """Tests may apply flow versions: the next test starts again on the tests' own copy (tests/dialplans/)."""
    assert services.flows is not None
    await services.flows.versions.apply(
        FlowBundle.from_dir(services.settings.dialplans_dir), applied_by="system:tests@system", comment="working copy"
    )
    assert not isinstance(await services.flows.reload(), list)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _wait_calls_finished(services: Services, within: float) -> None:
    assert services.calls is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while services.calls.tasks and loop.time() < deadline:
        await asyncio.wait(list(services.calls.tasks.values()), timeout=deadline - loop.time())


@pytest.fixture(autouse=True)
async def clean_stack(stack: Stack) -> AsyncIterator[None]:
    assert stack.services.board is not None and stack.services.ari is not None
    await stack.services.ari.wait_connected(30)  # e.g. still reconnecting after a test restarted Asterisk
    await stack.observer.wait_connected(30)
    stack.check_followers()
    await seed_demo(stack.pool, stack.settings.dialplans_dir, stack.settings.default_region)
    stack.ari_events.baseline = stack.ari_events.mark()
    stack.hilo_events.baseline = stack.hilo_events.mark()
    yield
    await _wait_calls_finished(stack.services, 10)
    leftovers = []
    for channel in await stack.observer.request("GET", "/channels"):
        if not channel["id"].startswith(OURS):
            continue
        try:  # a channel hung up a moment ago may still be on its way out
            await stack.ari_events.expect("ChannelDestroyed", within=5, since=0, channel__id=channel["id"])
        except AssertionError:
            leftovers.append(channel["id"])
            await stack.observer.hangup(channel["id"])
    await _wait_calls_finished(stack.services, 10)
    bridges = []
    for bridge in await stack.observer.request("GET", "/bridges"):
        if not bridge["id"].startswith(OURS):
            continue
        try:  # a bridge emptied a moment ago (its recorder leaving last) may still be on its way out
            await stack.ari_events.expect("BridgeDestroyed", within=5, since=0, bridge__id=bridge["id"])
        except AssertionError:
            bridges.append(bridge["id"])
            with contextlib.suppress(AriError):
                await stack.observer.destroy_bridge(bridge["id"])
    open_calls = list(stack.services.calls.tasks) if stack.services.calls else []
    # Timeline writes still in the node's spool (the store was slow) are written before the rows go.
    assert stack.services.timeline is not None
    spooled = await stack.services.timeline.written(30)
    await truncate_test_rows(stack.pool)
    # Recording files of the rows just emptied (calls to a recording queue are recorded).
    await asyncio.to_thread(shutil.rmtree, stack.settings.recordings_dir / "store", True)
    await restore_working_copy_flows(stack.services)
    await stack.services.board.clear()
    await stack.services.board.load(load_routing(stack.settings.dialplans_dir).agents)
    assert not leftovers, f"test left channels behind: {leftovers}"
    assert not bridges, f"test left bridges behind: {bridges}"
    assert not open_calls, f"call tasks still running: {open_calls}"
    assert spooled, "timeline writes were still in the spool 30 s after the test"
