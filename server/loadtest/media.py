"""The callers' audio: one UDP socket on the trunk's address that every caller's SDP names.

Asterisk sends each call's audio from a port of its own (the one in its 200 OK's SDP, which the scenario
logs), so the socket tells calls apart by the sender's port, and a port used again by a later call by the
stream's SSRC and time. For each stream it keeps when the first packet arrived and when the first audible
one did (a PCMU payload whose peak is above the threshold: silence and comfort noise are not a prompt).
"Answer -> first prompt" is then that time minus the moment SIPp read the 200 OK, both on this machine's
clock. A Python receiver rather than SIPp's own media port because SIPp can echo or play audio but does not
time what it receives; and it is simple: a blocking socket in a thread, a few dictionary lookups a packet.

The same socket is each caller's phone: from the answer it sends 20 ms of silence every 20 ms (a phone
does; Asterisk's Answer() waits up to 500 ms for the caller's first frame, and symmetric RTP keeps sending
to where the caller's audio comes from), and at `key_after` the menu choice in that stream when it goes
over RTP: RFC 4733 telephone-events, or synthesized speech as PCMU. One thread receives, one sends every
call's packet each 20 ms tick."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

RTP_HEADER = 12
PCMU = 0
TELEPHONE_EVENT = 101  # the payload type the scenario's SDP offers for telephone-event
FRAME = 160  # 20 ms of 8 kHz audio
DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}


def ulaw_to_linear(byte: int) -> int:
    u = ~byte & 0xFF
    sample = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    sample -= 0x84
    return -sample if u & 0x80 else sample


def linear_to_ulaw(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = 7
    for e in range(8):
        if magnitude <= (0xFF << e):
            exponent = e
            break
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


# Each µ-law byte's magnitude / 128 (0..251): `payload.translate(PEAK)` and max() find a packet's peak in C.
PEAK = bytes(min(255, abs(ulaw_to_linear(b)) >> 7) for b in range(256))


def peak(payload: bytes) -> int:
    """The loudest sample of a PCMU payload, as |linear| / 128."""
    return max(payload.translate(PEAK)) if payload else 0


def threshold_from_dbfs(dbfs: float) -> int:
    return max(1, int(32768 * 10 ** (dbfs / 20)) >> 7)


def encode_ulaw(pcm16le: bytes) -> bytes:
    samples = struct.unpack(f"<{len(pcm16le) // 2}h", pcm16le[: len(pcm16le) // 2 * 2])
    return bytes(linear_to_ulaw(s) for s in samples)


def rtp_packet(payload_type: int, seq: int, timestamp: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | payload_type, seq & 0xFFFF, timestamp, ssrc) + payload


def parse_rtp(data: bytes) -> tuple[int, int, bytes] | None:
    """(payload type, ssrc, payload) of an RTP packet, or None for anything else."""
    if len(data) < RTP_HEADER or data[0] >> 6 != 2:
        return None
    offset = RTP_HEADER + 4 * (data[0] & 0x0F)
    if data[0] & 0x10 and len(data) >= offset + 4:  # a header extension
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
    if offset > len(data):
        return None
    end = len(data)
    if data[0] & 0x20 and end > offset:  # padding
        end -= data[-1]
    ssrc = int.from_bytes(data[8:12], "big")
    return data[1] & 0x7F, ssrc, data[offset:end]


def dtmf_packets(key: str, ssrc: int, seq: int, timestamp: int, duration_ms: int = 160) -> list[bytes]:
    """An RFC 4733 event: updates every 20 ms with a growing duration (the first marked), then three end
    packets, all on the event's one timestamp."""
    event = DTMF_EVENTS[key]
    volume = 10
    packets = []
    steps = max(1, duration_ms // 20)
    for i in range(1, steps + 1):
        payload = struct.pack("!BBH", event, volume, i * FRAME)
        packets.append(rtp_packet(TELEPHONE_EVENT, seq + i - 1, timestamp, ssrc, payload, marker=i == 1))
    end = struct.pack("!BBH", event, 0x80 | volume, steps * FRAME)
    packets += [rtp_packet(TELEPHONE_EVENT, seq + steps + j, timestamp, ssrc, end) for j in range(3)]
    return packets


def speech_packets(ulaw: bytes, ssrc: int, seq: int, timestamp: int) -> list[bytes]:
    frames = [ulaw[i : i + FRAME] for i in range(0, len(ulaw), FRAME)]
    if frames and len(frames[-1]) < FRAME:
        frames[-1] = frames[-1] + b"\xff" * (FRAME - len(frames[-1]))
    return [
        rtp_packet(PCMU, seq + i, timestamp + i * FRAME, ssrc, frame, marker=i == 0) for i, frame in enumerate(frames)
    ]


@dataclass
class Stream:
    port: int
    ssrc: int
    first: float
    loud: float | None = None
    last: float = 0.0
    packets: int = 0


SILENCE = b"\xff" * FRAME


@dataclass
class Outgoing:
    """What one caller's phone sends: 20 ms of silence every 20 ms, as a phone does, and at the planned
    moment the menu choice in the same stream (speech frames, or RFC 4733 events on one timestamp)."""

    destination: tuple[str, int]
    until: float  # epoch: stop sending (a bound; the call's end closes it sooner)
    ssrc: int = field(default_factory=lambda: secrets.randbits(32))
    seq: int = field(default_factory=lambda: secrets.randbelow(30000))
    timestamp: int = field(default_factory=lambda: secrets.randbits(31))
    planned: list[tuple[float, str, bytes | str]] = field(default_factory=list)  # (at, "key"|"speech", what)
    ready: list[bytes] = field(default_factory=list)  # packets due now, in order
    started: bool = False

    def next_packet(self, now: float) -> bytes:
        if not self.ready and self.planned and now >= self.planned[0][0]:
            _, kind, what = self.planned.pop(0)
            if kind == "key" and isinstance(what, str):
                self.ready = dtmf_packets(what, self.ssrc, self.seq, self.timestamp)
                self.seq += len(self.ready)
                self.timestamp += FRAME * (len(self.ready) - 3)  # the event's span; its end packets repeat
            elif isinstance(what, bytes):
                self.ready = speech_packets(what, self.ssrc, self.seq, self.timestamp)
                self.seq += len(self.ready)
                self.timestamp += FRAME * len(self.ready)
        if self.ready:
            return self.ready.pop(0)
        packet = rtp_packet(PCMU, self.seq, self.timestamp, self.ssrc, SILENCE, marker=not self.started)
        self.started = True
        self.seq += 1
        self.timestamp += FRAME
        return packet


class MediaAgent:
    """The socket every caller's audio goes to and comes from (see the module's docstring)."""

    def __init__(self, host: str, port: int = 0, threshold: int = 8) -> None:
        self.threshold = threshold
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.streams: dict[tuple[int, int], Stream] = {}
        self.by_port: dict[int, list[Stream]] = {}
        self.packets = 0
        self.sent = 0
        self.late_ticks = 0  # sending ticks more than 20 ms late (the machine could not keep up)
        self._outgoing: dict[str, Outgoing] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._receive, name="loadtest-rtp-in", daemon=True),
            threading.Thread(target=self._send_loop, name="loadtest-rtp-out", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    async def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 2)
        self.sock.close()

    # Receiving -----------------------------------------------------------------------------------

    def _receive(self) -> None:
        buffer = bytearray(2048)
        view = memoryview(buffer)
        streams, by_port, threshold = self.streams, self.by_port, self.threshold
        while not self._stop.is_set():
            try:
                size, source = self.sock.recvfrom_into(buffer)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.time()
            self.packets += 1
            if size < RTP_HEADER:
                continue
            key = (source[1], int.from_bytes(view[8:12], "big"))
            stream = streams.get(key)
            if stream is None:
                stream = streams[key] = Stream(source[1], key[1], now)
                by_port.setdefault(source[1], []).append(stream)
            stream.last = now
            stream.packets += 1
            if stream.loud is None:
                parsed = parse_rtp(bytes(view[:size]))
                if parsed is not None and parsed[0] == PCMU and peak(parsed[2]) >= threshold:
                    stream.loud = now

    def first_audio(self, port: int, since: float, until: float | None) -> float | None:
        """The first audible packet Asterisk sent from `port` between `since` and `until` (a call's life)."""
        hits = [
            s.loud
            for s in self.by_port.get(port, [])
            if s.loud is not None and s.loud >= since and (until is None or s.first <= until)
        ]
        return min(hits) if hits else None

    # Sending -------------------------------------------------------------------------------------

    def open_call(self, call_id: str, destination: tuple[str, int], until: float) -> None:
        """The call is answered: its phone starts sending now (the first packet at once, as a phone
        would: Asterisk's Answer() waits up to 500 ms for the caller's first frame)."""
        out = Outgoing(destination, until)
        with self._lock:
            self._outgoing[call_id] = out
            packet = out.next_packet(time.time())
        self._sendto(packet, destination)

    def plan(self, call_id: str, at: float, kind: str, what: bytes | str) -> None:
        with self._lock:
            out = self._outgoing.get(call_id)
            if out is not None:
                out.planned.append((at, kind, what))
                out.planned.sort(key=lambda p: p[0])

    def close_call(self, call_id: str) -> None:
        with self._lock:
            self._outgoing.pop(call_id, None)

    def _sendto(self, packet: bytes, destination: tuple[str, int]) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendto(packet, destination)
            self.sent += 1

    def _send_loop(self) -> None:
        tick = time.monotonic()
        while not self._stop.is_set():
            now = time.time()
            with self._lock:
                due = []
                for call_id, out in list(self._outgoing.items()):
                    if now > out.until:
                        del self._outgoing[call_id]
                        continue
                    due.append((out.next_packet(now), out.destination))
            for packet, destination in due:
                self._sendto(packet, destination)
            tick += 0.02
            delay = tick - time.monotonic()
            if delay < -0.02:
                self.late_ticks += 1
                tick = time.monotonic()
            elif delay > 0:
                time.sleep(delay)


def read_wav_pcm16(path: os.PathLike[str] | str) -> bytes:
    """The samples of a mono 16-bit WAV file (speech.tts renders 8 kHz ones)."""
    import wave

    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1 or wav.getframerate() != 8000:
            raise ValueError(f"{path}: want 8 kHz mono 16-bit audio")
        return wav.readframes(wav.getnframes())
