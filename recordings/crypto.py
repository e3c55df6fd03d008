"""Encryption of recording files at rest: AES-256-GCM under named keys, in segments so a file of any length
is written and read (played back) without holding it whole in memory.

File layout (all integers big-endian), version 2 (written now):

    b"HREC" | version (1 byte) | key id length (1 byte) | key id (ASCII) | file salt (32 bytes) |
    segment size (4 bytes) | segment 0 | segment 1 | ... | final segment

Each file is encrypted under a key of its own, derived with HKDF-SHA256 from the ring key the header names
and the file's random 32-byte salt (as Tink's streaming AEAD does). Every segment is the AES-GCM ciphertext
(tag included) of `segment size` bytes of plaintext, the final one of the rest (possibly nothing). Its nonce
is 7 zero bytes, the segment's number (4 bytes) and 1 for the final segment, 0 otherwise: unique within the
file, and the file's key is never used for another file, so no (key, nonce) pair is ever used twice however
many files one ring key writes (two files would share a key only if their 256-bit salts collided). Its
associated data is the header plus the file's context (the recording id), so a segment cannot be reordered,
a file cut at a segment boundary fails on its last segment, and a file copied onto another recording's
record does not decrypt. The key id in the header names which key of the ring wrote it: keys can rotate
while old files stay readable.

Version 1 (read only, for files written before version 2): a 7-byte random nonce prefix where the salt is,
and every file encrypted directly under the ring key with nonce = prefix | segment number | final flag.
Two files whose random prefixes collide (likely enough past a few thousand files per key: NIST SP 800-38D's
2^-32 bound) would reuse nonces under one key, which is why nothing writes it any more."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"HREC"
VERSION = 2  # what new files are written as; 1 is still read
VERSION_1 = 1
SEGMENT_SIZE = 1 << 20  # 1 MiB of plaintext per segment: about 65 s of 8 kHz 16-bit audio
TAG_SIZE = 16
NONCE_PREFIX_SIZE = 7  # version 1's random per-file nonce prefix
SALT_SIZE = 32  # version 2's per-file salt, from which the file's own key is derived
_V2_PREFIX = bytes(NONCE_PREFIX_SIZE)  # version 2: the key is per file, so the nonce need only count segments
_V2_INFO = b"hilo recording file key v2|"
KEY_SIZE = 32  # AES-256
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class KeyConfigError(ValueError):
    """HILO_RECORDING_KEYS / HILO_RECORDING_KEY_ID are not usable; the message says which entry and why."""


class DecryptionError(ValueError):
    """The file is not a recording file, its key is unknown, or it was altered or cut short."""


@dataclass(frozen=True)
class KeyRing:
    keys: dict[str, bytes]  # key id -> 32-byte key
    current: str  # the id new files are written with

    @classmethod
    def parse(cls, spec: str, current: str) -> KeyRing:
        """`spec` is "id:base64key,id:base64key" (HILO_RECORDING_KEYS); `current` one of its ids."""
        keys: dict[str, bytes] = {}
        entries = [e.strip() for e in spec.split(",")]
        for n, entry in enumerate(entries, start=1):
            where = f"HILO_RECORDING_KEYS entry {n}"
            if not entry:
                raise KeyConfigError(f"{where} is empty (entries are id:base64key, separated by commas)")
            key_id, sep, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not sep:
                raise KeyConfigError(f"{where} has no ':' between the key id and the key")
            if not _KEY_ID.match(key_id):
                raise KeyConfigError(f"{where}: key id must be 1-64 letters, digits, '_', '.' or '-'")
            if key_id in keys:
                raise KeyConfigError(f"{where}: key id {key_id!r} is given twice")
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise KeyConfigError(f"{where} ({key_id!r}): the key is not valid base64") from None
            if len(key) != KEY_SIZE:
                raise KeyConfigError(f"{where} ({key_id!r}): the key is {len(key)} bytes, AES-256 needs {KEY_SIZE}")
            keys[key_id] = key
        if not current:
            raise KeyConfigError("HILO_RECORDING_KEY_ID is empty: name the key of HILO_RECORDING_KEYS for new files")
        if current not in keys:
            raise KeyConfigError(
                f"HILO_RECORDING_KEY_ID {current!r} is not one of HILO_RECORDING_KEYS ({sorted(keys)})"
            )
        return cls(keys, current)

    def url_keys(self) -> list[bytes]:
        """Keys for signing playback URLs, derived from the ring (the current one first): a URL signed before
        a rotation still verifies until it expires."""
        ordered = [self.current, *(k for k in self.keys if k != self.current)]
        return [hmac.new(self.keys[k], b"hilo recording playback urls", hashlib.sha256).digest() for k in ordered]


@dataclass(frozen=True)
class Header:
    version: int
    key_id: str
    nonce_material: bytes  # version 2: the file's salt; version 1: its nonce prefix
    segment_size: int
    raw: bytes  # the header's bytes (part of every segment's associated data)


def file_key(ring_key: bytes, salt: bytes, key_id: str) -> bytes:
    """A version 2 file's own AES-256 key: HKDF-SHA256 of the ring key, salted with the file's random salt and
    bound to the key id (a salt copied under another key id gives another key)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=_V2_INFO + key_id.encode("ascii")).derive(
        ring_key
    )


def _header(key_id: str, salt: bytes, segment_size: int) -> bytes:
    kid = key_id.encode("ascii")
    return MAGIC + bytes([VERSION, len(kid)]) + kid + salt + struct.pack(">I", segment_size)


def _nonce(prefix: bytes, index: int, final: bool) -> bytes:
    return prefix + struct.pack(">I", index) + (b"\x01" if final else b"\x00")


def encrypt_stream(
    ring: KeyRing,
    chunks: Iterable[bytes],
    out: BinaryIO,
    context: str,
    segment_size: int = SEGMENT_SIZE,
) -> tuple[str, int]:
    """Encrypt the plaintext given as `chunks` into `out` with a key of its own derived from the ring's
    current key (version 2). Returns (sha256 hex of the plaintext, plaintext size)."""
    salt = os.urandom(SALT_SIZE)
    header = _header(ring.current, salt, segment_size)
    aad = header + context.encode()
    aead = AESGCM(file_key(ring.keys[ring.current], salt, ring.current))
    out.write(header)
    digest = hashlib.sha256()
    size = 0
    index = 0
    pending = bytearray()
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
        pending += chunk
        while len(pending) > segment_size:  # keep at least one byte back: the final segment is never empty
            if index >= (1 << 32) - 1:
                raise ValueError("recording too large for one file")
            out.write(aead.encrypt(_nonce(_V2_PREFIX, index, False), bytes(pending[:segment_size]), aad))
            del pending[:segment_size]
            index += 1
    out.write(aead.encrypt(_nonce(_V2_PREFIX, index, True), bytes(pending), aad))
    return digest.hexdigest(), size


def read_header(source: BinaryIO) -> Header:
    """The header of an encrypted file (either version)."""
    start = source.read(6)
    if len(start) < 6 or start[:4] != MAGIC:
        raise DecryptionError("not an encrypted recording file")
    version = start[4]
    if version == VERSION:
        material = SALT_SIZE
    elif version == VERSION_1:
        material = NONCE_PREFIX_SIZE
    else:
        raise DecryptionError(f"unknown recording file version {version}")
    kid = source.read(start[5])
    rest = source.read(material + 4)
    if len(kid) != start[5] or len(rest) != material + 4:
        raise DecryptionError("recording file header is cut short")
    (segment_size,) = struct.unpack(">I", rest[material:])
    if not 1 <= segment_size <= 64 << 20:
        raise DecryptionError("recording file header names an impossible segment size")
    return Header(version, kid.decode("ascii", "replace"), rest[:material], segment_size, start + kid + rest)


def key_id_of(source: BinaryIO) -> str:
    return read_header(source).key_id


def decrypt_stream(ring: KeyRing, source: BinaryIO, context: str) -> Iterator[bytes]:
    """The plaintext of an encrypted file, segment by segment. Raises DecryptionError (possibly after some
    segments were yielded) if anything does not authenticate."""
    header = read_header(source)
    key = ring.keys.get(header.key_id)
    if key is None:
        raise DecryptionError(
            f"the file was written with key {header.key_id!r}, which HILO_RECORDING_KEYS does not hold"
        )
    if header.version == VERSION:
        aead = AESGCM(file_key(key, header.nonce_material, header.key_id))
        prefix = _V2_PREFIX
    else:
        aead = AESGCM(key)
        prefix = header.nonce_material
    aad = header.raw + context.encode()
    sealed = header.segment_size + TAG_SIZE
    index = 0
    current = source.read(sealed)
    while True:
        following = source.read(sealed) if len(current) == sealed else b""
        final = not following
        try:
            yield aead.decrypt(_nonce(prefix, index, final), current, aad)
        except InvalidTag:
            raise DecryptionError(f"segment {index} does not authenticate (altered, cut short or wrong file)") from None
        if final:
            return
        current = following
        index += 1
