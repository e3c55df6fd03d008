"""dialplans/channels.yaml: errors name file, line and field; lookups; the outbox's token bucket;
customer addresses."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from pathlib import Path

import pytest

from bridges.channels import load_channels
from bridges.inbox import normalise_address
from bridges.messages import retry_after_seconds
from bridges.outbox import Outbox, TokenBucket
from hilo.settings import REPO_ROOT
from hilo.yamlconf import ConfigError

ACCOUNT = "AC" + "0" * 32


def test_the_shipped_channels_file_loads() -> None:
    channels = load_channels(REPO_ROOT / "dialplans", ACCOUNT)
    assert {c.provider for c in channels.all} == {"twilio", "whatsapp_cloud", "webchat"}
    assert channels.for_site("web") is not None and channels.for_site("chatcheck") is None
    assert all(c.flow for c in channels.all)


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "channels.yaml").write_text(text)
    return tmp_path


def test_errors_name_file_line_and_field(tmp_path: Path) -> None:
    folder = write(
        tmp_path,
        "channels:\n  - name: sms\n    provider: twilio\n    address: '+34910000100'\n    flow: demo\n"
        "  - name: wa\n    provider: whatsapp_cloud\n    phone_number_id: abc\n    flow: demo\n",
    )
    with pytest.raises(ConfigError, match=r"channels.yaml:8: channels.1.phone_number_id"):
        load_channels(folder, ACCOUNT)


def test_a_twilio_channel_needs_an_address_or_service(tmp_path: Path) -> None:
    folder = write(tmp_path, "channels:\n  - name: sms\n    provider: twilio\n    flow: demo\n")
    with pytest.raises(ConfigError, match=r"channels.yaml:2: channels.0: Value error, a twilio channel needs"):
        load_channels(folder, ACCOUNT)


def test_duplicates_are_refused_and_a_missing_account_matches_nothing(tmp_path: Path) -> None:
    twice = "  - name: a\n    provider: whatsapp_cloud\n    phone_number_id: '12345'\n    flow: demo\n"
    with pytest.raises(ConfigError, match="same phone_number_id"):
        load_channels(write(tmp_path, "channels:\n" + twice + twice.replace("name: a", "name: b")), ACCOUNT)
    sms = "channels:\n  - name: sms\n    provider: twilio\n    address: '+34910000100'\n    flow: demo\n"
    without_account = load_channels(write(tmp_path, sms), "")  # Twilio off: a warning, and nothing matches
    assert without_account.for_twilio(None, "", "+34910000100") is None


def test_no_file_no_channels(tmp_path: Path) -> None:
    assert load_channels(tmp_path, "").all == []


def test_addresses_are_one_key_whatever_the_spelling() -> None:
    assert normalise_address("whatsapp", "whatsapp:+34600111222") == "+34600111222"
    assert normalise_address("whatsapp", "34600111222") == "+34600111222"
    assert normalise_address("sms", "+34 600 111 222") == "+34600111222"
    assert normalise_address("webchat", "visitor-abc") == "visitor-abc"


async def test_token_bucket_limits_the_rate_and_holds_after_429() -> None:
    bucket = TokenBucket(rate_per_s=20, burst=2)
    start = time.monotonic()
    for _ in range(6):  # 2 at once, then 4 at 20/s
        await bucket.take()
    assert 0.15 <= time.monotonic() - start < 0.6
    bucket.hold(0.3)
    start = time.monotonic()
    await asyncio.wait_for(bucket.take(), 2)
    assert time.monotonic() - start >= 0.28


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-5", 0.0),
        ("inf", math.inf),
        ("1e9", 1e9),
        ("nan", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("Wed, 21 Oct 2026 07:28:30 GMT", 30.0),  # an HTTP-date, 30 s after NOW
        ("Wed, 21 Oct 2026 07:27:00 GMT", 0.0),  # one in the past
    ],
)
def test_retry_after_is_read_defensively(header: str | None, seconds: float | None) -> None:
    now = dt.datetime(2026, 10, 21, 7, 28, tzinfo=dt.UTC)
    assert retry_after_seconds(header, now=now) == seconds


def test_the_outbox_caps_a_providers_retry_after() -> None:
    outbox = Outbox(None, retry_after_max_s=300)  # type: ignore[arg-type]
    assert [outbox.retry_after(s) for s in (None, math.nan, -1.0, 12.0, 1e9, math.inf)] == [
        None,
        None,
        0.0,
        12.0,
        300.0,
        300.0,
    ]
    # what a claimed message may wait for a token: its lease less the send and as long again
    assert outbox.token_wait_s == outbox.lease_s - 2 * outbox.send_timeout_s > 0


async def test_a_hold_longer_than_the_caller_can_wait_takes_no_token() -> None:
    bucket = TokenBucket(rate_per_s=1000, burst=1)
    bucket.hold(30)
    wait = await asyncio.wait_for(bucket.take(within=0.05), 1)  # answered at once, not after 30 s
    assert wait is not None and 29 < wait <= 30
    bucket.hold(math.inf)  # never taken as given
    assert bucket.held_until < time.monotonic() + 31
    bucket.held_until = 0.0
    assert await bucket.take(within=0.05) is None and bucket.tokens < 1
