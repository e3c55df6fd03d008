"""The caller's voice, live, from Asterisk to Hilo: ARI externalMedia over RTP/UDP, fed by a snoop channel.

For one listening turn Hilo makes, through ARI:
- a snoop channel on the caller's channel with `spy=in`: it hears only what the caller says, never the
  prompt Hilo plays to them (no echo to cancel, so barge-in works on the caller's voice alone), and the
  caller's channel stays out of any bridge, so prompts, keys and the later agent bridge are untouched;
- an externalMedia channel that streams what it hears as RTP (slin16: 16 kHz signed linear, the rate the
  recognizers use) to a UDP socket Hilo opened on loopback for this turn;
- a mixing bridge holding the two.

Why RTP rather than the alternatives Asterisk 22 has: externalMedia RTP is in every Asterisk since 16.6
(the production image included), is plain UDP (a late or lost packet is skipped, it never delays the
frames behind it, which is what a live recognizer wants) and needs no extra module or configuration.
AudioSocket is TCP (head-of-line blocking) and was 8 kHz-only until recently; chan_websocket arrived in
22.5 and is still young. One socket per turn keeps streams apart without parsing SSRCs.

The socket takes packets only from the address and port Asterisk's externalMedia channel sends from, which
its answer names (channel variables UNICASTRTP_LOCAL_ADDRESS / UNICASTRTP_LOCAL_PORT); anything else, before
or after, is dropped. Not "the first sender": another local process (or, with HILO_SPEECH_MEDIA_HOST off
loopback, anyone on the network) racing Asterisk to the new port would otherwise decide what the recognizer
hears, and so the caller's menu choice. An answer without them fails the listening (that turn takes keys
only, as when the audio cannot be opened)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from asterisk.ari import AriClient, AriError
from asterisk.stasis import StasisRouter

log = logging.getLogger(__name__)

RTP_HEADER = 12
RATE = 16000  # slin16
FORMAT = "slin16"
STASIS_WAIT_S = 3.0
QUEUE_FRAMES = 500  # 10 s of 20 ms frames; beyond that the consumer has stalled and frames are dropped


def rtp_payload(packet: bytes) -> tuple[int, bytes] | None:
    """(sequence number, payload) of an RTP packet, or None if it is not one."""
    if len(packet) < RTP_HEADER or packet[0] >> 6 != 2:
        return None
    csrc = packet[0] & 0x0F
    offset = RTP_HEADER + 4 * csrc
    if packet[0] & 0x10:  # header extension: 16-bit profile, 16-bit length in 32-bit words
        if len(packet) < offset + 4:
            return None
        (words,) = struct.unpack_from("!H", packet, offset + 2)
        offset += 4 + 4 * words
    end = len(packet)
    if packet[0] & 0x20:  # padding: the last byte says how much
        end -= packet[-1]
    if offset > end:
        return None
    (seq,) = struct.unpack_from("!H", packet, 2)
    return seq, packet[offset:end]


def network_to_little_endian(payload: bytes) -> bytes:
    """RTP carries L16/slin in network byte order; the recognizers want little-endian."""
    if sys.byteorder == "little" and len(payload) % 2 == 0:
        swapped = bytearray(payload)
        swapped[0::2], swapped[1::2] = payload[1::2], payload[0::2]
        return bytes(swapped)
    return payload


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(host.split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return address.ipv4_mapped
        return address
    return None


def media_source(answer: object) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | None:
    """Where the externalMedia channel of ARI's `answer` sends from (address, port), or None if it does not
    say (or says nothing usable: a wildcard address, a port out of range)."""
    variables = answer.get("channelvars") if isinstance(answer, dict) else None
    if not isinstance(variables, dict):
        return None
    address = _address(str(variables.get("UNICASTRTP_LOCAL_ADDRESS") or ""))
    try:
        port = int(str(variables.get("UNICASTRTP_LOCAL_PORT") or ""))
    except ValueError:
        return None
    if address is None or address.is_unspecified or not 0 < port < 65536:
        return None
    return address, port


class RtpReceiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.frames: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUE_FRAMES)
        # Asterisk's end of the stream, once its externalMedia answer named it: nothing is taken before.
        self.peer: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | None = None
        self.last_seq: int | None = None
        self.packets = 0
        self.dropped = 0
        self.refused = 0  # packets from anyone else

    def expect(self, source: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]) -> None:
        self.peer = source

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.peer is None or addr[1] != self.peer[1] or _address(addr[0]) != self.peer[0]:
            self.refused += 1  # only the stream Asterisk started
            return
        parsed = rtp_payload(data)
        if parsed is None:
            return
        seq, payload = parsed
        if self.last_seq is not None and 0 < (self.last_seq - seq) % 65536 < 32768:
            return  # older than what was already handed on: a late duplicate
        self.last_seq = seq
        self.packets += 1
        try:
            self.frames.put_nowait(network_to_little_endian(payload))
        except asyncio.QueueFull:
            self.dropped += 1

    def connection_lost(self, exc: Exception | None) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.frames.put_nowait(None)


class CallAudio:
    """One listening turn's audio: open, iterate `frames()` (16 kHz little-endian PCM), close."""

    rate = RATE

    def __init__(self, ari: AriClient, stasis: StasisRouter, caller_channel: str, host: str) -> None:
        self.ari = ari
        self.stasis = stasis
        self.caller_channel = caller_channel
        self.host = host
        turn = uuid.uuid4().hex[:12]
        self.snoop_id = f"{ari.app}-speech-snoop-{turn}"
        self.media_id = f"{ari.app}-speech-media-{turn}"
        self.bridge_id = f"{ari.app}-speech-{turn}"
        self.receiver = RtpReceiver()
        self._transport: asyncio.DatagramTransport | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self.receiver, local_addr=(self.host, 0))
        self._transport = transport
        port = transport.get_extra_info("sockname")[1]
        # Watched before they exist: their StasisStart must not look like a new call.
        snoop_state = self.stasis.watch(self.snoop_id)
        media_state = self.stasis.watch(self.media_id)
        try:
            # The three are independent: one round trip of ARI, not three, before the prompt plays. Each is
            # waited for (none left in flight to make a channel after close() hung up).
            _, answer, _ = await _all(
                self.ari.create_bridge(self.bridge_id),
                self.ari.external_media(self.media_id, f"{self.host}:{port}", fmt=FORMAT),
                self.ari.snoop(self.caller_channel, self.snoop_id, spy="in", app_args="speech"),
            )
            source = media_source(answer)
            if source is None:
                raise AriError(502, "POST", "/channels/externalMedia", "the answer names no RTP source to accept")
            self.receiver.expect(source)
            await asyncio.wait_for(
                asyncio.gather(snoop_state.in_stasis.wait(), media_state.in_stasis.wait()), STASIS_WAIT_S
            )
            await self.ari.add_to_bridge(self.bridge_id, [self.snoop_id, self.media_id])
        except BaseException:
            await self.close()
            raise

    async def frames(self) -> AsyncIterator[bytes]:
        while True:
            frame = await self.receiver.frames.get()
            if frame is None:
                return
            yield frame

    async def close(self) -> None:
        # Together, one round trip: what the flow says next waits on it. A part that failed or is gone is
        # left to Asterisk (a missing one answers 404).
        ended = await asyncio.gather(
            self.ari.hangup(self.snoop_id),
            self.ari.hangup(self.media_id),
            self.ari.destroy_bridge(self.bridge_id),
            return_exceptions=True,
        )
        for failed in ended:
            if isinstance(failed, Exception) and not isinstance(failed, AriError):
                log.warning("speech on %s: ending the turn's audio: %r", self.caller_channel, failed)
        for channel_id in (self.snoop_id, self.media_id):
            self.stasis.forget(channel_id)
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self.receiver.dropped:
            log.warning("speech on %s: %d audio frames dropped", self.caller_channel, self.receiver.dropped)
        if self.receiver.refused:
            log.warning(
                "speech on %s: %d packets from other senders than Asterisk refused",
                self.caller_channel,
                self.receiver.refused,
            )


async def _all(*requests: Awaitable[Any]) -> list[Any]:
    """Every request's answer; when one failed, the first failure, raised once all of them have ended."""
    answers = await asyncio.gather(*requests, return_exceptions=True)
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    return answers
