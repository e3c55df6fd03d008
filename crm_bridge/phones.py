"""Phone numbers to E.164 with the `phonenumbers` library, so one person dialling in national format,
with a 00 prefix or with +country is always the same identity."""

from __future__ import annotations

import phonenumbers


class InvalidPhoneNumber(ValueError):
    pass


def to_e164(raw: str, default_region: str) -> str:
    """Normalise `raw` to E.164, or raise InvalidPhoneNumber saying why."""
    text = (raw or "").strip()
    if not text or text.lower() in {"anonymous", "unknown", "restricted", "unavailable"}:
        raise InvalidPhoneNumber(f"no caller number (got {text!r})")
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"{text!r} is not a phone number: {exc}") from exc
    if not phonenumbers.is_possible_number(number):
        raise InvalidPhoneNumber(f"{text!r} is not a possible number in region {default_region}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
