"""Recording encryption: round trips of every length, keys that rotate, and files that were altered, cut
short, extended or swapped all refusing to decrypt; key configuration errors that name the entry at fault."""

from __future__ import annotations

import base64
import hashlib
import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recordings.crypto import DecryptionError, KeyConfigError, KeyRing, decrypt_stream, encrypt_stream, key_id_of

SEGMENT = 64  # small segments, so a few hundred bytes cross many boundaries


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def ring(current: str = "k1", **more: str) -> KeyRing:
    keys = {"k1": key(), **more}
    return KeyRing.parse(",".join(f"{k}:{v}" for k, v in keys.items()), current)


def seal(r: KeyRing, plain: bytes, context: str = "rec-1", chunk: int = 7) -> bytes:
    out = io.BytesIO()
    chunks = [plain[i : i + chunk] for i in range(0, len(plain), chunk)]
    digest, size = encrypt_stream(r, chunks, out, context, segment_size=SEGMENT)
    assert (digest, size) == (hashlib.sha256(plain).hexdigest(), len(plain))
    return out.getvalue()


def open_(r: KeyRing, sealed: bytes, context: str = "rec-1") -> bytes:
    return b"".join(decrypt_stream(r, io.BytesIO(sealed), context))


@pytest.mark.parametrize("length", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 2 * SEGMENT, 3 * SEGMENT + 17])
def test_round_trip_at_every_segment_boundary(length: int) -> None:
    r = ring()
    plain = os.urandom(length)
    sealed = seal(r, plain)
    assert open_(r, sealed) == plain
    # A byte or two can occur in any ciphertext by chance; a longer plaintext showing through cannot.
    assert length < 16 or plain not in sealed


@settings(max_examples=60, deadline=None)
@given(plain=st.binary(max_size=700), chunk=st.integers(min_value=1, max_value=200))
def test_round_trip_of_any_content_in_any_chunking(plain: bytes, chunk: int) -> None:
    r = ring()
    assert open_(r, seal(r, plain, chunk=chunk)) == plain


def test_a_wav_at_rest_is_not_a_wav() -> None:
    plain = b"RIFF" + b"\x00" * 40 + os.urandom(300)
    sealed = seal(ring(), plain)
    assert sealed.startswith(b"HREC") and b"RIFF" not in sealed


def test_keys_rotate_and_old_files_stay_readable() -> None:
    old = ring("k1")
    sealed = seal(old, b"before the rotation" * 9)
    rotated = KeyRing.parse(f"k1:{base64.b64encode(old.keys['k1']).decode()},k2:{key()}", "k2")
    assert key_id_of(io.BytesIO(sealed)) == "k1"
    assert open_(rotated, sealed) == b"before the rotation" * 9
    assert key_id_of(io.BytesIO(seal(rotated, b"after"))) == "k2"
    without_old = KeyRing.parse(f"k2:{base64.b64encode(rotated.keys['k2']).decode()}", "k2")
    with pytest.raises(DecryptionError, match="key 'k1'"):
        open_(without_old, sealed)


def test_altered_cut_extended_or_swapped_files_do_not_decrypt() -> None:
    r = ring()
    sealed = seal(r, os.urandom(5 * SEGMENT))
    header = len(sealed) - 5 * (SEGMENT + 16) - 16
    flipped = bytearray(sealed)
    flipped[header + 10] ^= 1
    cases = {
        "altered": bytes(flipped),
        "cut at a segment boundary": sealed[: header + 3 * (SEGMENT + 16)],
        "cut in a segment": sealed[:-5],
        "extended": sealed + os.urandom(20),
    }
    for what, broken in cases.items():
        with pytest.raises(DecryptionError):
            open_(r, broken)
        assert what
    with pytest.raises(DecryptionError):
        open_(r, sealed, context="rec-2")  # another recording's file
    with pytest.raises(DecryptionError):
        open_(ring(), sealed)  # same key id, another key
    with pytest.raises(DecryptionError, match="not an encrypted recording"):
        open_(r, b"RIFF....WAVE")


@pytest.mark.parametrize(
    ("spec", "current", "message"),
    [
        ("", "k1", "entry 1 is empty"),
        ("k1", "k1", "entry 1 has no ':'"),
        ("k 1:AAAA", "k 1", "entry 1: key id"),
        ("k1:not base64!", "k1", r"entry 1 \('k1'\): the key is not valid base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "k1", "5 bytes, AES-256 needs 32"),
        ("k1:{k},k1:{k}", "k1", "entry 2: key id 'k1' is given twice"),
        ("k1:{k}", "", "HILO_RECORDING_KEY_ID is empty"),
        ("k1:{k}", "k9", "HILO_RECORDING_KEY_ID 'k9' is not one of"),
    ],
)
def test_key_configuration_errors_name_the_entry(spec: str, current: str, message: str) -> None:
    with pytest.raises(KeyConfigError, match=message):
        KeyRing.parse(spec.replace("{k}", key()), current)


def test_url_keys_are_derived_and_current_first() -> None:
    r = KeyRing.parse(f"a:{key()},b:{key()}", "b")
    first, second = r.url_keys()
    assert first not in r.keys.values() and len(first) == 32 and first != second
