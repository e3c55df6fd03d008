"""The load profile: the arrival rate with its ramp, the calls it makes, and refusals that name the option;
nothing but loopback is ever a target."""

from __future__ import annotations

import pytest

from server.cli import main
from server.loadtest.profile import Profile, ProfileError, TextLoad, VoiceLoad, caller_numbers, is_loopback_host


def test_a_steady_rate_without_ramp() -> None:
    voice = VoiceLoad(rate=4, duration_s=20)
    assert [voice.rate_at(t) for t in (-1, 0, 10, 19.9, 20, 25)] == [0, 4, 4, 4, 0, 0]
    assert voice.expected_calls() == 80
    assert voice.rate_steps() == [(0.0, 4)]


def test_a_ramp_climbs_linearly_then_holds() -> None:
    voice = VoiceLoad(rate=10, ramp_s=10, duration_s=30)
    assert voice.rate_at(0) == 0
    assert voice.rate_at(5) == 5
    assert voice.rate_at(10) == 10
    assert voice.rate_at(29) == 10
    # the area under the curve: 10 s climbing (50 calls), 20 s steady (200)
    assert voice.expected_calls() == 250
    steps = voice.rate_steps(step_s=2.5)
    assert steps[0] == (0.0, 1.25)  # the first quarter's middle
    assert steps[-1] == (10, 10)
    rates = [r for _, r in steps]
    assert rates == sorted(rates)


def test_call_length_counts_the_key_only_when_one_is_keyed() -> None:
    assert VoiceLoad(key="2", key_after_s=2.5, hold_s=8).call_seconds() == 10.5
    assert VoiceLoad(key="", hold_s=8).call_seconds() == 8
    assert VoiceLoad(key="2", key_mode="none", hold_s=8).call_seconds() == 8


@pytest.mark.parametrize(
    ("voice", "option", "words"),
    [
        (VoiceLoad(sip_target="10.0.0.5:5060"), "--sip", "not a loopback address"),
        (VoiceLoad(sip_target="sip.example.com"), "--sip", "not a loopback address"),
        (VoiceLoad(trunk_ip="192.168.1.20"), "--trunk-ip", "not a loopback address"),
        (VoiceLoad(rate=0), "--rate", "above 0"),
        (VoiceLoad(rate=10_000), "--rate", "at most 500"),
        (VoiceLoad(duration_s=5, ramp_s=6), "--ramp", "between 0 and --duration"),
        (VoiceLoad(key="22"), "--key", "one of 0-9"),
        (VoiceLoad(key_mode="carrier-pigeon"), "--key-mode", "info, rfc4733, voice, none"),
        (VoiceLoad(number="100; DROP"), "--number", "digits"),
        (VoiceLoad(callers=5000), "--callers", "between 1 and 1000"),
        (VoiceLoad(sip_target="127.0.0.1:99999"), "--sip", "out of range"),
    ],
)
def test_bad_profiles_are_refused_naming_the_option(voice: VoiceLoad, option: str, words: str) -> None:
    with pytest.raises(ProfileError) as caught:
        voice.check()
    assert str(caught.value).startswith(option)
    assert words in str(caught.value)


def test_loopback_is_any_of_127_8_v6_or_localhost() -> None:
    assert all(is_loopback_host(h) for h in ("127.0.0.1", "127.0.0.3", "::1", "[::1]", "localhost", "LOCALHOST"))
    assert not any(is_loopback_host(h) for h in ("0.0.0.0", "10.0.0.1", "example.com", "", "128.0.0.1"))  # noqa: S104
    VoiceLoad(sip_target="[::1]:5060", trunk_ip="127.0.0.2").check()


def test_text_rates_and_the_whole_profile_are_checked() -> None:
    with pytest.raises(ProfileError, match="--chat-rate"):
        TextLoad(chat_rate=-1).check()
    with pytest.raises(ProfileError, match="--agent-talk"):
        Profile(agent_talk_s=0).check()
    assert not TextLoad().any and TextLoad(sms_rate=0.5).any
    profile = Profile(voice=VoiceLoad(duration_s=20, key_after_s=2.5, hold_s=8), drain_s=30)
    assert profile.run_seconds() == 60.5


def test_caller_numbers_come_from_the_drama_range() -> None:
    numbers = caller_numbers(1000)
    assert numbers[0] == "+447700900000" and numbers[-1] == "+447700900999"
    assert len(set(numbers)) == 1000
    with pytest.raises(ProfileError):
        caller_numbers(1001)


def test_the_command_refuses_a_target_off_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "--sip", "203.0.113.7:5060", "--no-progress"]) == 2
    assert "--sip: '203.0.113.7' is not a loopback address" in capsys.readouterr().err
    assert main(["loadtest", "--trunk-ip", "127.0.0.99", "--no-progress"]) == 2
    assert "no trunk of asterisk/etc/pjsip.conf takes calls from 127.0.0.99" in capsys.readouterr().err
