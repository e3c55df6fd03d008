import asyncio

from asterisk.events import ChannelDtmfReceived, StasisStart, parse_event
from asterisk.stasis import StasisRouter


def channel(cid: str) -> dict[str, object]:
    return {"id": cid, "name": f"PJSIP/x-{cid}", "caller": {"number": "+34911222333"}, "dialplan": {"exten": "100"}}


async def test_new_call_digits_playback_and_hangup() -> None:
    started: list[StasisStart] = []
    router = StasisRouter(started.append)
    router.handle(parse_event({"type": "StasisStart", "args": ["100"], "channel": channel("c1")}))
    assert [s.channel.id for s in started] == ["c1"] and started[0].args == ["100"]
    state = router.channels["c1"]

    router.handle(parse_event({"type": "ChannelDtmfReceived", "digit": "9", "channel": channel("c1")}))
    router.handle(parse_event({"type": "ChannelDtmfReceived", "digit": "2", "channel": channel("c1")}))
    assert state.digit_arrived.is_set()
    assert (state.pop_digit(), state.pop_digit(), state.pop_digit()) == ("9", "2", None)
    assert not state.digit_arrived.is_set()

    finished = router.expect_playback("pb1")
    router.handle(
        parse_event(
            {"type": "PlaybackFinished", "playback": {"id": "pb1", "target_uri": "channel:c1", "state": "done"}}
        )
    )
    assert await asyncio.wait_for(finished, 1) == "done"

    router.handle(parse_event({"type": "StasisEnd", "channel": channel("c1")}))
    assert state.gone.is_set() and state.gone_reason == "hangup"


def test_originated_leg_entering_stasis_is_not_a_new_call() -> None:
    started: list[StasisStart] = []
    router = StasisRouter(started.append)
    leg = router.watch("agent-1")
    router.handle(parse_event({"type": "StasisStart", "args": ["agent", "i1"], "channel": channel("agent-1")}))
    assert started == [] and leg.in_stasis.is_set()


def test_unknown_events_parse_without_losing_fields() -> None:
    event = parse_event({"type": "Dial", "dialstatus": "ANSWER"})
    assert event.type == "Dial" and event.raw["dialstatus"] == "ANSWER"
    dtmf = parse_event({"type": "ChannelDtmfReceived", "digit": "5", "duration_ms": 120, "channel": channel("c")})
    assert isinstance(dtmf, ChannelDtmfReceived) and dtmf.duration_ms == 120


def test_hangup_by_an_asterisk_shutdown_is_a_lost_call_not_a_caller_hangup() -> None:
    router = StasisRouter(lambda _: None)
    stopping, normal = router.watch("a"), router.watch("b")
    router.handle(parse_event({"type": "ChannelHangupRequest", "soft": True, "cause": 4, "channel": channel("a")}))
    router.handle(parse_event({"type": "ChannelHangupRequest", "cause": 16, "channel": channel("b")}))
    for cid in ("a", "b"):
        router.handle(parse_event({"type": "StasisEnd", "channel": channel(cid)}))
    assert (stopping.gone_reason, normal.gone_reason) == ("lost", "hangup")
