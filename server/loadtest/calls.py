"""One record per SIPp call, put together from the steps its scenario logged, and what became of it.

A call *succeeded* when the caller hung up as planned (step E): answered, keyed, held for the whole hold
time; or when its agent hung up first (the load test's simulated talk time ended it: `agent_ended`).
Anything else failed, with the reason: refused with a SIP status, the far end hanging up first (the menu did
not take the key, the server dropped it...), answered but never ended (SIPp gave up on it), or never
answered (no final answer within SIPp's receive timeout, or SIPp could not send)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from server.loadtest.sipp import LogEvent

OK = frozenset({"completed", "agent_hung_up"})


@dataclass
class Call:
    call_id: str
    invited: float | None = None
    answered: float | None = None
    keyed: float | None = None
    ended: float | None = None
    media: tuple[str, int] | None = None  # Asterisk's RTP address for this call (the 200's SDP)
    # completed | agent_hung_up | far_end_hangup | refused_<status> | unanswered | unfinished
    outcome: str = "unfinished"
    first_audio: float | None = None  # epoch of the first audible RTP packet received (media.py)

    @property
    def ok(self) -> bool:
        return self.outcome in OK

    @property
    def invite_to_answer_ms(self) -> float | None:
        if self.invited is None or self.answered is None:
            return None
        return (self.answered - self.invited) * 1000

    @property
    def answer_to_audio_ms(self) -> float | None:
        if self.answered is None or self.first_audio is None:
            return None
        return (self.first_audio - self.answered) * 1000

    @property
    def last_seen(self) -> float | None:
        times = [t for t in (self.ended, self.keyed, self.answered, self.invited) if t is not None]
        return max(times) if times else None


@dataclass
class CallBook:
    calls: dict[str, Call] = field(default_factory=dict)
    closed: bool = False

    def add(self, event: LogEvent) -> Call:
        call = self.calls.get(event.call_id)
        if call is None:
            call = self.calls[event.call_id] = Call(event.call_id)
        if event.step == "I":
            call.invited = event.at
        elif event.step == "A":
            call.answered = event.at
            if len(event.extra) >= 2 and event.extra[1].isdigit():
                call.media = (event.extra[0], int(event.extra[1]))
        elif event.step == "K":
            call.keyed = event.at
        elif event.step == "E":
            call.ended, call.outcome = event.at, "completed"
        elif event.step == "R":
            call.ended, call.outcome = event.at, "far_end_hangup"
        elif event.step == "X":
            status = event.extra[0] if event.extra else "error"
            call.ended, call.outcome = event.at, f"refused_{status}"
        return call

    def agent_ended(self, call_ids: set[str]) -> None:
        """These calls' agents hung up (simulated talk time): the far end's hang-up that followed is their end."""
        for call_id in call_ids:
            call = self.calls.get(call_id)
            if call is not None and call.outcome == "far_end_hangup":
                call.outcome = "agent_hung_up"

    def close(self) -> None:
        """SIPp has exited: calls without an end step failed."""
        self.closed = True
        for call in self.calls.values():
            if call.ended is None:
                call.outcome = "unanswered" if call.answered is None else "unfinished"

    @property
    def placed(self) -> list[Call]:
        return [c for c in self.calls.values() if c.invited is not None]

    def counts(self) -> dict[str, int]:
        placed = self.placed
        return {
            "offered": len(placed),
            "answered": sum(c.answered is not None for c in placed),
            "succeeded": sum(c.ok for c in placed),
            "failed": sum(not c.ok and (c.ended is not None or self.closed) for c in placed),
            "in_call": sum(c.invited is not None and c.ended is None for c in placed),
        }

    def failures(self) -> dict[str, int]:
        return dict(Counter(c.outcome for c in self.placed if not c.ok))
