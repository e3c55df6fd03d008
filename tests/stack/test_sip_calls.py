"""Real SIP calls from the carrier trunk that the other call tests do not make: keys sent the way carriers
send them (RFC 4733 telephone-events in the RTP stream, as the trunk is configured: dtmf_mode=rfc4733)."""

from __future__ import annotations

from pathlib import Path

from tests.stack.conftest import Stack
from tests.stack.lines import apply_line
from tests.stack.rtp_events import write_keys_pcap
from tests.stack.sipp import start_sipp

KEYS_NUMBER = "161"
KEYS_FLOW = """
flow: keys
language: en
start: menu
nodes:
  menu:
    kind: menu
    prompt: For your account press star.
    choices:
      "*": {label: Account, next: account}
    no_match: Sorry.
    no_input: Sorry.
    retries: 2
    timeout_s: 10
    fallback: bye
  account:
    kind: gather
    prompt: Type your account number, then hash.
    min_digits: 4
    max_digits: 8
    terminator: "#"
    timeout_s: 10
    into: account
    next: agent
    no_input: bye
  agent:
    kind: menu
    prompt: To speak to support press hash.
    choices:
      "#": {label: Support, next: support}
    no_match: Sorry.
    no_input: Sorry.
    retries: 2
    timeout_s: 10
    fallback: bye
  support: {kind: queue, queue: support}
  bye: {kind: hangup, text: Goodbye.}
"""


async def test_keys_sent_as_rfc4733_events_by_the_carrier_drive_the_ivr_to_the_agent(
    stack: Stack, tmp_path: Path
) -> None:
    await apply_line(stack, KEYS_NUMBER, {"keys": KEYS_FLOW})
    keys = "*1001##"  # a repeated key is a new event each time, not a repeat to drop
    write_keys_pcap(tmp_path / "keys.pcap", keys)
    mark, ari_mark = stack.hilo_events.mark(), stack.ari_events.mark()
    sipp = await start_sipp(stack, "caller_rfc4733_uac.xml", service=KEYS_NUMBER, cwd=tmp_path)
    try:
        started = await stack.hilo_events.expect("interaction.started", within=15, since=mark, data__dialed=KEYS_NUMBER)
        interaction, channel = started["interaction_id"], started["data"]["channel_ref"]
        await stack.hilo_events.expect_in_order(
            [
                ("ivr.input", {"interaction_id": interaction, "data__node": "menu", "data__digit": "*"}),
                ("ivr.input", {"interaction_id": interaction, "data__node": "account", "data__digits": "1001"}),
                ("ivr.input", {"interaction_id": interaction, "data__node": "agent", "data__digit": "#"}),
                ("routing.queued", {"interaction_id": interaction, "data__queue": "support"}),
                ("agent.answered", {"interaction_id": interaction, "data__agent": "bob"}),
            ],
            within=30,
        )
        assert not [
            e for e in stack.hilo_events.events[mark:]
            if e["type"] == "ivr.input" and e["interaction_id"] == interaction and e["data"].get("valid") is False
        ], "a key the caller did not press was read"  # fmt: skip
        # Asterisk's word: it read every key from the SIP leg's RTP stream, in order, none lost or doubled.
        received = [
            (e["digit"], e["channel"]["name"].split("-0")[0])
            for e in stack.ari_events.events[ari_mark:]
            if e["type"] == "ChannelDtmfReceived" and e["channel"]["id"] == channel
        ]
        assert received == [(key, "PJSIP/carrier-test") for key in keys], received
        agent_leg = await stack.ari_events.expect(
            "ChannelEnteredBridge", within=5, since=ari_mark, channel__name=lambda n: n.startswith("PJSIP/agent-bob-")
        )
        await stack.observer.hangup(agent_leg["channel"]["id"])
        ended = await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
        assert ended["data"] == {"outcome": "completed", "hangup_by": "agent"}
        status, output = await sipp.finished(within=30)
        assert status == 0, output
    finally:
        await sipp.stop()
