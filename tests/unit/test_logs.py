import logging

from hilo.logs import RedactingFilter, mask_pii


def test_phone_numbers_keep_only_last_three_digits() -> None:
    assert mask_pii("call from +34 911 22 23 33 ended") == "call from +********333 ended"
    assert mask_pii("caller 0034911222333") == "caller **********333"


def test_emails_are_masked() -> None:
    assert mask_pii("mail ana.garcia@example.com") == "mail a***@example.com"


def test_ids_and_short_numbers_are_left_alone() -> None:
    text = "interaction 3f2a-11 queue 2 port 5060 channel sim-1f0e2a"
    assert mask_pii(text) == text


def test_filter_masks_args_and_secrets() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "caller %s token %s", ("+34911222333", "s3cr3t-t0k3n"), None
    )
    RedactingFilter(["s3cr3t-t0k3n"]).filter(record)
    assert record.getMessage() == "caller +********333 token [secret]"
