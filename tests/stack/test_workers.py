"""Two workers of one deployment (`hilo serve --workers 2`), here two in-process servers of namespace
`hilo-test` with the Stasis apps `hilo-test-w1` and `hilo-test-w2`: the dialplan (context hilo-stasis) hands
new calls to both, a call goes to the live one when the other is stopped, and hold sent to the worker that
does not own a call is carried out by the one that does."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

from aiohttp.test_utils import TestClient, TestServer

from asterisk.ami import AmiClient
from asterisk.ari import AriClient
from asterisk.events import StasisStart
from server.app import init_app
from server.services import SERVICES, Services
from server.simcall import SimCall, originate_sim_call
from tests.stack.conftest import NAMESPACE, Stack
from tests.stack.dialplan_context import EXTENSIONS_CONF, add_context, remove_context
from tests.stack.test_screenpop import bearer, sign_in

KNOWN_CALLER = "+34911222333"


@contextlib.asynccontextmanager
async def worker(stack: Stack, index: int) -> AsyncIterator[tuple[TestClient, Services]]:  # type: ignore[type-arg]
    settings = stack.settings.model_copy(update={"workers": 2, "worker": index})
    app = init_app(settings)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    services = app[SERVICES]
    try:
        assert services.ari is not None and services.ari.app == f"{NAMESPACE}-w{index}"
        await services.ari.wait_connected(10)
        yield client, services
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def two_workers(stack: Stack) -> AsyncIterator[list[tuple[TestClient, Services]]]:  # type: ignore[type-arg]
    try:
        async with worker(stack, 1) as w1, worker(stack, 2) as w2:
            yield [w1, w2]
    finally:  # the session's one-process server takes the test calls again
        await stack.observer.request(
            "POST", "/asterisk/variable", params={"variable": f"HILO_WORKERS_{NAMESPACE}", "value": ""}
        )


def owner(workers: list[tuple[TestClient, Services]], channel_id: str) -> int:  # type: ignore[type-arg]
    owners = [i for i, (_, s) in enumerate(workers) if s.calls is not None and channel_id in s.calls.stasis.channels]
    assert len(owners) == 1, f"channel {channel_id} is owned by workers {owners}"
    return owners[0]


async def placed(stack: Stack, digits: str = "") -> tuple[SimCall, str]:
    mark = stack.hilo_events.mark()
    call = await originate_sim_call(stack.observer, "100", KNOWN_CALLER, digits, namespace=NAMESPACE)
    started = await stack.hilo_events.expect(
        "interaction.started", within=10, since=mark, data__channel_ref=call.ivr_leg
    )
    return call, str(started["interaction_id"])


async def hung_up(stack: Stack, call: SimCall, interaction: str) -> None:
    await stack.observer.hangup(call.caller_leg)
    await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)


async def test_calls_land_on_both_workers_and_on_the_live_one_when_the_other_stopped(stack: Stack) -> None:
    async with two_workers(stack) as workers:
        seen: set[int] = set()
        for _ in range(12):  # each call starts at a random worker: both get calls
            call, interaction = await placed(stack)
            seen.add(owner(workers, call.ivr_leg))
            assert stack.services.calls is not None and call.ivr_leg not in stack.services.calls.tasks
            await hung_up(stack, call, interaction)
            if seen == {0, 1}:
                break
        assert seen == {0, 1}, "the calls all went to one worker"

        await workers[1][0].close()  # worker 2 stops: Stasis() to its app fails at once, and worker 1 takes the call
        for _ in range(4):
            call, interaction = await placed(stack)
            assert owner(workers[:1], call.ivr_leg) == 0
            await hung_up(stack, call, interaction)


async def test_hold_sent_to_the_worker_not_owning_the_call_is_carried_out_by_the_owner(stack: Stack) -> None:
    async with two_workers(stack) as workers:
        mark = stack.hilo_events.mark()
        call, interaction = await placed(stack, "2")  # the demo flow's support choice: rings bob
        await stack.hilo_events.expect("agent.answered", within=30, since=mark, interaction_id=interaction)
        mine = owner(workers, call.ivr_leg)
        other_client, other = workers[1 - mine]
        assert other.calls is not None and other.calls.owners is not None
        bob = await sign_in(stack, "bob-workers", "agent", "bob")

        resp = await other_client.post(f"/api/calls/{interaction}/hold", headers=bearer(bob))
        assert (resp.status, await resp.json()) == (200, {"interaction_id": interaction, "held": True, "changed": True})
        await stack.hilo_events.expect(
            "call.held", within=5, interaction_id=interaction, data__by="user:bob-workers@api"
        )
        owning = workers[mine][1].calls
        assert owning is not None and owning.live.get(interaction).held, "the owner holds the caller"
        resp = await other_client.post(f"/api/calls/{interaction}/unhold", headers=bearer(bob))
        assert (resp.status, (await resp.json())["changed"]) == (200, True)
        await stack.hilo_events.expect("call.unheld", within=5, interaction_id=interaction)

        await hung_up(stack, call, interaction)
        gone = await other_client.post(f"/api/calls/{interaction}/hold", headers=bearer(bob))
        assert gone.status == 409, "a call over is on no worker: a clear 409"
        assert "any worker" in (await gone.json())["reason"]


async def test_a_failed_transfer_comes_back_to_the_worker_that_owns_the_call(stack: Stack) -> None:
    # This tree's hilo-transfer-failed, put into Asterisk under another name for the test (the shared
    # Asterisk runs the extensions.conf it was started with).
    section = EXTENSIONS_CONF.read_text().split("[hilo-transfer-failed]\n", 1)[1].split("\n[", 1)[0]
    text = f"[{NAMESPACE}-transfer-failed]\n{section}\n"
    settings = stack.settings
    ami = AmiClient(settings.ami_host, settings.ami_port, settings.ami_user, settings.ami_password.get_secret_value())
    owner = AriClient(settings.ari_url, settings.ari_user, settings.ari_password.get_secret_value(), f"{NAMESPACE}-w2")
    back: asyncio.Future[StasisStart] = asyncio.get_running_loop().create_future()

    def on_event(event: object) -> None:
        if isinstance(event, StasisStart) and not back.done():
            back.set_result(event)

    owner.handlers.append(on_event)
    await ami.start()
    await owner.start()
    caller, ivr = f"sim-{uuid.uuid4()}", f"sim-{uuid.uuid4()}"
    try:
        await asyncio.wait_for(ami.logged_in.wait(), 10)
        await add_context(ami, f"{NAMESPACE}-transfer-failed", text)
        await owner.wait_connected(10)
        await owner.originate(
            f"Local/failed@{NAMESPACE}-transfer-failed",
            context="hilo-caller-sim",
            extension="s",
            channel_id=caller,
            other_channel_id=ivr,
            variables={  # what a transfer whose target did not answer leaves on the channel
                "__HILO_OWNER": owner.app,
                "__HILO_APP": f"{NAMESPACE}-nobody",
                "__HILO_TRANSFER_RETURN": "transfer-failed",
                "__HILO_TRANSFER_TARGET": "600112233",
                "__DIALSTATUS": "NOANSWER",
            },
        )
        start = await asyncio.wait_for(back, 10)
        assert (start.channel.id, start.args) == (ivr, ["transfer-failed", "600112233", "NOANSWER"])
    finally:
        await owner.hangup(caller)
        await stack.ari_events.expect("ChannelDestroyed", within=5, channel__id=ivr)
        await remove_context(ami, f"{NAMESPACE}-transfer-failed", text)
        await owner.close()
        await ami.close()


async def test_an_unlisted_number_reaches_hilo_through_hilo_stasis(stack: Stack) -> None:
    # This tree's hilo-unlisted-numbers, under another name (as above); hilo-stasis is in hilo-numbers.conf.
    # One process here: starting workers reloads the dialplan (their numbers), which drops a context added
    # through AMI; the dispatch among workers is the first test's.
    section = EXTENSIONS_CONF.read_text().split("[hilo-unlisted-numbers]\n", 1)[1].split("\n[", 1)[0]
    text = f"[{NAMESPACE}-unlisted]\n{section}\n"
    settings = stack.settings
    ami = AmiClient(settings.ami_host, settings.ami_port, settings.ami_user, settings.ami_password.get_secret_value())
    await ami.start()
    try:
        await asyncio.wait_for(ami.logged_in.wait(), 10)
        await add_context(ami, f"{NAMESPACE}-unlisted", text)
        mark = stack.hilo_events.mark()
        caller, ivr = f"sim-{uuid.uuid4()}", f"sim-{uuid.uuid4()}"
        await stack.observer.originate(
            f"Local/555@{NAMESPACE}-unlisted",
            context="hilo-caller-sim",
            extension="s",
            caller_id=f'"" <{KNOWN_CALLER}>',
            channel_id=caller,
            other_channel_id=ivr,
            variables={"SIM_HOLD": "600", "__HILO_APP": NAMESPACE},
        )
        started = await stack.hilo_events.expect(
            "interaction.started", within=10, since=mark, data__channel_ref=ivr, data__dialed="555"
        )
        await stack.hilo_events.expect("ivr.no_flow", within=5, interaction_id=started["interaction_id"])
        await stack.hilo_events.expect("interaction.ended", within=20, interaction_id=started["interaction_id"])
        variable = await stack.observer.request(
            "GET", f"/channels/{ivr}/variable", params={"variable": "HILO_OWNER"}, missing_ok=True
        )
        assert variable in (None, {"value": NAMESPACE}), variable  # set by hilo-stasis (None: already gone)
    finally:
        with contextlib.suppress(Exception):
            await stack.observer.hangup(caller)
        await remove_context(ami, f"{NAMESPACE}-unlisted", text)
        await ami.close()
