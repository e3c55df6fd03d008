"""The generated numbers dialplan applied to the real Asterisk through AMI, and the `hilo-transfer` context a
flow's `transfer` continues a call into (asterisk/etc/extensions.conf)."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asterisk.ami import AmiClient
from asterisk.dialplan import CONTEXT, apply_numbers_dialplan, config_path, context_extensions, write_atomically
from dialplans.models import load_numbers
from hilo.settings import REPO_ROOT
from server.simcall import SimCall, originate_sim_call
from tests.stack.conftest import NAMESPACE, Stack

CALLER = "+34911222333"
# Only the generated dialplan can route it: the catch-all of unlisted numbers (_X. and _+X.) needs a digit
# or + first and at least two characters.
EXTRA_NUMBER = "*4242"


def _ami(stack: Stack) -> AmiClient:
    assert stack.services.ami is not None
    return stack.services.ami


def _root(stack: Stack) -> Path:
    return Path(stack.env["HILO_ASTERISK_ROOT"])


@pytest.fixture
async def restore_numbers_dialplan(stack: Stack) -> AsyncIterator[None]:
    """Whatever a test applies, the stack's own hilo-numbers.conf is back (and loaded) afterwards."""
    path = config_path(_root(stack))
    original = path.read_text() if path.exists() else None
    try:
        yield
    finally:
        if original is None:
            path.unlink(missing_ok=True)
        else:
            write_atomically(path, original)
        reply = await _ami(stack).action({"Action": "Reload", "Module": "pbx_config.so"})
        assert reply.get("Response") == "Success", dict(reply)
        assert EXTRA_NUMBER not in await context_extensions(_ami(stack), CONTEXT)


async def test_an_applied_number_is_known_to_asterisk_and_reaches_the_stasis_app(
    stack: Stack, restore_numbers_dialplan: None
) -> None:
    numbers = dict(load_numbers(stack.settings.dialplans_dir).numbers)
    assert EXTRA_NUMBER not in numbers
    numbers[EXTRA_NUMBER] = "demo"

    known = await apply_numbers_dialplan(_ami(stack), _root(stack), numbers, source="test numbers")

    assert known == sorted(numbers)
    assert EXTRA_NUMBER in await context_extensions(_ami(stack), CONTEXT)
    written = config_path(_root(stack))
    assert written.stat().st_uid == written.parent.stat().st_uid  # Asterisk's own user can read it
    mark = stack.ari_events.mark()
    call = await originate_sim_call(stack.observer, EXTRA_NUMBER, CALLER, "", namespace=NAMESPACE)
    # Asterisk's word: the channel ran Stasis(hilo-test,*4242) ...
    await stack.ari_events.expect(
        "ChannelDialplan",
        within=10,
        since=mark,
        channel__id=call.ivr_leg,
        dialplan_app="Stasis",
        dialplan_app_data=f"{NAMESPACE},{EXTRA_NUMBER}",
    )
    # ... and the Hilo under test got the StasisStart with the number as argument. It has no flow for the
    # number (its own come from dialplans/), so it apologises and hangs up.
    started = await stack.hilo_events.expect("interaction.started", within=10, data__channel_ref=call.ivr_leg)
    assert started["data"]["dialed"] == EXTRA_NUMBER
    await stack.hilo_events.expect("interaction.ended", within=20, interaction_id=started["interaction_id"])


# ---------------------------------------------------------------------------------------------- transfer


async def _call_in_observer(stack: Stack) -> SimCall:
    """A simulated call whose Stasis side sits in the observer's app (not in the Hilo under test), as a call
    sits in Hilo's app when its flow ends with a transfer."""
    mark = stack.ari_events.mark()
    call = await originate_sim_call(stack.observer, "100", CALLER, "", namespace=stack.observer.app)
    await stack.ari_events.expect(
        "StasisStart", within=10, since=mark, application=stack.observer.app, channel__id=call.ivr_leg
    )
    return call


async def _transfer(stack: Stack, channel_id: str, target: str, **variables: str) -> int:
    for name, value in variables.items():
        await stack.observer.request(
            "POST", f"/channels/{channel_id}/variable", params={"variable": name, "value": value}
        )
    mark = stack.ari_events.mark()
    await stack.observer.request(
        "POST",
        f"/channels/{channel_id}/continue",
        params={"context": "hilo-transfer", "extension": target, "priority": 1},
    )
    return mark


async def test_a_call_transferred_to_the_test_line_is_answered(stack: Stack) -> None:
    call = await _call_in_observer(stack)
    mark = await _transfer(stack, call.ivr_leg, "test-line")
    leg = {"channel__id": call.ivr_leg}
    await stack.ari_events.expect_in_order(
        [
            ("StasisEnd", leg),
            ("ChannelStateChange", {**leg, "channel__state": "Up"}),
            ("ChannelDialplan", {**leg, "dialplan_app": "Playback", "dialplan_app_data": "beep"}),
            ("ChannelDestroyed", leg),
        ],
        within=10,
        since=mark,
    )
    await stack.ari_events.expect("ChannelDestroyed", within=5, since=mark, channel__id=call.caller_leg)


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def test_a_transfer_to_a_number_dials_it_through_the_carrier_trunk(stack: Stack, tmp_path: Path) -> None:
    assert shutil.which("sipp"), "SIPp (Debian package sip-tester) is needed; `make stack` installs it"
    host = "127.0.0.3"  # no real carrier here: a SIPp on the test carrier's address answers as one
    port, media_port = _free_udp_port(host), _free_udp_port(host)
    messages = tmp_path / "sipp-messages.log"
    sipp = await asyncio.create_subprocess_exec(
        "sipp",
        "-sf", str(REPO_ROOT / "asterisk" / "sipp" / "agent_uas.xml"),
        "-i", host, "-p", str(port), "-mi", host, "-mp", str(media_port), "-ci", host,
        "-m", "1",
        "-trace_msg", "-message_file", str(messages),
        "-timeout", "60s", "-timeout_error",
        "-nostdin",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        call = await _call_in_observer(stack)
        number = "+34600112233"
        mark = await _transfer(stack, call.ivr_leg, number, HILO_TRUNK_PEER=f"{host}:{port}")
        dial = await stack.ari_events.expect(
            "Dial",
            within=15,
            since=mark,
            caller__id=call.ivr_leg,
            dialstring=f"carrier-sim/sip:{number}@{host}:{port}",
            peer__name=lambda n: n.startswith("PJSIP/carrier-sim-"),
        )
        await stack.ari_events.expect("Dial", within=15, since=mark, peer__id=dial["peer"]["id"], dialstatus="ANSWER")
        assert f"INVITE sip:{number}@{host}:{port}" in messages.read_text()
        await stack.observer.hangup(call.caller_leg)
        await stack.ari_events.expect("ChannelDestroyed", within=10, since=mark, channel__id=dial["peer"]["id"])
        output, _ = await asyncio.wait_for(sipp.communicate(), 30)
        assert sipp.returncode == 0, output.decode(errors="replace")[-2000:]
    finally:
        if sipp.returncode is None:
            sipp.kill()
            await sipp.wait()


async def test_a_transfer_to_an_agent_endpoint_rings_that_agent(stack: Stack) -> None:
    call = await _call_in_observer(stack)
    mark = await _transfer(stack, call.ivr_leg, "agent-bob")
    dial = await stack.ari_events.expect(
        "Dial",
        within=15,
        since=mark,
        caller__id=call.ivr_leg,
        dialstatus="ANSWER",
        peer__name=lambda n: n.startswith("PJSIP/agent-bob-"),
    )
    await stack.observer.hangup(call.caller_leg)
    await stack.ari_events.expect("ChannelDestroyed", within=10, since=mark, channel__id=dial["peer"]["id"])


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("agent-nobody", "CHANUNAVAIL"),
        ("no-such-target", "INVALIDTARGET"),
        ("600112233&PJSIP/agent-bob", "INVALIDTARGET"),  # a second dial target is never dialled
        ("agent-bob&PJSIP/agent-alice", "INVALIDTARGET"),
    ],
)
async def test_a_failed_transfer_goes_back_to_hilo_with_the_reason(stack: Stack, target: str, status: str) -> None:
    call = await _call_in_observer(stack)
    mark = await _transfer(stack, call.ivr_leg, target, HILO_TRANSFER_RETURN="transfer-failed")
    back: dict[str, Any] = await stack.ari_events.expect(
        "StasisStart", within=10, since=mark, application=stack.observer.app, channel__id=call.ivr_leg
    )
    assert back["args"] == ["transfer-failed", target, status]
    await stack.observer.hangup(call.caller_leg)


async def test_a_failed_transfer_without_a_way_back_apologises_and_hangs_up(stack: Stack) -> None:
    call = await _call_in_observer(stack)
    mark = await _transfer(stack, call.ivr_leg, "agent-nobody")
    leg = {"channel__id": call.ivr_leg}
    await stack.ari_events.expect_in_order(
        [
            ("ChannelVarset", {**leg, "variable": "DIALSTATUS", "value": "CHANUNAVAIL"}),
            ("ChannelDialplan", {**leg, "dialplan_app": "Playback", "dialplan_app_data": "im-sorry"}),
            ("ChannelDestroyed", leg),
        ],
        within=10,
        since=mark,
    )
