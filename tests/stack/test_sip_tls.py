"""SIP over TLS with SRTP, the production profile of docker-compose.yml, loaded by a real Asterisk 22.

The shared Asterisk runs the local stack's configuration (plain SIP on loopback) and must not change, so this
test starts a private one from the stack's binaries (tests/stack/private_asterisk.py) on the templates
docker-compose.yml renders: asterisk/etc/pjsip.conf with asterisk/etc/production/hilo-tls.conf (`render_config
--production`), and the phones as `hilo phones render` writes them with HILO_SIP_TLS_PORT set, with a
certificate made here. A phone then:
- is refused a registration over TLS with a wrong password (401) and gets one with its own (200);
- checks Asterisk's certificate (the TLS handshake verifies it against the test's CA and address), over
  TLS 1.2;
- is refused a call that offers plain RTP (488: no audio in clear);
- gets a call that offers SRTP answered with SRTP, and the audio Asterisk sends authenticates and decrypts
  under the key Asterisk's answer gave (RFC 3711, AES-CM with HMAC-SHA1-80)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import re
import secrets
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

from asterisk.phones import render_phones
from asterisk.render_config import render_text, templates
from dialplans.models import Phone, Phones
from hilo.settings import REPO_ROOT
from tests.stack.conftest import Stack
from tests.stack.private_asterisk import PrivateAsterisk, free_port
from tests.stack.sip import SipTlsPhone

ADDRESS = "127.0.0.241"  # the private Asterisk's own (the stack's use 127.0.0.1-3, the other SIP tests .64-.191)
PHONE = "agent-tls"
MODULES = [
    "res_timing_timerfd.so",
    "res_sorcery_config.so",
    "res_sorcery_memory.so",
    "res_sorcery_astdb.so",
    "res_pjproject.so",
    "res_pjsip.so",
    "res_pjsip_session.so",
    "res_pjsip_pubsub.so",
    "res_pjsip_authenticator_digest.so",
    "res_pjsip_endpoint_identifier_user.so",
    "res_pjsip_endpoint_identifier_ip.so",
    "res_pjsip_registrar.so",
    "res_pjsip_nat.so",
    "res_pjsip_caller_id.so",
    "res_pjsip_sdp_rtp.so",
    "res_rtp_asterisk.so",
    "res_srtp.so",
    "chan_pjsip.so",
    "pbx_config.so",
    "app_milliwatt.so",
    "codec_ulaw.so",
]
# The phones' context (phone-endpoint in pjsip.conf): a number that answers with a steady tone.
DIALPLAN = "[general]\n[hilo-agents]\nexten => 600,1,Answer()\n same => n,Milliwatt(o)\n"
MILLIWATT = bytes([0x1E, 0x0B, 0x0B, 0x1E, 0x9E, 0x8B, 0x8B, 0x9E])  # the digital milliwatt in mu-law (o)


@dataclass
class TlsAsterisk:
    asterisk: PrivateAsterisk
    tls_port: int
    password: str
    context: ssl.SSLContext  # trusts the private Asterisk's certificate, and checks it names ADDRESS


def certificate(folder: Path) -> Path:
    """A self-signed certificate for ADDRESS (sip.crt, sip.key in `folder`, as hilo-tls.conf reads them)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ADDRESS)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ADDRESS))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(mode=0o700)
    (folder / "sip.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "sip.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (folder / "sip.key").chmod(0o600)
    return folder / "sip.crt"


@pytest.fixture
async def tls_asterisk(stack: Stack, tmp_path: Path) -> AsyncIterator[TlsAsterisk]:
    assert stack.settings.asterisk_root is not None, "HILO_ASTERISK_ROOT (the stack's Asterisk chroot)"
    asterisk = PrivateAsterisk(stack.settings.asterisk_root, tmp_path / "asterisk", MODULES)
    if (why := asterisk.available) is not None:
        pytest.fail(why)
    cert = certificate(tmp_path / "tls")
    sip_port, tls_port = free_port(ADDRESS), free_port(ADDRESS)
    env = {
        "HILO_BIND_ADDR": ADDRESS,
        "HILO_SIP_PORT": str(sip_port),
        "HILO_MEDIA_ADDR": ADDRESS,
        "HILO_SIP_TLS_PORT": str(tls_port),
        "HILO_SIP_TLS_DIR": str(cert.parent),
    }
    # What docker-compose.yml renders, for SIP: pjsip.conf and the production profile's TLS transport, ...
    source = REPO_ROOT / "asterisk" / "etc"
    files = {
        t.name: render_text(t.read_text(), env, str(t))
        for t in templates(source, production=True)
        if t.name in ("pjsip.conf", "hilo-tls.conf")
    }
    assert set(files) == {"pjsip.conf", "hilo-tls.conf"}
    # ... and the phones as `hilo phones render` writes them with HILO_SIP_TLS_PORT set.
    password = secrets.token_hex(16)
    phones = Phones(phones=[Phone(endpoint=PHONE, caller_name="TLS phone", caller_number="tls")])
    files["hilo-phones.conf"] = render_phones(phones, {phones.phones[0].secret_key: password}, source="test", tls=True)
    files["extensions.conf"] = DIALPLAN
    files["rtp.conf"] = "[general]\nrtpstart=10000\nrtpend=10200\n"  # on ADDRESS only (bind_rtp_to_media_address)
    asterisk.configure(files)
    await asterisk.start()
    try:
        _, transports = await asterisk.rx("pjsip show transports")
        assert f"transport-tls             tls      0      0  {ADDRESS}:{tls_port}" in transports, transports
        context = ssl.create_default_context(cafile=str(cert))
        yield TlsAsterisk(asterisk, tls_port, password, context)
    finally:
        await asterisk.stop()


def offer(rtp: tuple[str, int], key: bytes | None) -> str:
    """An SDP offer of mu-law audio at `rtp`: SRTP with `key` (master key and salt, 30 bytes), or plain RTP."""
    lines = [
        "v=0",
        f"o=- 1 1 IN IP4 {rtp[0]}",
        "s=-",
        f"c=IN IP4 {rtp[0]}",
        "t=0 0",
        f"m=audio {rtp[1]} {'RTP/SAVP' if key else 'RTP/AVP'} 0",
        "a=rtpmap:0 PCMU/8000",
    ]
    if key:
        lines.append(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(key).decode()}")
    return "\r\n".join([*lines, "a=sendrecv", ""])


def _aes_cm(key: bytes, iv: int, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
    return encryptor.update(data) + encryptor.finalize()


@dataclass(frozen=True)
class SrtpKeys:
    """The session keys of one SRTP stream (RFC 3711 4.3.1, key derivation rate 0)."""

    cipher: bytes
    auth: bytes
    salt: int

    @classmethod
    def derive(cls, master: bytes) -> SrtpKeys:
        key, salt = master[:16], int.from_bytes(master[16:30], "big")

        def session(label: int, length: int) -> bytes:
            return _aes_cm(key, (salt ^ (label << 48)) << 16, bytes(length))

        return cls(session(0, 16), session(1, 20), int.from_bytes(session(2, 14), "big"))

    def open(self, packet: bytes) -> bytes | None:
        """The payload of an SRTP packet (first rollover, 12-byte header), or None when it does not
        authenticate under these keys."""
        body, tag = packet[:-10], packet[-10:]
        expected = hmac.new(self.auth, body + bytes(4), hashlib.sha1).digest()[:10]
        if not hmac.compare_digest(tag, expected):
            return None
        sequence, ssrc = int.from_bytes(body[2:4], "big"), int.from_bytes(body[8:12], "big")
        iv = (self.salt << 16) ^ (ssrc << 64) ^ (sequence << 16)
        return _aes_cm(self.cipher, iv, body[12:])


class Audio(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets.put_nowait(data)


async def test_a_phone_registers_and_calls_over_tls_with_srtp_only(tls_asterisk: TlsAsterisk) -> None:
    server = (ADDRESS, tls_asterisk.tls_port)
    stranger = await SipTlsPhone(server, tls_asterisk.context, PHONE, "not-the-password", ADDRESS).open()
    try:
        assert (await stranger.register()).status == 401
    finally:
        await stranger.close()
    _, contacts = await tls_asterisk.asterisk.rx("pjsip show contacts")
    assert PHONE not in contacts, contacts

    phone = await SipTlsPhone(server, tls_asterisk.context, PHONE, tls_asterisk.password, ADDRESS).open()
    loop = asyncio.get_running_loop()
    transport, audio = await loop.create_datagram_endpoint(Audio, local_addr=(ADDRESS, 0))
    rtp = transport.get_extra_info("sockname")[:2]
    try:
        assert phone.certificate["subjectAltName"] == (("IP Address", ADDRESS),)  # the handshake checked it
        assert phone.tls_version == "TLSv1.2"
        registered = await phone.register()
        assert registered.status == 200, registered
        assert (
            registered.headers["contact"]
            .lower()
            .startswith(f"<sip:{PHONE}@{ADDRESS}:{phone.me.split(':')[1]};transport=tls>")
        )
        _, contacts = await tls_asterisk.asterisk.rx("pjsip show contacts")
        assert re.search(rf"Contact:\s+{PHONE}/sip:{PHONE}@{re.escape(phone.me)};tran", contacts), contacts

        plain = await phone.call("600", offer(rtp, None))
        assert plain.status == 488, plain  # no audio in clear

        mine = secrets.token_bytes(30)
        call = await phone.call("600", offer(rtp, mine))
        assert call.status == 200, call
        assert re.search(r"^m=audio \d+ RTP/SAVP 0", call.body, re.MULTILINE), call.body
        crypto = re.search(r"^a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:([A-Za-z0-9+/=]{40})", call.body, re.M)
        assert crypto, call.body
        theirs = SrtpKeys.derive(base64.b64decode(crypto.group(1)))
        packet = await asyncio.wait_for(audio.packets.get(), 5)
        assert len(packet) == 12 + 160 + 10  # 20 ms of mu-law, and an 80-bit authentication tag
        assert packet[12:172] != MILLIWATT * 20  # not the tone in clear
        payload = theirs.open(packet)
        assert payload is not None, "the audio does not authenticate under the key Asterisk's answer gave"
        assert payload == MILLIWATT * 20
        assert await phone.hang_up(call, "600") == 200
    finally:
        transport.close()
        await phone.close()
