"""Logging set-up. Every record passes a filter that masks PII (phone numbers, e-mail addresses) and
known secrets, so that a log shipped to a third party never carries a customer's number or a password."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

# A phone number: an optional +, then at least 7 digits, possibly split by spaces, dots or dashes.
_PHONE = re.compile(r"(?<![\w/.-])\+?\d(?:[\s.-]?\d){6,}(?![\w/])")
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")


def mask_phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return ("+" if match.group(0).startswith("+") else "") + "*" * (len(digits) - 3) + digits[-3:]


def mask_pii(text: str) -> str:
    text = _EMAIL.sub(r"\1***@\2", text)
    return _PHONE.sub(mask_phone, text)


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        message = mask_pii(record.getMessage())
        for secret in self.secrets:
            message = message.replace(secret, "[secret]")
        record.msg, record.args = message, None
        return True


def setup_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
