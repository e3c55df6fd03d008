"""What the supervisor's API accepts as a phone and a move, before anything is dialled or decided."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from console.call_control import MoveIn, SupervisionIn


@pytest.mark.parametrize("phone", ["PJSIP/supervisor-demo", "Local/tone-1400@hilo-phone-sim", "PJSIP/sup.01"])
def test_phones_a_supervisor_may_give(phone: str) -> None:
    assert SupervisionIn.model_validate({"mode": "whisper", "phone": phone}).phone == phone


@pytest.mark.parametrize(
    "phone",
    [
        "SIP/evil",
        "PJSIP/a&PJSIP/b",
        "Local/100@hilo-inbound",
        "Local/600112233@hilo-transfer",
        "PJSIP/",
        "pjsip/x",
        "PJSIP/a b",
        "Local/100",
    ],
)
def test_other_dial_strings_are_refused(phone: str) -> None:
    with pytest.raises(ValidationError) as raised:
        SupervisionIn.model_validate({"mode": "listen", "phone": phone})
    assert raised.value.errors()[0]["loc"] == ("phone",)


def test_modes_and_moves() -> None:
    with pytest.raises(ValidationError):
        SupervisionIn.model_validate({"mode": "shout", "phone": "PJSIP/x"})
    assert MoveIn.model_validate({"queue": "sales"}).agent is None
    for bad in ({}, {"queue": "sales", "agent": "bob"}, {"queue": ""}, {"queue": "sales", "extra": 1}):
        with pytest.raises(ValidationError):
            MoveIn.model_validate(bad)
