import struct
from pathlib import Path

import numpy as np
import pytest

from speech.audio import AudioError, Pcm, is_narrowband, read_wav, resample, write_wav
from speech.media import network_to_little_endian, rtp_payload
from speech.vad import Endpointer


def tone(freq: float, seconds: float, rate: int, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def pcm(signal: np.ndarray, rate: int) -> Pcm:
    return Pcm(np.round(signal).astype("<i2").tobytes(), rate)


def test_read_wav_accepts_8_and_16_khz_mono(tmp_path: Path) -> None:
    for rate in (8000, 16000):
        path = tmp_path / f"{rate}.wav"
        write_wav(path, pcm(tone(440, 0.5, rate), rate))
        got = read_wav(path)
        assert (got.rate, round(got.seconds, 2)) == (rate, 0.5)


def test_read_wav_names_the_file_and_every_problem(tmp_path: Path) -> None:
    import wave

    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(1)
        wav.setframerate(44100)
        wav.writeframes(b"\0" * 100)
    with pytest.raises(AudioError) as err:
        read_wav(path)
    message = str(err.value)
    assert str(path) in message
    assert "2 channels" in message and "8-bit samples" in message and "44100 Hz" in message
    with pytest.raises(AudioError, match="no such file"):
        read_wav(tmp_path / "missing.wav")
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(AudioError, match="not a PCM WAV file"):
        read_wav(tmp_path / "text.wav")


def test_resampling_keeps_a_tone_and_its_length() -> None:
    up = resample(pcm(tone(1000, 1.0, 8000), 8000), 16000)
    assert up.rate == 16000 and round(up.seconds, 3) == 1.0
    spectrum = np.abs(np.fft.rfft(np.frombuffer(up.samples, dtype="<i2")))
    assert abs(np.argmax(spectrum) * 16000 / (len(spectrum) * 2 - 2) - 1000) < 5
    # No mirror image of the tone at 7 kHz: the interpolation filter removed it.
    image = spectrum[int(7000 / 8000 * (len(spectrum) - 1))]
    assert image < spectrum.max() / 100
    down = resample(up, 8000)
    assert down.rate == 8000 and len(down.samples) == len(pcm(tone(1000, 1.0, 8000), 8000).samples)


def test_narrowband_detection() -> None:
    assert is_narrowband(pcm(tone(1000, 0.5, 8000), 8000))
    assert is_narrowband(resample(pcm(tone(1000, 0.5, 8000), 8000), 16000))
    assert not is_narrowband(pcm(tone(1000, 0.5, 16000) + tone(6000, 0.5, 16000), 16000))


def rtp(seq: int, payload: bytes, *, csrc: int = 0, extension: bytes | None = None, padding: int = 0) -> bytes:
    first = 0x80 | csrc | (0x10 if extension is not None else 0) | (0x20 if padding else 0)
    packet = struct.pack("!BBHII", first, 118, seq, 160 * seq, 0x1234) + b"\0\0\0\1" * csrc
    if extension is not None:
        packet += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    return packet + payload + (b"\0" * (padding - 1) + bytes([padding]) if padding else b"")


def test_rtp_payload_skips_csrcs_extensions_and_padding() -> None:
    assert rtp_payload(rtp(7, b"\x01\x02")) == (7, b"\x01\x02")
    assert rtp_payload(rtp(8, b"\x01\x02", csrc=2, extension=b"abcd", padding=4)) == (8, b"\x01\x02")
    assert rtp_payload(b"\x00" * 20) is None  # not version 2
    assert rtp_payload(b"\x80\x00") is None  # too short


def test_slin_from_rtp_is_big_endian() -> None:
    assert network_to_little_endian(struct.pack(">hh", 1000, -2)) == struct.pack("<hh", 1000, -2)


def noise(seconds: float, rate: int, rms: float = 30.0) -> np.ndarray:
    return np.random.default_rng(5).normal(0, rms, int(seconds * rate))


def voiced(seconds: float, rate: int) -> np.ndarray:
    # A vowel-like sound: a 140 Hz pulse train's harmonics with a formant-ish envelope.
    t = np.arange(int(seconds * rate)) / rate
    return sum((3000 / k) * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 20))  # type: ignore[return-value]


def test_the_endpointer_finds_the_utterance_in_the_stream() -> None:
    rate = 16000
    stream = np.concatenate([noise(1.0, rate), voiced(1.2, rate), noise(1.5, rate)])
    endpointer = Endpointer(rate, end_silence_s=0.6)
    samples = pcm(stream, rate).samples
    events = []
    for i in range(0, len(samples), 640):  # 20 ms at a time, as RTP brings it
        events += [(i / 2 / rate, e.kind) for e in endpointer.feed(samples[i : i + 640])]
    kinds = [k for _, k in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and set(kinds[1:-1]) == {"speech"}
    start_at = next(t for t, k in events if k == "start")
    end_at = next(t for t, k in events if k == "end")
    assert 1.0 <= start_at <= 1.2  # within 100 ms of the voice starting (plus the frame it needs)
    assert 2.7 <= end_at <= 2.95  # the voice stops at 2.2 s; 0.6 s of silence later it is over
    assert endpointer.speech_start_s is not None and abs(endpointer.speech_start_s - 1.0) < 0.1
    assert endpointer.speech_end_s is not None and abs(endpointer.speech_end_s - 2.2) < 0.1
    assert endpointer.feed(samples[:640]) == []  # nothing after the end


def test_silence_and_line_noise_never_start_an_utterance() -> None:
    endpointer = Endpointer(8000)
    assert endpointer.feed(pcm(noise(3.0, 8000, rms=60), 8000).samples) == []
    assert endpointer.feed(b"\0" * 16000 * 2) == []


def test_a_long_monologue_is_cut_at_max_speech() -> None:
    endpointer = Endpointer(16000, max_speech_s=1.0)
    events = endpointer.feed(pcm(voiced(3.0, 16000), 16000).samples)
    assert [e.kind for e in events][-1] == "end"
    assert sum(e.kind == "speech" for e in events) == 50  # 1.0 s of 20 ms frames


def _rtp(seq: int, payload: bytes = b"\x00\x01" * 160) -> bytes:
    return bytes([0x80, 0x0B]) + struct.pack("!HII", seq, seq * 320, 0x1234) + payload


def test_the_rtp_socket_takes_only_the_source_asterisk_named() -> None:
    """Not "the first sender": a process racing Asterisk to the port is refused, before and after Asterisk's
    first packet; only the address and port the externalMedia answer named are heard."""
    from speech.media import RtpReceiver, media_source

    answer = {"id": "m", "channelvars": {"UNICASTRTP_LOCAL_ADDRESS": "127.0.0.1", "UNICASTRTP_LOCAL_PORT": "12010"}}
    receiver = RtpReceiver()
    receiver.datagram_received(_rtp(1), ("127.0.0.1", 40000))  # before Asterisk's answer: nobody is heard yet
    source = media_source(answer)
    assert source is not None
    receiver.expect(source)
    receiver.datagram_received(_rtp(2), ("127.0.0.1", 40000))  # the racer, first to send after the answer
    receiver.datagram_received(_rtp(3), ("127.0.0.1", 12010))  # Asterisk
    receiver.datagram_received(_rtp(4), ("127.0.0.2", 12010))  # right port, wrong address
    receiver.datagram_received(_rtp(5), ("::ffff:127.0.0.1", 12010))  # Asterisk over a dual-stack socket
    assert receiver.packets == 2 and receiver.refused == 3
    assert receiver.frames.qsize() == 2


@pytest.mark.parametrize(
    "channelvars",
    [
        None,
        {},
        {"UNICASTRTP_LOCAL_ADDRESS": "127.0.0.1"},
        {"UNICASTRTP_LOCAL_ADDRESS": "0.0.0.0", "UNICASTRTP_LOCAL_PORT": "12010"},  # noqa: S104
        {"UNICASTRTP_LOCAL_ADDRESS": "asterisk", "UNICASTRTP_LOCAL_PORT": "12010"},
        {"UNICASTRTP_LOCAL_ADDRESS": "127.0.0.1", "UNICASTRTP_LOCAL_PORT": "70000"},
    ],
)
def test_an_answer_that_names_no_usable_source_gives_none(channelvars: object) -> None:
    from speech.media import media_source

    assert media_source({"id": "m", "channelvars": channelvars}) is None


class _SlowAri:
    """ARI answering each request after `delay`, noting what is in flight at once and the order of events."""

    app = "hilo-unit"

    def __init__(self, stasis: object, delay: float = 0.05, fail: str = "") -> None:
        self.stasis = stasis
        self.delay, self.fail = delay, fail
        self.in_flight = self.most = 0
        self.log: list[str] = []

    async def _request(self, what: str, channel_id: str | None = None) -> dict[str, object]:
        import asyncio

        from asterisk.ari import AriError

        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.log.append(f"{what} sent")
        try:
            await asyncio.sleep(self.delay)
            if what == self.fail:
                raise AriError(500, "POST", what, "refused")
            if channel_id is not None:
                self.stasis.watch(channel_id).in_stasis.set()  # type: ignore[attr-defined]
            return {"channelvars": {"UNICASTRTP_LOCAL_ADDRESS": "127.0.0.1", "UNICASTRTP_LOCAL_PORT": "12010"}}
        finally:
            self.in_flight -= 1
            self.log.append(f"{what} done")

    async def create_bridge(self, bridge_id: str) -> object:
        return await self._request("bridge")

    async def external_media(self, channel_id: str, host: str, fmt: str) -> object:
        return await self._request("media", channel_id)

    async def snoop(self, channel_id: str, snoop_id: str, spy: str, app_args: str) -> object:
        return await self._request("snoop", snoop_id)

    async def add_to_bridge(self, bridge_id: str, channels: list[str]) -> object:
        return await self._request("add")

    async def hangup(self, channel_id: str) -> object:
        return await self._request("hangup")

    async def destroy_bridge(self, bridge_id: str) -> object:
        return await self._request("destroy")


async def test_a_listening_turn_opens_and_ends_its_audio_with_its_ari_requests_together() -> None:
    from asterisk.stasis import StasisRouter
    from speech.media import CallAudio

    stasis = StasisRouter(lambda start: None)
    ari = _SlowAri(stasis)
    audio = CallAudio(ari, stasis, "caller-1", "127.0.0.1")  # type: ignore[arg-type]
    await audio.open()
    assert ari.most == 3  # bridge, external media and snoop at once; then the adding
    assert ari.log[-2:] == ["add sent", "add done"]
    ari.most = 0
    await audio.close()
    assert ari.most == 3


async def test_a_failed_opening_ends_every_request_before_cleaning_up() -> None:
    from asterisk.ari import AriError
    from asterisk.stasis import StasisRouter
    from speech.media import CallAudio

    stasis = StasisRouter(lambda start: None)
    ari = _SlowAri(stasis, fail="media")
    audio = CallAudio(ari, stasis, "caller-1", "127.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(AriError):
        await audio.open()
    # No request still in flight to make a channel after the clean-up hung up: all three ended first.
    first_hangup = ari.log.index("hangup sent")
    assert {"bridge done", "media done", "snoop done"} <= set(ari.log[:first_hangup])
    assert "add sent" not in ari.log
