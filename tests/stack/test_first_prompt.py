"""The caller hears the flow's first prompt at once: it waits neither for identification nor for the
interaction's writes (flows/opening.py). What needs the caller's identity (greeting a known caller by name)
still waits for it, and the timeline keeps its order: the opening, then the prompt, then the flow."""

from __future__ import annotations

import pytest

from server.simcall import originate_sim_call
from tests.stack.calls import KNOWN_CALLER, hang_up
from tests.stack.conftest import NAMESPACE, Stack
from tests.stack.test_store_degraded import stalled


async def test_the_greeting_plays_while_identification_is_stalled_and_the_name_waits_for_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stack.services.calls is not None
    # Identification may take up to 5 s here: without an opening said meanwhile, the caller would hear
    # nothing until it answered.
    monkeypatch.setattr(stack.services.calls, "identify_budget_s", 5.0)
    mark, ari_mark = stack.hilo_events.mark(), stack.ari_events.mark()
    async with stalled(stack, "identities"):
        call = await originate_sim_call(stack.observer, "100", KNOWN_CALLER, "", namespace=NAMESPACE, in_app=True)
        await stack.ari_events.expect(
            "PlaybackStarted", within=4, since=ari_mark, playback__target_uri=f"channel:{call.ivr_leg}"
        )
        # Playing while the call has no interaction yet (identification still waits behind the lock).
        opened = "SELECT count(*) FROM interactions WHERE channel_ref = $1"
        assert await stack.pool.fetchval(opened, call.ivr_leg) == 0
    started = await stack.hilo_events.expect(
        "interaction.started", within=10, since=mark, data__channel_ref=call.ivr_leg
    )
    i = started["interaction_id"]
    await stack.hilo_events.expect_in_order(
        [
            ("customer.identified", {"interaction_id": i, "data__new": False}),
            ("ivr.flow_started", {"interaction_id": i, "data__flow": "demo"}),
            ("ivr.say", {"interaction_id": i, "data__node": "greet"}),
            ("ivr.branch", {"interaction_id": i, "data__node": "greeting", "data__next": "greet_known"}),
            ("ivr.say", {"interaction_id": i, "data__node": "greet_known"}),
        ],
        within=15,
        since=mark,
    )
    types = await stack.pool.fetch("SELECT type FROM timeline_events WHERE interaction_id = $1::uuid ORDER BY id", i)
    assert [r["type"] for r in types][:5] == [
        "interaction.started",
        "customer.identified",
        "ivr.flow_started",
        "ivr.say",
        "ivr.branch",
    ]
    ended = await hang_up(stack, call.caller_leg, i)
    assert ended["data"] == {"outcome": "abandoned", "hangup_by": "caller"}
