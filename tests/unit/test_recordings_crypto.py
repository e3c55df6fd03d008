"""Recording encryption: round trips of every length, keys that rotate, and files that were altered, cut
short, extended or swapped all refusing to decrypt; each file under a key of its own, files of the first
format still readable; key configuration errors that name the entry at fault."""

from __future__ import annotations

import base64
import hashlib
import io
import os

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from recordings.crypto import (
    SALT_SIZE,
    DecryptionError,
    KeyConfigError,
    KeyRing,
    decrypt_stream,
    encrypt_stream,
    file_key,
    key_id_of,
    read_header,
)

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


def test_two_files_never_share_a_key() -> None:
    """Segment nonces only count within a file, so safety rests on every file having its own key: derived
    from the ring key and a 32-byte random salt in the header, never the ring key itself. (Before, every
    file was sealed under the ring key with a 56-bit random nonce prefix: past a few thousand files per
    key two prefixes collide, reusing nonces.)"""
    r = ring()
    plain = b"\x00" * (2 * SEGMENT)  # the same plaintext twice: shared key and nonce would show as equal bytes
    files = [seal(r, plain) for _ in range(2)]
    headers = [read_header(io.BytesIO(f)) for f in files]
    assert [h.version for h in headers] == [2, 2]
    salts = [h.nonce_material for h in headers]
    assert all(len(s) == SALT_SIZE for s in salts) and salts[0] != salts[1]
    keys = [file_key(r.keys["k1"], s, "k1") for s in salts]
    assert keys[0] != keys[1] and r.keys["k1"] not in keys
    first_segments = [f[len(h.raw) : len(h.raw) + SEGMENT + 16] for f, h in zip(files, headers, strict=True)]
    assert first_segments[0] != first_segments[1]
    nonce = bytes(7) + b"\x00\x00\x00\x00\x00"  # segment 0, not final
    aad = headers[0].raw + b"rec-1"
    assert AESGCM(keys[0]).decrypt(nonce, first_segments[0], aad) == plain[:SEGMENT]
    for wrong in (keys[1], r.keys["k1"]):  # not the other file's key, not the ring key
        with pytest.raises(InvalidTag):
            AESGCM(wrong).decrypt(nonce, first_segments[0], aad)
    # The salt is bound to the key id: the same salt under another key id is another key.
    assert file_key(r.keys["k1"], salts[0], "k2") != keys[0]


# Written by the first format (version 1: the ring key itself, a random 7-byte nonce prefix): key bytes
# 0..31 under id "old", plaintext bytes (7 * i) % 251 for i < 150, 64-byte segments, context "rec-v1".
V1_FILE = bytes.fromhex(
    "4852454301036f6c64e5fa8ca071835000000040c43fbb44a1307781a3f6a40e66ae9fc5db2e659274dc52493b5944566a53c1"
    "5d0253303d8ac54a91ff7e6cd682f346751e87a6979e1d1e3c06bb256030d43514d72b2c925e50ac8572d1940890db291f08ee"
    "3dbccf1e9b25e6790774853d625b3a622cf64f95cd7751fb4a7d26622256403b5bba233c75386612fd166c5f91ad9cd7ba1bce"
    "b4e59cd578ad5924c8eb39796957e2dc0f51e20ff5d538570d530a33f64698a332b38f4949f59c139db1aa58e551a640aea910"
    "bf7da0f7e866ea5246d057904669"
)


def test_a_file_of_the_first_format_still_decrypts() -> None:
    old = KeyRing.parse(f"old:{base64.b64encode(bytes(range(32))).decode()},new:{key()}", "new")
    assert read_header(io.BytesIO(V1_FILE)).version == 1
    assert key_id_of(io.BytesIO(V1_FILE)) == "old"
    assert open_(old, V1_FILE, context="rec-v1") == bytes((7 * i) % 251 for i in range(150))
    for broken in (V1_FILE[:-1], V1_FILE[:30] + bytes([V1_FILE[30] ^ 1]) + V1_FILE[31:]):
        with pytest.raises(DecryptionError):
            open_(old, broken, context="rec-v1")
    with pytest.raises(DecryptionError):
        open_(old, V1_FILE, context="rec-v2")
    # A version 1 file relabelled as version 2 (or the reverse) does not decrypt either.
    relabelled = V1_FILE[:4] + b"\x02" + V1_FILE[5:]
    with pytest.raises(DecryptionError):
        open_(old, relabelled, context="rec-v1")
    # New files are written in the new format, under the current key.
    assert read_header(io.BytesIO(seal(old, b"new"))).version == 2


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
