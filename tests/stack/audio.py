"""Measuring what a leg of a call heard: record what Asterisk sends to a channel (a snoop with spy=out in the
observer's app), then read the tone amplitudes out of the file (Goertzel: the strength of one frequency).
And a phone that talks: a tone sent as RTP into a PJSIP channel (`talk_into`)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import struct
import uuid
import wave
from dataclasses import dataclass
from pathlib import Path

from asterisk.ari import AriClient, AriError
from tests.stack.expect import EventStream

RATE = 8000  # ARI's "wav" recording: 8 kHz, 16-bit, mono


def tone_amplitude(samples: list[int], freq: float, rate: int = RATE) -> float:
    """The amplitude of `freq` in the samples (a pure tone of amplitude A gives about A)."""
    n = len(samples)
    if n == 0:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * math.sqrt(max(power, 0.0)) / n


def read_wav(path: Path) -> list[int]:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE), path
        frames = w.readframes(w.getnframes())
    return [int.from_bytes(frames[i : i + 2], "little", signed=True) for i in range(0, len(frames), 2)]


@dataclass
class Heard:
    seconds: float
    samples: list[int]

    def amplitude(self, freq: float) -> float:
        return tone_amplitude(self.samples, freq)


async def record_what_it_hears(
    ari: AriClient, events: EventStream, channel_id: str, seconds: int, folder: Path
) -> Heard:
    """Record `seconds` of the audio Asterisk sends to `channel_id` (what that party hears)."""
    snoop_id = f"sim-snoop-{uuid.uuid4()}"
    name = f"sim-heard-{uuid.uuid4()}"
    mark = events.mark()
    await ari.snoop(channel_id, snoop_id, spy="out", app_args="sim-snoop")
    try:
        await events.expect("StasisStart", within=5, since=mark, channel__id=snoop_id)
        await ari.record(
            snoop_id, name, fmt="wav", max_duration_s=seconds, max_silence_s=0, beep=False, terminate_on="none"
        )
        await events.expect("RecordingFinished", within=seconds + 5, since=mark, recording__name=name)
        target = folder / f"{name}.wav"
        await ari.download_stored_recording(name, target)
        samples = read_wav(target)
        return Heard(len(samples) / RATE, samples)
    finally:
        with contextlib.suppress(AriError):
            await ari.hangup(snoop_id)
        with contextlib.suppress(AriError):
            await ari.delete_stored_recording(name)


def _ulaw(sample: int) -> int:
    """One 16-bit sample as G.711 mu-law (the SIPp agent phones' codec)."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = min(magnitude.bit_length() - 8, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


async def talk_into(ari: AriClient, channel_id: str, freq: int, amplitude: int = 4000) -> asyncio.Task[None]:
    """Make a PJSIP channel's phone talk: a steady tone sent as RTP (PCMU, 20 ms packets) from a local UDP socket
    to the channel's own RTP port, as the phone at the other end would send it (the SIPp agents answer but send
    no audio). Asterisk's strict RTP learns this socket as the phone's source. Cancel the task to stop."""
    found = await ari.request("GET", f"/channels/{channel_id}/variable", params={"variable": "CHANNEL(rtp,src)"})
    host, _, port = str(found["value"]).rpartition(":")
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=(host, int(port)))
    ssrc = random.getrandbits(32)
    period = [_ulaw(round(amplitude * math.sin(2 * math.pi * freq * i / RATE))) for i in range(RATE)]

    async def send() -> None:
        seq, start, n = random.getrandbits(16), loop.time(), 0
        try:
            while True:
                offset = (n * 160) % RATE
                payload = bytes(period[offset : offset + 160])
                header = struct.pack("!BBHII", 0x80, 0, (seq + n) & 0xFFFF, (n * 160) & 0xFFFFFFFF, ssrc)
                transport.sendto(header + payload)
                n += 1
                await asyncio.sleep(max(start + n * 0.02 - loop.time(), 0))  # paced like a phone, 50 packets/s
        finally:
            transport.close()

    return asyncio.create_task(send(), name=f"rtp-tone-{channel_id}")
