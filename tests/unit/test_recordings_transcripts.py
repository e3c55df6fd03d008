"""Transcripts without a stack: the retry policy and language choice of the queue, how a recording is cut
into chunks (paused spans never among them), the stream the store's segments are read through, and the
full-text query built for `GET /api/recordings?q=`."""

from __future__ import annotations

import io
import math
import struct
import wave
from datetime import timedelta
from typing import Any

import pytest

from crm_bridge.timeline import shareable
from recordings import search
from recordings.audio import Span
from recordings.policy import RecordingPolicy
from recordings.transcribe import SegmentStream, chunks, quietest_cut, speech_regions, transcribe_wav
from recordings.transcripts import RetryPolicy, language_of
from routing.scope import Scope
from speech.audio import Pcm
from speech.engines import Engine, Heard, Recognizer
from speech.matching import Grammar

RATE = 8000
PAUSED_MARK = 12345  # a sample value only the paused span holds


def test_retries_back_off_then_give_up() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_s=30)
    assert policy.retry_in(1) == timedelta(seconds=30)
    assert policy.retry_in(2) == timedelta(seconds=60)
    assert policy.retry_in(3) is None
    assert RetryPolicy(max_attempts=1).retry_in(1) is None


@pytest.mark.parametrize(
    ("flow", "customer", "expected"),
    [("en", "es-ES", "en"), (None, "es-ES", "es"), ("  ", None, "en"), ("EN_gb", "es", "en"), (None, None, "en")],
)
def test_the_language_is_the_flows_then_the_customers_then_the_default(
    flow: str | None, customer: str | None, expected: str
) -> None:
    assert language_of(flow, customer, "en") == expected


def test_speech_regions_leave_out_the_paused_spans() -> None:
    assert speech_regions(10.0, []) == [Span(0.0, 10.0)]
    assert speech_regions(10.0, [Span(6.0, 8.0), Span(2.0, 3.0)]) == [Span(0.0, 2.0), Span(3.0, 6.0), Span(8.0, 10.0)]
    assert speech_regions(10.0, [Span(0.0, 4.0), Span(9.0, 12.0)]) == [Span(4.0, 9.0)]
    assert speech_regions(5.0, [Span(0.0, 5.0)]) == []


def _wav(samples: list[int]) -> io.BytesIO:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    out.seek(0)
    return out


def _tone(seconds: float, amplitude: int = 8000) -> list[int]:
    return [int(amplitude * math.sin(2 * math.pi * 440 * i / RATE)) for i in range(int(seconds * RATE))]


def _quiet(seconds: float) -> list[int]:
    return [0] * int(seconds * RATE)


def _values(pcm: Pcm) -> list[int]:
    return list(struct.unpack(f"<{len(pcm.samples) // 2}h", pcm.samples))


def test_long_audio_is_cut_at_quiet_moments_and_paused_audio_is_never_read_out() -> None:
    # 12 s of "speech" with short gaps, a 3 s paused span, 10 more seconds.
    audio = _tone(4.5) + _quiet(0.3) + _tone(4.0) + _quiet(0.3) + _tone(2.9)  # 12.0 s
    audio += [PAUSED_MARK] * (3 * RATE)  # 12-15 s: paused
    audio += _tone(10.0)
    with wave.open(_wav(audio), "rb") as w:
        got = list(chunks(w, speech_regions(25.0, [Span(12.0, 15.0)]), max_chunk_s=5.0))
    assert all(c.seconds <= 5.0 for c in got)
    assert sum(c.seconds for c in got) == pytest.approx(22.0, abs=1e-3)  # everything but the pause
    assert all(PAUSED_MARK not in _values(c) for c in got)
    # The first chunk ends in the first gap (4.5-4.8 s), not in the middle of a word.
    assert 4.5 <= got[0].seconds <= 4.8


def test_quietest_cut_finds_the_gap() -> None:
    samples = struct.pack(f"<{int(3 * RATE)}h", *(_tone(2.0) + _quiet(0.2) + _tone(0.8)))
    assert 2.0 * RATE <= quietest_cut(samples, RATE, search_s=2.0) <= 2.2 * RATE


class _Echo(Recognizer):
    """Hears the number of loud chunks it was fed: enough to see what reaches a recognizer."""

    rate = 8000

    def __init__(self) -> None:
        self.fed: list[bytes] = []
        self.utterances = 0

    def start(self, *, narrowband: bool) -> None:
        self.fed = []

    def feed(self, samples: bytes) -> None:
        self.fed.append(samples)

    def finish(self) -> Heard:
        self.utterances += 1
        values = struct.unpack(f"<{sum(len(f) for f in self.fed) // 2}h", b"".join(self.fed))
        return Heard("paused" if PAUSED_MARK in values else f"words{self.utterances}", 1.0)


class _EchoEngine(Engine):
    name = "echo"

    def __init__(self) -> None:
        self.made: list[_Echo] = []

    def languages(self) -> list[str]:
        return ["en"]

    def unavailable(self, language: str) -> str | None:
        return None

    def recognizer(self, language: str, grammar: Grammar | None) -> Recognizer:
        assert grammar is None, "transcripts use free-form recognition"
        self.made.append(_Echo())
        return self.made[-1]


def test_transcribe_reads_the_store_segments_and_skips_silence_and_pauses() -> None:
    audio = _tone(2.0) + [PAUSED_MARK] * RATE + _quiet(2.0) + [PAUSED_MARK] * (RATE // 2) + _tone(1.0)
    data = _wav(audio).getvalue()
    segments = iter([data[i : i + 1000] for i in range(0, len(data), 1000)])  # as the store yields them
    stream = io.BufferedReader(SegmentStream(segments))
    engine = _EchoEngine()
    result = transcribe_wav(stream, [Span(2.0, 3.0), Span(5.0, 5.5)], engine, "en")
    assert result.text == "words1 words2"  # the tone before and after; the silence between is not decoded
    assert "paused" not in result.text
    assert result.audio_s == pytest.approx(3.0, abs=0.01)


def test_the_search_query_is_a_parameter_matched_per_language() -> None:
    sql, args = search.build(search.SearchQuery("refund -television", scope=Scope("agent", agent_id="bob"), limit=10))
    assert "refund" not in sql  # the words are never in the SQL text
    assert args == ["refund -television", None, None, 10, "bob"]
    assert "websearch_to_tsquery('english', $1)" in sql and "websearch_to_tsquery('spanish', $1)" in sql
    assert "t.language NOT IN ('en', 'es') AND t.search @@ websearch_to_tsquery('simple', $1)" in sql
    assert "t.state = 'done'" in sql and "r.deleted_at IS NULL" in sql and "r.agent_id = $5" in sql
    assert sql.count("$1") == 4  # one branch per configuration, and the headline
    assert "ts_headline(" in sql and "r.started_at DESC" in sql
    team = Scope("supervisor", teams=("back-office",), agents=frozenset({"bob"}), queues=frozenset({"support"}))
    supervised, args = search.build(search.SearchQuery("refund", scope=team))
    assert args[-2:] == [["bob"], ["support"]] and "r.agent_id = ANY($5::text[])" in supervised
    nothing, args = search.build(search.SearchQuery("refund"))  # no scope given: finds nothing
    assert " AND false " in nothing and len(args) == 4


def test_a_refused_consent_overrides_a_recording_queue() -> None:
    from dialplans.models import Queue

    policy = RecordingPolicy(
        [
            Queue(id="support", name="Support"),
            Queue.model_validate({"id": "sales", "name": "Sales", "recording": {"record": False}}),
        ],
        90,
    )
    assert policy.skip_reason("support", {}, False) == "consent"
    assert policy.skip_reason("support", {}, True) is None
    assert policy.skip_reason("support", {}, None) is None
    assert policy.skip_reason("sales", {}, True) == "queue"  # consent given does not make a queue record


def test_a_transcripts_words_are_withheld_from_what_leaves_the_store() -> None:
    event: dict[str, Any] = {
        "id": 7,
        "type": "recording.transcribed",
        "data": {"recording_id": "r1", "text": "my card is", "transcript_url": "/api/recordings/r1/transcript"},
    }
    shared = shareable(event)
    assert shared["data"] == {
        "recording_id": "r1",
        "transcript_url": "/api/recordings/r1/transcript",
        "withheld": ["text"],
    }
    assert event["data"]["text"] == "my card is"  # the stored event is left alone
    redacted = {**event, "data": {"recording_id": "r1", "text": None, "redacted": True}}
    assert shareable(redacted) is redacted  # nothing left to withhold
    other = {"id": 8, "type": "recording.stored", "data": {"text": "not a transcript"}}
    assert shareable(other) is other
