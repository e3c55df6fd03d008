import pytest

from crm_bridge.phones import InvalidPhoneNumber, to_e164


@pytest.mark.parametrize("raw", ["+34 911 22 23 33", "0034911222333", "911222333", "+34-911-222-333"])
def test_spanish_formats_are_one_number(raw: str) -> None:
    assert to_e164(raw, "ES") == "+34911222333"


def test_other_region_default() -> None:
    assert to_e164("(212) 555-0142", "US") == "+12125550142"


@pytest.mark.parametrize("raw", ["", "anonymous", "Restricted", "12", "not a number"])
def test_unusable_numbers_are_refused_with_a_reason(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as err:
        to_e164(raw, "ES")
    assert str(err.value)
