"""Every node kind over a real call. The queue, menu, branch and say nodes run in test_calls.py (the demo
line), voicemail, callback and transfer in test_flow_outcomes.py; this call walks the rest: play, gather,
set, lookup by a collected account number with PIN verification against the customer store, http to a
live service, hours, branch on the service's answer, goto into another flow, and hangup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from tests.stack.calls import place
from tests.stack.conftest import Stack
from tests.stack.lines import apply_line

NUMBER = "160"
KINDS_FLOW = """
flow: kinds
language: en
start: hello
nodes:
  hello: {kind: say, text: "Hello {{ customer.name }}.", next: chime}
  chime: {kind: play, file: beep, text: (a beep), next: account}
  account:
    kind: gather
    prompt: Type your account number, then hash.
    min_digits: 4
    max_digits: 8
    terminator: "#"
    timeout_s: 10
    into: account
    next: mark
    no_input: bye
  mark: {kind: set, variables: {tier: gold, asked_for: "{{ account }}"}, next: who}
  who:
    kind: lookup
    by: variable
    variable: account
    identity: account
    into: holder
    verify:
      prompt: Type your PIN, then hash.
      field: pin
      min_digits: 4
      max_digits: 4
      attempts: 2
      retry: That does not match.
      verified: ask_shop
      not_verified: bye
    not_found: bye
  ask_shop:
    kind: http
    method: POST
    url: "{{ shop_url }}/orders"
    json: {account: "{{ account }}", tier: "{{ tier }}"}
    timeout_s: 3
    map: {order_state: order.state}
    next: office
    on_error: bye
  office: {kind: hours, calendar: always, open: check, closed: bye}
  check:
    kind: branch
    when:
      - {var: order_state, equals: shipped, next: jump}
    otherwise: bye
  jump: {kind: goto, flow: kinds_end}
  bye: {kind: hangup, text: Goodbye.}
"""
KINDS_END_FLOW = """
flow: kinds_end
language: en
start: done
nodes:
  done: {kind: hangup, text: "Your order has shipped, {{ customer.name }}. Goodbye."}
"""


@pytest.fixture
async def shop() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An outside REST service the flow calls, on loopback."""
    seen: list[dict[str, Any]] = []

    async def orders(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.json_response({"order": {"state": "shipped", "id": "A-77"}})

    app = web.Application()
    app.router.add_post("/orders", orders)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def _use_kinds_line(stack: Stack, shop_url: str) -> None:
    kinds = KINDS_FLOW.replace("{{ shop_url }}", shop_url)
    await apply_line(stack, NUMBER, {"kinds": kinds, "kinds_end": KINDS_END_FLOW})


async def test_every_other_node_kind_over_a_real_call(stack: Stack, shop: tuple[str, list[dict[str, Any]]]) -> None:
    shop_url, orders = shop
    await _use_kinds_line(stack, shop_url)
    call, started = await place(stack, "+1 212 555 0142", number=NUMBER, in_app=True)
    i = started["interaction_id"]
    await stack.hilo_events.expect("ivr.play", within=15, interaction_id=i, data__file="beep")
    # Asterisk really played the file (not only Hilo asking for it).
    await stack.ari_events.expect(
        "PlaybackFinished", within=10, playback__media_uri="sound:beep", playback__state="done"
    )
    await stack.observer.send_dtmf(call.caller_leg, "10001#")  # Ana García's account, from another phone
    await stack.hilo_events.expect("ivr.lookup", within=15, interaction_id=i, data__found=True)
    await stack.observer.send_dtmf(call.caller_leg, "1111#")  # a wrong PIN first ...
    await stack.hilo_events.expect("ivr.verify", within=15, interaction_id=i, data__result="no_match")
    await stack.observer.send_dtmf(call.caller_leg, "2468#")  # ... then the right one
    steps = await stack.hilo_events.expect_in_order(
        [
            ("ivr.verify", {"interaction_id": i, "data__result": "match", "data__attempt": 2}),
            ("ivr.http", {"interaction_id": i, "data__ok": True, "data__missing": []}),
            ("ivr.hours", {"interaction_id": i, "data__calendar": "always", "data__open": True}),
            ("ivr.branch", {"interaction_id": i, "data__next": "jump"}),
            ("ivr.goto", {"interaction_id": i, "data__to_flow": "kinds_end"}),
            ("ivr.outcome", {"interaction_id": i, "data__flow": "kinds_end", "data__action": "hangup"}),
        ],
        within=30,
    )
    ended = await stack.hilo_events.expect("interaction.ended", within=15, interaction_id=i)
    assert ended["data"] == {"outcome": "ivr-ended", "hangup_by": "system"}
    assert orders == [{"account": "10001", "tier": "gold"}]
    # The PIN never reaches the timeline or the interaction; the answers the flow collected do.
    events = await stack.pool.fetch("SELECT data::text AS d FROM timeline_events WHERE interaction_id = $1::uuid", i)
    assert not any("2468" in r["d"] or "1111" in r["d"] for r in events)
    context = await stack.pool.fetchval("SELECT context FROM interactions WHERE id = $1::uuid", i)
    collected = context["ivr"]["variables"]
    assert (collected["account"], collected["order_state"], collected["holder"]["verified"]) == (
        "10001",
        "shipped",
        True,
    )
    assert "2468" not in str(context)
    assert steps[0]["data"]["field"] == "pin"
