"""Waiting in a queue over real calls: the announcements the caller hears over the music (their place in the
engine's order and the estimated wait), an offer that cuts an announcement short, the end of the wait
continuing the flow at a voicemail node, and a callback that keeps the caller's place: booked from the
queue, dialled back (agent first, then the customer) when the agent is free, ahead of a later caller."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dialplans.models import Queue, QueueAnnounce, load_routing
from ivr import waiting
from routing.engine import RoutingEngine
from server.simcall import SimCall
from speech.tts import prompt_key, voice_for
from tests.stack.calls import place
from tests.stack.conftest import NAMESPACE, Stack
from tests.stack.expect import eventually
from tests.stack.lines import apply_line

NUMBER = "170"
ANA = "+34911222333"  # a demo customer
LATER = "+34600112233"
NEVER_ANSWERS = "+34910000000"  # hilo-callback-sim: numbers ending in 0000 ring and ring
WAIT_FLOW = """
flow: waitline
language: en
start: wait
nodes:
  wait:
    kind: queue
    queue: support
    max_wait_s: {max_wait}
    on_timeout: {on_timeout}
    callback_offer: {{every_s: 2, key: "1", prompt: "Press 1 to be called back, keeping your place.", next: call_me}}
  call_me:
    kind: callback
    prompt: We will call you back when it is your turn.
  message:
    kind: voicemail
    prompt: Please leave a message after the tone.
"""


async def position_is(engine: RoutingEngine, interaction: str, wanted: int, *, within: float = 5) -> None:
    """A declared expectation on routing: the interaction's place in its queue becomes `wanted`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (seen := await engine.position(interaction)) != wanted:
        if loop.time() > deadline:
            raise AssertionError(f"position of {interaction} is {seen}, not {wanted}, after {within}s")
        await asyncio.sleep(0.05)


def engine_of(stack: Stack) -> RoutingEngine:
    assert stack.services.routing is not None
    return stack.services.routing


def media_of(stack: Stack, text: str) -> str:
    assert stack.services.calls is not None
    return stack.services.calls.prompts.media_uri(prompt_key(text, voice_for("en", None), "en"))


def _support(stack: Stack) -> Queue:
    return next(q for q in load_routing(stack.settings.dialplans_dir).queues if q.id == "support")


@pytest.fixture
async def bob_away(stack: Stack) -> AsyncIterator[RoutingEngine]:
    """Nobody takes support calls until the test sets bob available; the queue as configured afterwards."""
    engine = engine_of(stack)
    assert await engine.set_state("bob", "away", "test")
    yield engine
    await engine.put_queue(_support(stack))
    await engine.set_state("bob", "available")


async def _wait_line(stack: Stack, *, max_wait: int = 60, on_timeout: str = "message") -> None:
    await apply_line(stack, NUMBER, {"waitline": WAIT_FLOW.format(max_wait=max_wait, on_timeout=on_timeout)})


_PLACED: list[SimCall] = []


@pytest.fixture(autouse=True)
async def hang_up_leftovers(stack: Stack) -> AsyncIterator[None]:
    """A test that fails half-way still hangs up the callers it placed."""
    yield
    while _PLACED:
        await stack.observer.hangup(_PLACED.pop().caller_leg)


async def _call(
    stack: Stack, number: str, caller: str, digits: str = "", *, in_app: bool = False
) -> tuple[SimCall, str]:
    call, started = await place(stack, caller, digits, number=number, in_app=in_app, placed=_PLACED)
    return call, str(started["interaction_id"])


def _playing(channel_id: str, media: str) -> dict[str, Any]:
    """A playback on the channel that is playing `media` now (the first file, or a later one of a list)."""
    return {"playback__target_uri": f"channel:{channel_id}", "playback__media_uri": media}


async def _heard(stack: Stack, channel_id: str, media: str, *, within: float, since: int | None = None) -> None:
    for kind in ("PlaybackStarted", "PlaybackContinuing"):
        try:
            await stack.ari_events.expect(
                kind, within=within if kind == "PlaybackStarted" else 0.5, since=since, **_playing(channel_id, media)
            )
            return
        except AssertionError:
            continue
    raise AssertionError(f"{media} was not played on {channel_id}")


async def test_the_waiting_caller_hears_their_place_and_the_wait_and_an_offer_cuts_in(
    stack: Stack, bob_away: RoutingEngine
) -> None:
    engine = bob_away
    # Two recent answers in support give the estimate its pace.
    assert await engine.set_state("bob", "available")
    for _ in range(2):
        done = str(uuid.uuid4())
        offer = await engine.enqueue(done, "support")
        assert offer is not None and offer.agent_id == "bob"
        assert await engine.answered(done, "bob")
        await engine.release(done)
    assert await engine.set_state("bob", "away", "test")
    await engine.put_queue(_support(stack).model_copy(update={"announce": QueueAnnounce(every_s=2)}))
    ahead = str(uuid.uuid4())  # someone already waiting: the caller is number 2
    assert await engine.enqueue(ahead, "support") is None

    call, interaction = await _call(stack, "100", ANA, "2")
    await stack.hilo_events.expect("routing.queued", within=15, interaction_id=interaction, data__queue="support")
    await position_is(engine, interaction, 2)
    await stack.ari_events.expect(
        "PlaybackStarted", within=6, **_playing(call.ivr_leg, media_of(stack, waiting.YOU_ARE))
    )
    await _heard(stack, call.ivr_leg, media_of(stack, "2"), within=5)
    await _heard(stack, call.ivr_leg, media_of(stack, waiting.UNDER_A_MINUTE), within=5)

    # The one ahead leaves: the next announcement says number 1.
    await engine.remove(ahead, "test")
    mark = stack.ari_events.mark()
    announcement = await stack.ari_events.expect(
        "PlaybackStarted", within=6, since=mark, **_playing(call.ivr_leg, media_of(stack, waiting.YOU_ARE))
    )
    await _heard(stack, call.ivr_leg, media_of(stack, "1"), within=5, since=mark)
    # bob frees up in the middle of that announcement: the offer is not lost, the prompt stops.
    assert await engine.set_state("bob", "available")
    await stack.hilo_events.expect_in_order(
        [
            ("routing.offered", {"interaction_id": interaction, "data__agent": "bob"}),
            ("agent.answered", {"interaction_id": interaction, "data__agent": "bob"}),
        ],
        within=12,
    )
    playback = announcement["playback"]["id"]
    await stack.ari_events.expect("PlaybackFinished", within=2, since=mark, playback__id=playback)
    # Cut short: its last part ("less than a minute"), which an announcement left to its end plays last,
    # never began.
    last = media_of(stack, waiting.UNDER_A_MINUTE)
    assert not [
        e
        for e in stack.ari_events.events[mark:]
        if e.get("playback", {}).get("id") == playback and e["playback"].get("media_uri") == last
    ], "the announcement was played to its end, not stopped by the offer"
    await stack.observer.hangup(call.caller_leg)
    ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    assert ended["data"]["outcome"] == "completed"


async def test_the_end_of_the_wait_goes_on_at_the_voicemail_node(stack: Stack, bob_away: RoutingEngine) -> None:
    await _wait_line(stack, max_wait=2, on_timeout="message")
    call, interaction = await _call(stack, NUMBER, ANA, in_app=True)
    steps = await stack.hilo_events.expect_in_order(
        [
            ("routing.queued", {"interaction_id": interaction, "data__queue": "support"}),
            ("routing.timeout", {"interaction_id": interaction, "data__waited_s": 2}),
            ("ivr.outcome", {"interaction_id": interaction, "data__node": "message", "data__action": "voicemail"}),
        ],
        within=20,
    )
    assert steps[0]["at"] < steps[1]["at"]
    await stack.ari_events.expect("RecordingStarted", within=15, recording__target_uri=f"channel:{call.ivr_leg}")
    await stack.observer.hangup(call.caller_leg)
    await stack.hilo_events.expect("voicemail.recorded", within=15, interaction_id=interaction)
    ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    assert ended["data"]["outcome"] == "voicemail"
    row = await stack.pool.fetchrow(
        "SELECT state, end_reason FROM routing_interactions WHERE interaction_id = $1::uuid", interaction
    )
    assert row is not None and (row["state"], row["end_reason"]) == ("ended", "timeout")


@pytest.fixture
def sim_callbacks(stack: Stack) -> Any:
    assert stack.services.calls is not None
    dialler = stack.services.calls.callbacks
    before = (dialler.dial, dialler.customer_ring_s, dialler.retry_s, dialler.max_attempts)
    dialler.dial = "Local/{number}@hilo-callback-sim"
    dialler.customer_ring_s, dialler.retry_s, dialler.max_attempts = 4, 1.0, 2
    yield dialler
    dialler.dial, dialler.customer_ring_s, dialler.retry_s, dialler.max_attempts = before


async def _book_from_the_queue(stack: Stack, caller: str) -> tuple[SimCall, str]:
    call, interaction = await _call(stack, NUMBER, caller, in_app=True)
    await stack.hilo_events.expect("routing.queued", within=15, interaction_id=interaction)
    offer = media_of(stack, "Press 1 to be called back, keeping your place.")
    await stack.ari_events.expect("PlaybackStarted", within=8, **_playing(call.ivr_leg, offer))
    await stack.observer.send_dtmf(call.caller_leg, "1")
    await stack.hilo_events.expect_in_order(
        [
            ("routing.callback_chosen", {"interaction_id": interaction, "data__next": "call_me"}),
            (
                "callback.requested",
                {"interaction_id": interaction, "data__keeps_place": True, "data__queue": "support"},
            ),
            ("interaction.ended", {"interaction_id": interaction, "data__outcome": "callback-requested"}),
        ],
        within=20,
    )
    await stack.observer.hangup(call.caller_leg)
    return call, interaction


async def test_a_booked_callback_keeps_its_place_and_is_dialled_back_when_the_agent_is_free(
    stack: Stack, bob_away: RoutingEngine, sim_callbacks: Any
) -> None:
    engine = bob_away
    await _wait_line(stack)
    _, booked = await _book_from_the_queue(stack, ANA)
    await position_is(engine, booked, 1)  # still waiting in routing after the caller hung up
    later, later_id = await _call(stack, NUMBER, LATER, in_app=True)
    await stack.hilo_events.expect("routing.queued", within=15, interaction_id=later_id)
    await position_is(engine, later_id, 2)

    mark = stack.hilo_events.mark()
    assert await engine.set_state("bob", "available")
    dialing, connected = await stack.hilo_events.expect_in_order(
        [
            ("callback.dialing", {"interaction_id": booked, "data__agent": "bob", "data__attempt": 1}),
            ("callback.connected", {"interaction_id": booked, "data__agent": "bob"}),
        ],
        within=20,
        since=mark,
    )
    # Asterisk's word: the customer's leg (dialled through the configured dial string) is bridged with bob.
    bridged = await stack.ari_events.expect(
        "ChannelEnteredBridge", within=5, channel__id=lambda i: i.startswith(f"{NAMESPACE}-callback-")
    )
    # The later caller was not offered bob meanwhile.
    assert not [
        e for e in stack.hilo_events.events[mark:] if e["type"] == "routing.offered" and e["interaction_id"] == later_id
    ]
    row = await stack.pool.fetchrow("SELECT * FROM callbacks WHERE interaction_id = $1::uuid", booked)
    assert row is not None and (row["state"], row["attempts"], row["agent_id"]) == ("done", 1, "bob")
    # bob's pop is the booked interaction: what the caller told the IVR, and the booking
    resp = await stack.client.get(
        f"/console/api/interactions/{booked}", headers={"Authorization": f"Bearer {stack.token}"}
    )
    pop = await resp.json()
    assert resp.status == 200, pop
    assert pop["callback"] == {"id": row["id"], "number": ANA, "queue": "support", "keeps_place": True}
    assert pop["ivr"]["flow"] == "waitline" and pop["customer"]["name"]
    # The customer hangs up: bob is free and takes the later caller.
    await stack.observer.hangup(bridged["channel"]["id"])
    await stack.hilo_events.expect("agent.answered", within=20, interaction_id=later_id, data__agent="bob")
    await stack.observer.hangup(later.caller_leg)
    await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=later_id)
    record = await stack.pool.fetchrow(
        "SELECT state, end_reason FROM routing_interactions WHERE interaction_id = $1::uuid", booked
    )
    assert record is not None and (record["state"], record["end_reason"]) == ("ended", "released")
    assert dialing["at"] < connected["at"]


async def test_a_callback_nobody_answers_is_retried_then_given_up(
    stack: Stack, bob_away: RoutingEngine, sim_callbacks: Any
) -> None:
    engine = bob_away
    await _wait_line(stack)
    _, booked = await _book_from_the_queue(stack, NEVER_ANSWERS)
    assert await engine.set_state("bob", "available")
    await stack.hilo_events.expect_in_order(
        [
            ("callback.dialing", {"interaction_id": booked, "data__attempt": 1}),
            ("callback.no_answer", {"interaction_id": booked, "data__attempt": 1}),
            ("callback.dialing", {"interaction_id": booked, "data__attempt": 2}),
            ("callback.failed", {"interaction_id": booked, "data__attempts": 2, "data__reason": "no-answer"}),
        ],
        within=40,
    )
    row = await stack.pool.fetchrow("SELECT state, attempts FROM callbacks WHERE interaction_id = $1::uuid", booked)
    assert row is not None and (row["state"], row["attempts"]) == ("failed", 2)
    assert (await engine.agent("bob"))["state"] == "available"
    assert not [e for e in stack.hilo_events.events[stack.hilo_events.baseline :] if e["type"] == "callback.connected"]


async def test_after_redis_loses_the_state_a_call_that_vanished_meanwhile_is_not_left_waiting(
    stack: Stack, bob_away: RoutingEngine
) -> None:
    engine = bob_away
    call, interaction = await _call(stack, "100", ANA, "2")
    await position_is(engine, interaction, 1)
    # Redis loses the routing keys, and the caller hangs up before the rebuild: the call's own removal finds
    # nothing in Redis and closes the durable record itself. (The engine's lock keeps its tick from
    # rebuilding in between.)
    async with engine._lock:
        await engine.state.clear()
        await stack.observer.hangup(call.caller_leg)
        await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
        row = await stack.pool.fetchrow(
            "SELECT state, end_reason FROM routing_interactions WHERE interaction_id = $1::uuid", interaction
        )
        assert row is not None and (row["state"], row["end_reason"]) == ("ended", "abandoned")
    # The tick rebuilds from PostgreSQL: nothing of it comes back.
    await eventually(lambda: engine.redis.exists(engine._marker), within=5, what="routing rebuilt from PostgreSQL")
    assert await engine.position(interaction) is None


async def test_after_redis_loses_the_state_a_call_whose_removal_was_lost_is_ended_by_the_rebuild(
    stack: Stack, bob_away: RoutingEngine
) -> None:
    engine = bob_away
    call, interaction = await _call(stack, "100", ANA, "2")
    await position_is(engine, interaction, 1)

    async def lost(*args: Any, **kwargs: Any) -> bool:
        raise TimeoutError("no connection from the pool in time (injected)")

    # Redis loses the routing keys, the caller hangs up before the rebuild, and the call's removal cannot
    # be written either: only the durable record still says "waiting".
    async with engine._lock:
        await engine.state.clear()
        engine.store.end_open = lost  # type: ignore[method-assign]
        try:
            await stack.observer.hangup(call.caller_leg)
            await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
        finally:
            del engine.store.end_open
        row = await stack.pool.fetchrow(
            "SELECT state FROM routing_interactions WHERE interaction_id = $1::uuid", interaction
        )
        assert row is not None and row["state"] == "waiting"
    # The tick rebuilds from PostgreSQL, asks which calls still exist (the reconciler), and ends this one.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while (
        row := await stack.pool.fetchrow(
            "SELECT state, end_reason FROM routing_interactions WHERE interaction_id = $1::uuid", interaction
        )
    ) is not None and row["state"] != "ended":
        assert loop.time() < deadline, "the vanished call was left in routing after the rebuild"
        await asyncio.sleep(0.05)
    assert row is not None and row["end_reason"] == "call-gone"
    assert await engine.position(interaction) is None


@pytest.fixture
async def support_pinned(stack: Stack, bob_away: RoutingEngine) -> AsyncIterator[RoutingEngine]:
    """Support as this test needs it whatever routing.yaml says: served by bob alone, never escalating nor
    overflowing. The demo's support queue overflows into sales after two minutes, so on a slow run the booking
    could go to alice, and the test would test the demo's timers. (Its own queue id is not possible: flows may
    name only routing.yaml's queues.) `bob_away` puts the configured queue back afterwards."""
    await bob_away.put_queue(_support(stack).model_copy(update={"escalation": []}))
    yield bob_away


async def test_a_callback_left_dialing_by_a_node_that_died_is_dialled_again_in_its_place(
    stack: Stack, support_pinned: RoutingEngine, sim_callbacks: Any
) -> None:
    engine = support_pinned
    await _wait_line(stack)
    assert stack.services.calls is not None
    dialler = stack.services.calls.callbacks
    _, booked = await _book_from_the_queue(stack, ANA)
    later, later_id = await _call(stack, NUMBER, LATER, in_app=True)
    await position_is(engine, later_id, 2)
    # What a node that died mid-attempt leaves behind: routing's offer to bob, the row `dialing` long ago.
    await dialler.close()
    assert await engine.set_state("bob", "available")
    offer = await engine.try_assign(booked)
    assert offer is not None and offer.agent_id == "bob"
    await stack.pool.execute(
        "UPDATE callbacks SET state = 'dialing', agent_id = 'bob', updated_at = now() - interval '1 hour'"
        " WHERE interaction_id = $1::uuid",
        booked,
    )
    mark, ari_mark = stack.hilo_events.mark(), stack.ari_events.mark()
    await dialler.start()  # a node works the bookings again: the stale attempt goes back to its place
    await stack.hilo_events.expect_in_order(
        [
            ("callback.dialing", {"interaction_id": booked, "data__agent": "bob", "data__attempt": 1}),
            ("callback.connected", {"interaction_id": booked, "data__agent": "bob"}),
        ],
        within=30,
        since=mark,
    )
    row = await stack.pool.fetchrow("SELECT state, last_result FROM callbacks WHERE interaction_id = $1::uuid", booked)
    assert row is not None and (row["state"], row["last_result"]) == ("done", "connected")
    # the later caller did not overtake it
    assert not [e for e in stack.hilo_events.events[mark:] if e["type"] == "routing.offered"]
    # routing's record: the dead node's offer withdrawn, then one offer to bob, answered (none to anybody else)
    offers = await stack.pool.fetch(
        "SELECT agent_id, outcome, answered_at IS NOT NULL AS answered FROM routing_offers"
        " WHERE interaction_id = $1::uuid ORDER BY offered_at, id",
        booked,
    )
    assert [(o["agent_id"], o["outcome"], o["answered"]) for o in offers] == [
        ("bob", "withdrawn", False),
        ("bob", None, True),
    ]
    bridged = await stack.ari_events.expect(
        "ChannelEnteredBridge",
        within=5,
        since=ari_mark,
        channel__id=lambda i: i.startswith(f"{NAMESPACE}-callback-"),
    )
    await stack.observer.hangup(bridged["channel"]["id"])
    await stack.hilo_events.expect("agent.answered", within=20, interaction_id=later_id, data__agent="bob")
    await stack.observer.hangup(later.caller_leg)
    await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=later_id)
