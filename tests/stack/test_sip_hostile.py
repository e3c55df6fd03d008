"""SIP that no carrier of ours sends: a call from an address Asterisk knows nothing of (refused, and logged
and counted by Hilo as a security event, with the source masked), and broken INVITEs (Asterisk answers them
with errors or drops them, stays up, and Hilo neither starts a call nor notices)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stack.conftest import Stack
from tests.stack.expect import EventStream, eventually
from tests.stack.rtp_events import write_keys_pcap
from tests.stack.sip import SipPeer
from tests.stack.sipp import CARRIER_TEST, start_sipp
from tests.stack.test_sip_security import attacker_address


@pytest.fixture
def ami_events(stack: Stack) -> Iterator[EventStream]:
    """What Asterisk reports on AMI (the security events Hilo's SIP guard reads)."""
    ami = stack.services.ami
    assert ami is not None
    stream = EventStream("AMI")

    def collect(event: dict[str, Any]) -> None:
        stream.add({**event, "type": str(event.get("Event", ""))})

    ami.handlers.append(collect)
    yield stream
    ami.handlers.remove(collect)


@pytest.fixture
async def stranger(stack: Stack) -> AsyncIterator[str]:
    """An address of the strangers' range; should its failures get it blocked, it is unblocked after."""
    address = attacker_address(stack)
    yield address
    guard = stack.services.sip_guard
    assert guard is not None
    for block in await guard.blocked():
        if str(block.network) == f"{address}/32":
            await guard.unblock(block.network)


def _security_count(stack: Stack, event: str) -> float:
    return stack.services.registry.get_sample_value("hilo_sip_security_events_total", {"event": event}) or 0.0


async def test_a_call_from_an_unknown_address_is_refused_and_logged_as_a_security_event(
    stack: Stack, ami_events: EventStream, stranger: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="asterisk.sip_guard")
    counted = _security_count(stack, "InvalidAccountID")
    mark, ari_mark, ami_mark = stack.hilo_events.mark(), stack.ari_events.mark(), ami_events.mark()
    sipp = await start_sipp(stack, "stranger_uac.xml", service="100", address=stranger, timeout_s=20)
    try:
        status, output = await sipp.finished(within=30)
        assert status == 0, output  # the INVITE was answered 401 (challenged), and nothing else
    finally:
        await sipp.stop()
    # Asterisk's word: a security event naming the source and the account it claimed.
    refused = await ami_events.expect(
        "InvalidAccountID", within=5, since=ami_mark, RemoteAddress=lambda a: f"/{stranger}/" in a
    )
    assert refused["AccountID"] == "+34911222333" and refused["Service"] == "PJSIP"
    # Hilo's word: counted, and logged with the source masked.
    await eventually(lambda: _security_count(stack, "InvalidAccountID") > counted, within=5, what="the refusal counted")
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("security.sip.InvalidAccountID")]
    prefix = stranger.rsplit(".", 1)[0]
    assert logged and all(f"source={prefix}.x" in line and stranger not in line for line in logged), logged
    # Never a call: no channel in Asterisk, no interaction in Hilo.
    assert not [e for e in stack.ari_events.events[ari_mark:] if e["type"] == "ChannelCreated"]
    assert not [e for e in stack.hilo_events.events[mark:] if e["type"] == "interaction.started"]


def _invite(peer: SipPeer, *, number: str = "100", sdp: str | None = None, drop: str = "", extra: str = "") -> str:
    """A well-formed INVITE from `peer` (with a PCMU offer), less the header named `drop`, plus `extra`."""
    host = f"{peer.server[0]}:{peer.server[1]}"
    me = f"{peer.address}:{peer.port}"
    body = (
        sdp
        if sdp is not None
        else (
            f"v=0\r\no=x 1 1 IN IP4 {peer.address}\r\ns=-\r\nc=IN IP4 {peer.address}\r\nt=0 0\r\n"
            "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
    )
    headers = [
        f"Via: SIP/2.0/UDP {me};rport;branch=z9hG4bK{uuid.uuid4().hex}",
        "Max-Forwards: 70",
        f"From: <sip:+34911222333@{me}>;tag={uuid.uuid4().hex[:8]}",
        f"To: <sip:{number}@{host}>",
        f"Call-ID: {uuid.uuid4().hex}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:+34911222333@{me}>",
        "Content-Type: application/sdp",
        *([extra] if extra else []),
        f"Content-Length: {len(body)}",
    ]
    kept = [h for h in headers if not (drop and h.startswith(f"{drop}:"))]
    return f"INVITE sip:{number}@{host} SIP/2.0\r\n" + "\r\n".join(kept) + "\r\n\r\n" + body


def _broken_invites(peer: SipPeer) -> dict[str, bytes]:
    """INVITEs Asterisk must refuse or drop, each its own transaction (a fresh Call-ID and branch)."""

    def good() -> str:
        return _invite(peer)

    no_codec = (
        f"v=0\r\no=x 1 1 IN IP4 {peer.address}\r\ns=-\r\nc=IN IP4 {peer.address}\r\nt=0 0\r\n"
        "m=audio 6000 RTP/AVP 99\r\na=rtpmap:99 opus/48000/2\r\n"
    )
    return {
        "not SIP at all": bytes(range(256)) * 4,
        "cut off in the middle of a header": good()[:200].encode(),
        "no Call-ID": _invite(peer, drop="Call-ID").encode(),
        "no Via": _invite(peer, drop="Via").encode(),
        "a request line without a version": good().replace(" SIP/2.0\r\n", "\r\n", 1).encode(),
        "CSeq of another method": good().replace("CSeq: 1 INVITE", "CSeq: 1 BYE").encode(),
        "NUL bytes in From": good().replace("From: <sip:", "From: <sip:\x00\x00", 1).encode(),
        "a Content-Length that is not a number": good().replace("Content-Length: ", "Content-Length: -x", 1).encode(),
        "SDP that is not SDP": _invite(peer, sdp="v=0\r\nm=audio port RTP/AVP zero\r\nc=IN IP4\r\n").encode(),
        "an offer with no codec Asterisk has": _invite(peer, sdp=no_codec).encode(),
    }


async def test_broken_invites_leave_asterisk_up_and_hilo_unaffected(
    stack: Stack, stranger: str, tmp_path: Path
) -> None:
    started_at = (await stack.observer.request("GET", "/asterisk/info"))["status"]["startup_time"]
    mark, ari_mark = stack.hilo_events.mark(), stack.ari_events.mark()
    server = (stack.settings.sip_host, stack.settings.sip_port)
    answers: dict[str, int | None] = {}
    # From the trunk, whose requests reach the endpoint, the dialplan and Hilo's app when they are whole; and
    # a little from a stranger (few enough not to get the address blocked).
    for address, names in ((CARRIER_TEST, None), (stranger, ("not SIP at all", "no Call-ID"))):
        peer = await SipPeer(address, server).open()
        try:
            for name, data in _broken_invites(peer).items():
                if names is None or name in names:
                    answer = await peer.send_raw(data, within=1.0)
                    answers[f"{address}: {name}"] = None if answer is None else answer.status
        finally:
            peer.close()
    # Refused (4xx/5xx) or dropped (no answer), never taken: not one became a call.
    assert all(status is None or 400 <= status < 600 for status in answers.values()), answers
    # Asterisk is up, the same process, and says so on SIP and ARI.
    info = await stack.observer.request("GET", "/asterisk/info")
    assert info["status"]["startup_time"] == started_at
    # Hilo heard of no call, and still takes one: a whole call from the trunk after the broken ones.
    assert stack.services.ari is not None and stack.services.ari.connected.is_set()
    assert not [e for e in stack.hilo_events.events[mark:] if e["type"] == "interaction.started"]
    assert not [e for e in stack.ari_events.events[ari_mark:] if e["type"] == "StasisStart"]
    write_keys_pcap(tmp_path / "keys.pcap", "")
    sipp = await start_sipp(stack, "caller_rfc4733_uac.xml", service="100", cwd=tmp_path, timeout_s=30)
    try:
        started = await stack.hilo_events.expect("interaction.started", within=15, since=mark, data__dialed="100")
        interaction = started["interaction_id"]
        await stack.hilo_events.expect("ivr.menu", within=10, interaction_id=interaction)
        await stack.observer.hangup(started["data"]["channel_ref"])
        await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
        status, output = await sipp.finished(within=20)
        assert status == 0, output
    finally:
        await sipp.stop()
