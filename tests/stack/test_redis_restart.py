"""The shared Redis really restarted (SHUTDOWN, then started again on its configuration), with persistence on
as the stack and the compose run it (`appendonly yes`): the new server replays its append-only file, so
routing finds keys written by another server life. Calls in flight keep going: the one talking to bob is
never touched, the one waiting keeps its place and reaches alice once she is back, and routing's state is
the one rebuilt from PostgreSQL (its marker of the new life), not the one replayed.

The other Redis tests (test_redis_outages.py) cut the test server's own connections; this one stops the
server everyone uses (the stack tests take turns, see conftest.py), and always starts it again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from tests.stack.calls import hang_up, place
from tests.stack.conftest import Stack
from tests.stack.expect import eventually
from tests.stack.faults import FaultReport, calls_up_during, kept_by_callers, timeline_missing
from tests.stack.test_redis_outages import (  # noqa: F401 (sales_waits_long is a fixture)
    SALES,
    SUPPORT,
    engine_of,
    run_id,
    sales_waits_long,
)

TALKING, WAITING = "+34911222333", "+34911000178"  # Ana García (a demo customer), a caller new to Hilo


async def _answers(url: str, other_than: str) -> bool:
    """The new server has loaded its file (INFO answers while it loads; other commands get LOADING)."""
    client = aioredis.from_url(url)
    try:
        info = await client.info()
        return str(info["run_id"]) != other_than and int(info["loading"]) == 0
    except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError, OSError):
        return False
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def redis_restarted(url: str) -> AsyncIterator[str]:
    """Stops the Redis server at `url` as an admin would (SHUTDOWN: it flushes its append-only file) and
    starts it again with the configuration file it was started with. Yields the new server's run_id."""
    admin = aioredis.from_url(url)
    info = await admin.info("server")
    config_file, before = str(info["config_file"]), str(info["run_id"])
    assert config_file, "the stack's Redis was started without a configuration file"
    assert (await admin.config_get("appendonly"))["appendonly"] == "yes"
    try:
        with contextlib.suppress(redis.exceptions.ConnectionError):
            await admin.shutdown()
    finally:
        await admin.aclose()
        # Started again whatever happened above: every later test needs it.
        started = await asyncio.create_subprocess_exec(
            "redis-server", config_file, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
        )
        output, _ = await asyncio.wait_for(started.communicate(), 30)
        assert started.returncode == 0, output.decode(errors="replace")
        await eventually(lambda: _answers(url, before), within=30, what="Redis started again (a new run_id)")
    client = aioredis.from_url(url)
    try:
        yield await run_id(client)
    finally:
        await client.aclose()


@pytest.mark.fault
@pytest.mark.usefixtures("sales_waits_long")
async def test_a_real_redis_restart_on_its_file_costs_no_call(stack: Stack, fault_report: FaultReport) -> None:
    engine = engine_of(stack)
    published = stack.hilo_events.mark()
    url = stack.settings.redis_url.get_secret_value()
    talking, started = await place(stack, TALKING, SUPPORT)
    talking_id = started["interaction_id"]
    await stack.hilo_events.expect("agent.answered", within=30, interaction_id=talking_id, data__agent="bob")
    bob_leg = await stack.ari_events.expect(
        "ChannelEnteredBridge", within=5, channel__name=lambda n: n.startswith("PJSIP/agent-bob-")
    )
    assert await engine.set_state("alice", "away", "test")  # sales has nobody: the next caller waits
    waiting, queued = await place(stack, WAITING, SALES)
    waiting_id = queued["interaction_id"]
    await stack.hilo_events.expect("routing.queued", within=20, interaction_id=waiting_id)
    enqueued_at = await eventually(
        lambda: stack.pool.fetchval(
            "SELECT enqueued_at FROM routing_interactions WHERE interaction_id = $1::uuid", waiting_id
        ),
        within=10,
        what="routing's record of the waiting caller in PostgreSQL",
    )
    legs = {talking.caller_leg, talking.ivr_leg, bob_leg["channel"]["id"], waiting.caller_leg, waiting.ivr_leg}
    mark = stack.ari_events.mark()

    restart_began = datetime.now(UTC)
    async with redis_restarted(url) as life:
        # Routing sees the marker of another life and rebuilds from PostgreSQL: the marker, set last, is this
        # life's once the rebuild is over.
        async def rebuilt() -> bool:
            try:
                return await engine.redis.get(f"{engine.state.prefix}:built") == life.encode()
            except redis.exceptions.ConnectionError:  # the test's client reconnecting, as the server's do
                return False

        await eventually(rebuilt, within=15, what="routing rebuilt from PostgreSQL in the new Redis life")

    in_flight = await calls_up_during(stack.pool, restart_began, datetime.now(UTC))
    assert set(in_flight) == {talking_id, waiting_id}
    # Rebuilt from the truth: bob busy on the call he is on, the waiting caller first in sales, in their place.
    bob = await engine.agent("bob")
    assert bob.get("load:voice") == "1", bob
    assert await engine.position(waiting_id) == 1
    assert (
        await stack.pool.fetchval(
            "SELECT enqueued_at FROM routing_interactions WHERE interaction_id = $1::uuid", waiting_id
        )
        == enqueued_at
    )
    # No channel of either call went while Redis was away and back.
    await stack.ari_events.expect_none("ChannelDestroyed", within=0.1, since=mark, channel__id=lambda i: i in legs)

    # Alice comes back: the waiting caller reaches her; both calls end as calls do.
    assert await engine.set_state("alice", "available")
    await stack.hilo_events.expect("agent.answered", within=30, interaction_id=waiting_id, data__agent="alice")
    for call, interaction in ((talking, talking_id), (waiting, waiting_id)):
        ended = await hang_up(stack, call, interaction)
        assert ended["data"] == {"outcome": "completed", "hangup_by": "caller"}
    fault = fault_report.fault("Redis restarted on its append-only file")
    fault.calls(in_flight=len(in_flight), kept=await kept_by_callers(stack.pool, in_flight))
    answered = ("interaction.started", "agent.answered", "interaction.ended")
    required = {talking_id: answered, waiting_id: (*answered, "routing.queued")}
    fault.timeline(*await timeline_missing(stack.pool, stack.hilo_events.events[published:], required))
