"""Logging set-up. Every record passes a filter that masks PII (phone numbers, e-mail addresses) and
known secrets, so that a log shipped to a third party never carries a customer's number or a password.

The filter masks the whole record as it will be written: the message, the traceback of `log.exception` /
`exc_info=` (aiohttp's own "Error handling request" included: exception texts carry numbers, URLs and
driver messages) and any stack. The file the log goes to is made readable by its owner and group only."""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
from collections.abc import Iterable
from typing import TextIO
from urllib.parse import quote

# A phone number: an optional +, then at least 7 digits, possibly split by spaces, dots, dashes or
# parentheses ("+1 (415) 555-0100").
_PHONE = re.compile(r"(?<![\w/.%-])\+?\(?\d(?:[\s.\-()]{0,2}\d){6,}(?![\w/])")
# The same in a URL, with its + encoded: "?to=%2B34600111222".
_ENCODED_PHONE = re.compile(r"%2[Bb](\d{7,})(?!\d)")
# In a dial string or URI: "Local/34600111222@hilo-callback", "PJSIP/+34...@carrier", "tel:+34...".
_DIALLED = re.compile(r"(?<=[/:])\+?\d{7,}(?=[@;,)\s\"'>]|$)")
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_TRACEBACKS = logging.Formatter()


def mask_phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return ("+" if match.group(0).startswith("+") else "") + "*" * (len(digits) - 3) + digits[-3:]


def _mask_encoded(match: re.Match[str]) -> str:
    digits = match.group(1)
    return "%2B" + "*" * (len(digits) - 3) + digits[-3:]


def mask_pii(text: str) -> str:
    text = _EMAIL.sub(r"\1***@\2", text)
    text = _ENCODED_PHONE.sub(_mask_encoded, text)
    text = _DIALLED.sub(mask_phone, text)
    return _PHONE.sub(mask_phone, text)


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        given = [s for s in secrets if len(s) >= 6]
        # each secret as it is, and as it reads inside a URL
        self.secrets = sorted({v for s in given for v in (s, quote(s, safe=""))}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[secret]")
        return mask_pii(text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.redact(record.getMessage()), None
        if record.exc_info:
            # Formatted here, masked, and kept as the text the formatter appends (it formats exc_info only
            # when there is no exc_text).
            record.exc_text = record.exc_text or _TRACEBACKS.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def private_log_file(stream: TextIO) -> None:
    """When the log goes to a regular file of ours (`hilo serve >> hilo.log`), make it 0640 at most: logs
    are for the operator, not for every local user."""
    try:
        fd = stream.fileno()
        info = os.fstat(fd)
    except (AttributeError, OSError, ValueError):  # not a real file (pytest's capture, a closed stream)
        return
    if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and info.st_mode & 0o027:
        os.fchmod(fd, stat.S_IMODE(info.st_mode) & ~0o027)


def setup_logging(level: str = "INFO", secrets: Iterable[str] = (), stream: TextIO | None = None) -> None:
    out = stream if stream is not None else sys.stderr
    private_log_file(out)
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
