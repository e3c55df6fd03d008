"""bench/long_call.py's own parts: when audio counts as flowing, when a recording matches the talk, the phones
that send and count the audio, and the BENCHMARKS.md section of a result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

from bench.long_call import Phone, Result, Sample, flow_problems, recording_problem, section
from tests.stack.expect import eventually


def sample(t: float, caller: int, agent: int, heard: int) -> Sample:
    """Counts as after `t` s: each channel's tx and rx at `caller` / `agent`, each phone heard `heard`."""
    phone = {"sent": heard, "received": heard, "audible": heard}
    return Sample(
        t,
        [],
        {"caller": {"txcount": caller, "rxcount": caller}, "agent": {"txcount": agent, "rxcount": agent}},
        {"caller": dict(phone), "agent": dict(phone)},
        100.0,
        80.0,
    )


def test_audio_flows_when_every_count_grows_like_20_ms_packets() -> None:
    assert flow_problems(sample(0, 0, 0, 0), sample(30, 1500, 1490, 1480)) == []


def test_a_side_whose_counts_stall_is_named() -> None:
    before, now = sample(0, 0, 0, 0), sample(30, 1500, 10, 1500)
    problems = flow_problems(before, now)
    assert problems == [
        "agent channel txcount grew by 10 in 30 s (at least 750)",
        "agent channel rxcount grew by 10 in 30 s (at least 750)",
    ]


def test_a_phone_that_hears_silence_is_named() -> None:
    now = sample(30, 1500, 1500, 1500)
    now.phones["caller"]["audible"] = 0  # packets arrive, but nothing above -30 dBFS: the tone is lost
    assert flow_problems(sample(0, 0, 0, 0), now) == ["caller phone audible grew by 0 in 30 s (at least 750)"]


def test_a_channel_gone_counts_as_no_audio() -> None:
    now = sample(30, 1500, 1500, 1500)
    del now.rtp["agent"]  # rtp_statistics answered 404
    assert [p.split(" grew")[0] for p in flow_problems(sample(0, 0, 0, 0), now)] == [
        "agent channel txcount",
        "agent channel rxcount",
    ]


def test_the_recording_must_last_as_long_as_the_talk() -> None:
    assert recording_problem(1198.2, 1200.0, 5) is None
    assert recording_problem(1190.0, 1200.0, 5) == "recording 1190.0 s against 1200.0 s of talk (tolerance 5 s)"
    assert recording_problem(None, 1200.0, 5) == "no stored recording"


async def until(condition: Callable[[], bool], within: float) -> None:
    await eventually(condition, within=within, what="the phones' packets")


async def test_two_phones_hear_each_others_tone() -> None:
    a, b = Phone("caller", 440), Phone("agent", 300)
    try:
        a_at, b_at = await a.open("127.0.0.1"), await b.open("127.0.0.1")
        a.send_to(b_at)
        b.send_to(a_at)
        await until(lambda: b.received >= 10, within=5)  # silence first: received, not audible
        assert b.audible == 0
        a.talk()
        b.talk()
        await until(lambda: a.audible >= 10 and b.audible >= 10, within=5)
    finally:
        await a.close()
        await b.close()
    assert a.sent > 0 and b.sent > 0


def test_the_section_says_the_command_the_counts_and_the_verdict() -> None:
    result = Result("python -m bench.long_call --minutes 20", 20, started_at="2026-12-08 00:00 UTC", ok=True)
    result.talk_s, result.outcome, result.hangup_by = 1203.9, "completed", "customer"
    result.recording_state, result.recording_s, result.agent_available_after = "stored", 1203.5, True
    result.samples = [asdict(sample(0.5, 20, 20, 20)), asdict(sample(1200.5, 60020, 60010, 60000))]
    result.memory_mb = {"hilo": [140.0, 147.0], "asterisk": [80.0, 80.0]}
    text = section(result)
    assert "`python -m bench.long_call --minutes 20`" in text
    assert "**Result: passed.**" in text
    assert "| caller's channel | 60000 | 60000 | 60000 |" in text
    assert "| agent's channel | 59990 | 59990 | 60000 |" in text
    assert "stored, 1203.5 s long against 1203.9 s of talk" in text
    assert "Hilo server 140.0 -> 147.0 MB (+5.0%)" in text
    assert "- none" in text


def test_the_section_lists_the_servers_warnings() -> None:
    result = Result("python -m bench.long_call --minutes 2", 2, started_at="2026-12-08 00:00 UTC")
    assert "logged no warning or error" in section(result)
    result.server_log = ["2026-12-08 00:10:00,000 WARNING ivr.reconcile: ended interaction x: no-live-channel"]
    text = section(result)
    assert "warnings and errors during the run (1; the first five)" in text and "no-live-channel" in text
    assert "**Result: failed.**" in text
