"""The callers' RTP: µ-law, packets, RFC 4733 events, each phone's stream, and timing the first audible
packet Asterisk sends (over real sockets on loopback)."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

from server.loadtest.media import (
    PCMU,
    SILENCE,
    TELEPHONE_EVENT,
    MediaAgent,
    Outgoing,
    dtmf_packets,
    encode_ulaw,
    linear_to_ulaw,
    parse_rtp,
    peak,
    rtp_packet,
    speech_packets,
    threshold_from_dbfs,
    ulaw_to_linear,
)


def test_ulaw_round_trips_and_silence_has_no_peak() -> None:
    for byte in range(256):
        linear = ulaw_to_linear(byte)
        assert ulaw_to_linear(linear_to_ulaw(linear)) == linear
    assert peak(SILENCE) == 0
    loud = encode_ulaw(struct.pack("<4h", 0, 12000, -16000, 300))
    assert peak(loud) * 128 >= 15000
    assert threshold_from_dbfs(-30) == 8  # 1036 / 128


def test_rtp_packets_parse_back() -> None:
    packet = rtp_packet(PCMU, 65535 + 3, 1234, 0xDEADBEEF, b"\x01\x02", marker=True)
    assert packet[1] == 0x80 | PCMU and packet[2:4] == b"\x00\x02"  # the sequence wraps
    assert parse_rtp(packet) == (PCMU, 0xDEADBEEF, b"\x01\x02")
    assert parse_rtp(b"\x00" * 20) is None  # not version 2
    with_csrc = bytes([0x81]) + packet[1:12] + b"CSRC" + b"\x05"
    assert parse_rtp(with_csrc) == (PCMU, 0xDEADBEEF, b"\x05")


def test_an_rfc4733_event_grows_on_one_timestamp_then_ends_three_times() -> None:
    packets = dtmf_packets("#", ssrc=7, seq=100, timestamp=5000, duration_ms=100)
    assert len(packets) == 5 + 3
    parsed = [(p[1], struct.unpack("!HI", p[2:8]), p[12:]) for p in packets]
    assert parsed[0][0] == 0x80 | TELEPHONE_EVENT and all(m == TELEPHONE_EVENT for m, _, _ in parsed[1:])
    assert [seq for _, (seq, _), _ in parsed] == list(range(100, 108))
    assert {ts for _, (_, ts), _ in parsed} == {5000}
    events = [struct.unpack("!BBH", payload) for _, _, payload in parsed]
    assert all(e[0] == 11 for e in events)  # '#'
    assert [e[2] for e in events[:5]] == [160, 320, 480, 640, 800]
    assert all(e[1] & 0x80 for e in events[5:]) and not any(e[1] & 0x80 for e in events[:5])


def test_speech_is_cut_in_20_ms_frames_the_last_one_padded() -> None:
    packets = speech_packets(b"\x10" * 400, ssrc=1, seq=0, timestamp=0)
    assert [len(p) - 12 for p in packets] == [160, 160, 160]
    assert packets[-1].endswith(b"\xff" * 80)
    assert [struct.unpack("!I", p[4:8])[0] for p in packets] == [0, 160, 320]


def test_a_phone_sends_silence_then_its_key_in_the_same_stream() -> None:
    out = Outgoing(("127.0.0.1", 1), until=1e12)
    first, second = out.next_packet(0.0), out.next_packet(0.02)
    assert first[1] == 0x80 | PCMU and second[1] == PCMU  # marked start, then plain audio
    out.planned.append((1.0, "key", "2"))
    waiting = out.next_packet(0.5)
    assert waiting[1] == PCMU  # not yet
    burst = [out.next_packet(1.0 + i * 0.02) for i in range(11)]
    assert [p[1] & 0x7F for p in burst] == [TELEPHONE_EVENT] * 11
    after = out.next_packet(1.3)
    seqs = [struct.unpack("!H", p[2:4])[0] for p in [first, second, waiting, *burst, after]]
    assert seqs == list(range(seqs[0], seqs[0] + 15))  # one stream, no gap
    assert {p[8:12] for p in [first, *burst, after]} == {first[8:12]}  # one SSRC


async def test_the_first_audible_packet_of_a_call_is_timed() -> None:
    agent = MediaAgent("127.0.0.1")
    agent.start()
    asterisk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    asterisk.bind(("127.0.0.1", 0))
    port = asterisk.getsockname()[1]
    try:
        answered = time.time()
        loud = encode_ulaw(struct.pack("<160h", *([9000, -9000] * 80)))
        for seq in range(3):  # silence first: not a prompt
            asterisk.sendto(rtp_packet(PCMU, seq, seq * 160, 42, SILENCE), agent.address)
            await asyncio.sleep(0.02)
        sent_loud = time.time()
        asterisk.sendto(rtp_packet(PCMU, 3, 480, 42, loud), agent.address)
        for _ in range(500):  # within 5 s
            if agent.first_audio(port, answered - 1, None) is not None:
                break
            await asyncio.sleep(0.01)
        heard = agent.first_audio(port, answered - 1, None)
        assert heard is not None and sent_loud <= heard < sent_loud + 1
        assert agent.first_audio(port, heard + 1, None) is None  # a later call on the port heard nothing yet
        # the phone side: once open, the call gets a packet at once and then every 20 ms
        agent.open_call("c1", ("127.0.0.1", port), time.time() + 10)
        asterisk.settimeout(2)
        got = [asterisk.recv(2048) for _ in range(3)]
        assert all(parse_rtp(p) == (PCMU, int.from_bytes(got[0][8:12], "big"), SILENCE) for p in got)
        agent.close_call("c1")
    finally:
        asterisk.close()
        await agent.close()
