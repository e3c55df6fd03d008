"""The webhook signature, checked against an implementation written here from the documented algorithm
alone: v1=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>."""

from __future__ import annotations

import hashlib
import hmac
import time

import aiohttp
import pytest

from crm_bridge.webhooks import RetryPolicy, describe_failure, encode_event, new_secret, sign, verify
from hilo.settings import REPO_ROOT

SECRET = "whsec_test-secret-of-enough-length-0123456789"
BODY = encode_event({"id": 7, "type": "agent.answered", "data": {"agent": "bob", "note": "añadido"}})


def receiver_accepts(secret: str, timestamp_header: str, signature_header: str, body: bytes, now: float) -> bool:
    """What a receiver in any language does, from the documented description only (docs/api.md)."""
    if abs(now - int(timestamp_header)) > 300:
        return False
    expected = hmac.new(secret.encode("utf-8"), f"{timestamp_header}.".encode() + body, hashlib.sha256).hexdigest()
    scheme, _, given = signature_header.partition("=")
    return scheme == "v1" and hmac.compare_digest(given, expected)


def test_signature_verifies_with_an_independent_implementation() -> None:
    now = time.time()
    timestamp = int(now)
    signature = sign(SECRET, timestamp, BODY)
    assert signature.startswith("v1=") and len(signature) == 3 + 64
    assert receiver_accepts(SECRET, str(timestamp), signature, BODY, now)
    headers = {"Hilo-Timestamp": str(timestamp), "Hilo-Signature": signature}
    assert verify(SECRET, headers, BODY, now=now)


def test_body_is_compact_utf8_json() -> None:
    assert BODY.decode("utf-8") == ('{"id":7,"type":"agent.answered","data":{"agent":"bob","note":"añadido"}}')


@pytest.mark.parametrize(
    "tamper",
    [
        lambda body, ts, sig: (body.replace(b"bob", b"eve"), ts, sig),
        lambda body, ts, sig: (body + b" ", ts, sig),
        lambda body, ts, sig: (body, str(int(ts) + 1), sig),
        lambda body, ts, sig: (body, ts, sig.replace("v1=", "v0=")),
        lambda body, ts, sig: (body, ts, sig[:-1] + ("0" if sig[-1] != "0" else "1")),
    ],
    ids=["changed body", "appended byte", "other timestamp", "other scheme", "changed signature"],
)
def test_tampering_fails_both_implementations(tamper: object) -> None:
    now = time.time()
    ts = str(int(now))
    body, ts2, sig = tamper(BODY, ts, sign(SECRET, int(ts), BODY))  # type: ignore[operator]
    assert not receiver_accepts(SECRET, ts2, sig, body, now)
    assert not verify(SECRET, {"Hilo-Timestamp": ts2, "Hilo-Signature": sig}, body, now=now)


def test_wrong_secret_fails() -> None:
    now = time.time()
    signature = sign(SECRET, int(now), BODY)
    assert not verify(new_secret(), {"Hilo-Timestamp": str(int(now)), "Hilo-Signature": signature}, BODY, now=now)


@pytest.mark.parametrize("age", [301, 3600, -301])
def test_old_or_future_timestamps_are_refused(age: int) -> None:
    now = time.time()
    timestamp = int(now) - age
    signature = sign(SECRET, timestamp, BODY)
    headers = {"Hilo-Timestamp": str(timestamp), "Hilo-Signature": signature}
    assert not verify(SECRET, headers, BODY, now=now)
    assert not receiver_accepts(SECRET, str(timestamp), signature, BODY, now)
    assert verify(SECRET, headers, BODY, now=now, tolerance_s=abs(age) + 1)


@pytest.mark.parametrize(
    "headers", [{}, {"Hilo-Timestamp": "soon", "Hilo-Signature": "v1=00"}, {"Hilo-Timestamp": "1"}]
)
def test_malformed_headers_are_refused(headers: dict[str, str]) -> None:
    assert not verify(SECRET, headers, BODY)


def test_secrets_are_long_and_distinct() -> None:
    made = {new_secret() for _ in range(50)}
    assert len(made) == 50 and all(len(s) >= 40 for s in made)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(max_attempts=10, backoff_s=2.0, backoff_max_s=60.0)
    for attempts, full in [(1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0), (6, 60.0), (20, 60.0)]:
        delays = [policy.delay_after(attempts) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays), (attempts, min(delays), max(delays))
        assert max(delays) - min(delays) > full / 10  # jittered, not one fixed value


def test_the_documented_receiver_example_verifies_real_signatures() -> None:
    page = (REPO_ROOT / "docs" / "api.md").read_text()
    section = page[page.index("## Webhooks") :]
    code = section[section.index("```python") + len("```python") : section.index("```", section.index("```python") + 9)]
    namespace: dict[str, object] = {}
    exec(compile(code, "docs/api.md", "exec"), namespace)  # noqa: S102 (the project's own documentation)
    verified = namespace["verified"]
    assert callable(verified)
    now = int(time.time())
    headers = {"Hilo-Timestamp": str(now), "Hilo-Signature": sign(SECRET, now, BODY)}
    assert verified(SECRET, headers, BODY)
    assert not verified(SECRET, headers, BODY + b" ")
    old = {"Hilo-Timestamp": str(now - 600), "Hilo-Signature": sign(SECRET, now - 600, BODY)}
    assert not verified(SECRET, old, BODY)


def test_failures_are_described_without_the_urls_secrets() -> None:
    url = "https://user:pw@crm.example:8443/hooks/hilo?token=abc123"
    text = describe_failure(aiohttp.InvalidURL(url), url)
    assert "abc123" not in text and "pw" not in text and "crm.example:8443" in text
    text = describe_failure(OSError("cannot reach https://user:pw@crm.example/x"), url)
    assert "pw@" not in text and "***@crm.example" in text
    assert describe_failure(TimeoutError(), url) == "TimeoutError"
