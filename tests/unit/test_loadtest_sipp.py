"""The SIPp side of a load run: the generated caller scenario, its per-call log, SIPp's statistics file, and
the calls put together from them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from server.loadtest.calls import CallBook
from server.loadtest.profile import VoiceLoad
from server.loadtest.scenario import caller_scenario, injection_file
from server.loadtest.sipp import (
    LogEvent,
    LogTail,
    SippRun,
    parse_log_line,
    parse_stat_csv,
    sipp_duration_ms,
    stat_failures,
)


def steps(xml: str) -> list[ET.Element]:
    return list(ET.fromstring(xml.split("\n", 2)[2]))  # noqa: S314 (our own XML) past the declaration and DOCTYPE


def test_the_info_scenario_keys_by_sip_info_after_the_answer_and_hangs_up_after_the_hold() -> None:
    xml = caller_scenario(VoiceLoad(key="2", key_mode="info", key_after_s=2.5, hold_s=8), "127.0.0.2", 40000)
    root = steps(xml)
    sends = [e.text or "" for e in root if e.tag == "send"]
    assert sends[0].strip().startswith("INVITE sip:[service]@")
    assert "m=audio 40000 RTP/AVP 0 101" in sends[0] and "c=IN IP4 127.0.0.2" in sends[0]
    info = next(s for s in sends if s.strip().startswith("INFO"))
    assert "Content-Type: application/dtmf-relay" in info and "Signal=2" in info
    waits = [e.attrib for e in root if e.tag == "recv" and e.attrib.get("request") == "BYE"]
    assert waits == [
        {"request": "BYE", "timeout": "2500", "ontimeout": "key"},
        {"request": "BYE", "timeout": "8000", "ontimeout": "hang_up"},
    ]
    assert any(s.strip().startswith("BYE") for s in sends)
    # the INVITE's moment is logged before it goes, the answer with Asterisk's RTP address
    assert root[0].tag == "nop" and "LT|I|[call_id]" in ET.tostring(root[0]).decode()
    assert "LT|A|[call_id]|[timestamp]|[$rtp_ip]|[$rtp_port]" in xml


@pytest.mark.parametrize("mode", ["rfc4733", "voice"])
def test_rtp_modes_leave_the_key_to_the_media_side(mode: str) -> None:
    xml = caller_scenario(VoiceLoad(key="2", key_mode=mode, say="support"), "127.0.0.2", 40000)
    assert "INFO [next_url]" not in xml
    assert 'timeout="2500" ontimeout="key"' in xml  # the same wait, then the hold


def test_without_a_key_the_caller_only_holds() -> None:
    xml = caller_scenario(VoiceLoad(key="", hold_s=3), "127.0.0.2", 40000)
    assert 'ontimeout="key"' not in xml and "INFO [next_url]" not in xml
    assert 'timeout="3000" ontimeout="hang_up"' in xml


def test_refusals_are_acknowledged_and_logged_with_their_status() -> None:
    xml = caller_scenario(VoiceLoad(), "127.0.0.2", 40000)
    root = steps(xml)
    busy = next(e for e in root if e.tag == "recv" and e.attrib.get("response") == "486")
    assert busy.attrib["optional"] == "true" and busy.attrib["next"] == "refused"
    assert "LT|X|[call_id]|[timestamp]|486" in ET.tostring(busy).decode()


def test_the_injection_file_gives_each_call_the_next_number() -> None:
    assert injection_file(["+447700900000", "+447700900001"]) == "SEQUENTIAL\n+447700900000;\n+447700900001;\n"


def test_log_lines_are_parsed_with_sipps_timestamp() -> None:
    line = "LT|A|7-1234@127.0.0.2|2026-12-07\t20:48:01.542962\t1796676481.542962|127.0.0.1|13902\n"
    assert parse_log_line(line) == LogEvent("A", "7-1234@127.0.0.2", 1796676481.542962, ("127.0.0.1", "13902"))
    for other in ("", "random SIPp chatter", "LT|A|x|not a time", "XX|A|x|2026-12-07\t20:48\t1.0"):
        assert parse_log_line(other) is None


def test_the_log_is_read_as_it_grows_complete_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    tail = LogTail(path)
    assert tail.read() == []  # not written yet
    path.write_text("LT|I|1-1@h|d\tt\t10.0\nLT|A|1-1@h|d\tt\t10.")
    assert [e.step for e in tail.read()] == ["I"]
    with path.open("a") as f:
        f.write("5|127.0.0.1|13000\n")
    (event,) = tail.read()
    assert event.at == 10.5 and event.extra == ("127.0.0.1", "13000")
    tail.close()


STAT = (
    "StartTime;CurrentTime;TargetRate;OutgoingCall(C);SuccessfulCall(C);FailedCall(C);FailedMaxUDPRetrans(C);"
    "FailedUnexpectedMessage(C);FailedUnexpectedMessage(P);FailedTimeoutOnRecv(C);ResponseTime1(C)\n"
    "2026-12-07\t20:48:01.28\t1796676481.28;2026-12-07\t20:48:02.28\t1796676482.28;4;4;4;0;0;0;0;0;00:00:00:000000\n"
    "2026-12-07\t20:48:01.28\t1796676481.28;2026-12-07\t20:48:17.31\t1796676497.31;4;20;17;3;0;2;1;1;00:00:00:004000\n"
)


def test_sipp_statistics_give_the_failures_by_reason_and_the_mean_response_time() -> None:
    rows = parse_stat_csv(STAT)
    assert len(rows) == 2 and rows[-1]["OutgoingCall(C)"] == "20"
    assert stat_failures(rows[-1]) == {"UnexpectedMessage": 2, "TimeoutOnRecv": 1}  # cumulative only, no total
    assert stat_failures(rows[0]) == {}
    assert sipp_duration_ms(rows[-1]["ResponseTime1(C)"]) == 4.0
    assert sipp_duration_ms("01:00:02:500000") == 3_602_500.0
    assert sipp_duration_ms("garbage") is None
    assert parse_stat_csv("") == []


def test_sipp_errors_leave_out_the_scenarios_own_timeouts(tmp_path: Path) -> None:
    run = SippRun(VoiceLoad(), tmp_path, ("127.0.0.2", 40000), ["+447700900000"], 1)
    run.error_file.write_text(
        "The following events occurred:\n"
        "2026-12-07\t20:32:33.615503\t1796675553.615503: Call-Id: 1-1@h, receive timeout on message x:23,"
        " jumping to label 25"
        "2026-12-07\t20:32:34.000000\t1796675554.000000: Aborting call on unexpected message for Call-Id '2-1@h'\n"
    )
    (entry,) = run.errors_tail()
    assert "Aborting call on unexpected message" in entry


def test_the_sipp_command_stays_on_loopback_and_is_bounded(tmp_path: Path) -> None:
    voice = VoiceLoad(number="100", rate=3, duration_s=10, trunk_ip="127.0.0.2", sip_target="127.0.0.1:5060")
    run = SippRun(voice, tmp_path, ("127.0.0.2", 40000), ["+447700900000"], voice.expected_calls())
    run.control = ("127.0.0.2", 45000)
    cmd = run.command()
    opts = dict(zip(cmd[2::2], cmd[3::2], strict=False))
    assert cmd[1] == "127.0.0.1:5060"
    assert opts["-i"] == opts["-mi"] == opts["-ci"] == "127.0.0.2"
    assert opts["-m"] == "30" and opts["-r"] == "3" and opts["-s"] == "100"


def test_calls_are_put_together_and_classified() -> None:
    book = CallBook()
    events = [
        LogEvent("I", "ok", 100.0),
        LogEvent("A", "ok", 100.004, ("127.0.0.1", "13000")),
        LogEvent("K", "ok", 102.5),
        LogEvent("E", "ok", 110.5),
        LogEvent("I", "hung", 101.0),
        LogEvent("A", "hung", 101.01, ("127.0.0.1", "13002")),
        LogEvent("R", "hung", 104.0),
        LogEvent("I", "busy", 102.0),
        LogEvent("X", "busy", 102.02, ("486",)),
        LogEvent("I", "lost", 103.0),
        LogEvent("I", "cut", 104.0),
        LogEvent("A", "cut", 104.01, ("127.0.0.1", "13004")),
    ]
    for event in events:
        book.add(event)
    assert book.counts() == {"offered": 5, "answered": 3, "succeeded": 1, "failed": 2, "in_call": 2}
    book.close()
    assert book.failures() == {"far_end_hangup": 1, "refused_486": 1, "unanswered": 1, "unfinished": 1}
    assert book.counts()["failed"] == 4
    ok = book.calls["ok"]
    assert ok.media == ("127.0.0.1", 13000)
    assert ok.invite_to_answer_ms == pytest.approx(4.0)
    ok.first_audio = 100.104
    assert ok.answer_to_audio_ms == pytest.approx(100.0)
