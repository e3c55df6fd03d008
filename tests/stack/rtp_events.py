"""Keys pressed the way carriers send them: RFC 4733 telephone-events in the RTP stream, written as a pcap
file that SIPp plays into the call (`<exec play_pcap_audio=...>`).

SIPp ships one pcap per key (sip-tester's dtmf_2833_*.pcap), but each is a separate recording with its own
sequence numbers and timestamps: the same key twice is the same event twice, which a receiver rightly
drops as a repeat, and keys from different files jump back and forth in sequence. So the stream is written
here, with the standard library: a little silence first (Asterisk's strict RTP learns a new source from a
few packets in sequence), then each key as one event (a first packet with the marker bit, updates every
20 ms, three end packets), silence between keys; one SSRC, consecutive sequence numbers, timestamps that
only move forward. (scapy would do the same with more machinery than these few headers need.)"""

from __future__ import annotations

import struct
from pathlib import Path

PCMU, TELEPHONE_EVENT = 0, 101  # the payload types the test callers offer (tests/sipp/*.xml SDP)
EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}
_PTIME_MS = 20
_SAMPLES = 8 * _PTIME_MS  # 8 kHz
_SILENCE = b"\xff" * _SAMPLES  # PCMU silence
_SSRC = 0x4C1F0A11
# Addresses in the file do not matter: SIPp sends the payloads from the call's own media socket to the
# address Asterisk's SDP answer gave.
_SRC, _DST, _SPORT, _DPORT = bytes([127, 0, 0, 3]), bytes([127, 0, 0, 1]), 6000, 10000


def write_keys_pcap(
    path: Path, keys: str, *, key_ms: int = 120, gap_ms: int = 200, lead_ms: int = 400, volume: int = 10
) -> float:
    """Write `keys` (digits, * and #) as RFC 4733 events into a pcap at `path`; returns the stream's length in
    seconds. ValueError for a character that is not a key."""
    for key in keys:
        if key not in EVENTS:
            raise ValueError(f"{key!r} is not a telephone key (0-9, * or #)")
    packets: list[tuple[int, bytes]] = []  # (time in ms from the start, RTP packet)
    seq, timestamp, now = 1, 0, 0

    def rtp(payload_type: int, payload: bytes, *, marker: bool = False, at_ts: int | None = None) -> bytes:
        second = (0x80 if marker else 0) | payload_type
        stamp = at_ts if at_ts is not None else timestamp
        return struct.pack("!BBHII", 0x80, second, seq & 0xFFFF, stamp, _SSRC) + payload

    def silence(ms: int) -> None:
        nonlocal seq, timestamp, now
        for _ in range(ms // _PTIME_MS):
            packets.append((now, rtp(PCMU, _SILENCE)))
            seq, timestamp, now = seq + 1, timestamp + _SAMPLES, now + _PTIME_MS

    silence(lead_ms)
    for key in keys:
        start, event = timestamp, EVENTS[key]
        steps = max(1, key_ms // _PTIME_MS)
        for n in range(1, steps + 1):
            payload = struct.pack("!BBH", event, volume & 0x3F, n * _SAMPLES)
            packets.append((now, rtp(TELEPHONE_EVENT, payload, marker=n == 1, at_ts=start)))
            seq, now = seq + 1, now + _PTIME_MS
        end = struct.pack("!BBH", event, 0x80 | (volume & 0x3F), steps * _SAMPLES)
        for _ in range(3):  # the end of the event is sent three times, with one sequence number (RFC 4733 2.5.1.4)
            packets.append((now, rtp(TELEPHONE_EVENT, end, at_ts=start)))
        seq, timestamp, now = seq + 1, start + (steps + 1) * _SAMPLES, now + _PTIME_MS
        silence(gap_ms)
    path.write_bytes(_pcap(packets))
    return now / 1000


def _pcap(packets: list[tuple[int, bytes]]) -> bytes:
    """A classic pcap (microsecond timestamps, Ethernet frames) of UDP datagrams."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for ms, payload in packets:
        udp = struct.pack("!HHHH", _SPORT, _DPORT, 8 + len(payload), 0) + payload
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, _SRC, _DST)
        ip = header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + udp
        frame = b"\x00" * 12 + b"\x08\x00" + ip
        out.append(struct.pack("<IIII", ms // 1000, (ms % 1000) * 1000, len(frame), len(frame)) + frame)
    return b"".join(out)


def _checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
