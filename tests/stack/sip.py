"""A few SIP requests, as someone on the network would send them: over UDP from a chosen loopback address, a
REGISTER for a phone (with no, a wrong or the right password, answering Asterisk's digest challenge) and an
INVITE naming a trunk; over TLS, a phone that registers and places a call with an SDP offer of its choosing.
Enough SIP to see what Asterisk answers; nothing of a phone's call handling beyond that."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import ssl
import uuid
from dataclasses import dataclass, field

_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case name -> the first value


@dataclass
class SipPeer:
    """A UDP socket on `address` that sends requests to Asterisk and collects whatever comes back (answers to
    its requests, and any request Asterisk sends it, e.g. an INVITE for a phone it registered as)."""

    address: str
    server: tuple[str, int]
    transport: asyncio.DatagramTransport | None = None
    responses: asyncio.Queue[Response] = field(default_factory=asyncio.Queue)
    requests: list[str] = field(default_factory=list)  # request lines received, e.g. "INVITE sip:..."

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    async def open(self) -> SipPeer:
        peer = self

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                peer._received(data.decode(errors="replace"))

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Protocol, local_addr=(self.address, 0))
        self.transport = transport
        return self

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _received(self, text: str) -> None:
        head, _, _ = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        if lines[0].startswith("SIP/2.0 "):
            _, code, *reason = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers.setdefault(name.strip().lower(), value.strip())
            if not code.startswith("1"):  # provisional answers say nothing final
                self.responses.put_nowait(Response(int(code), reason[0] if reason else "", headers))
        else:
            self.requests.append(lines[0])

    async def _send(self, text: str, within: float) -> Response | None:
        """Send one request; its final answer, or None when nothing came back within `within` seconds."""
        assert self.transport is not None
        while not self.responses.empty():
            self.responses.get_nowait()
        self.transport.sendto(text.encode(), self.server)
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self.responses.get(), within)
        return None

    async def send_raw(self, data: bytes, within: float = 1.0) -> Response | None:
        """Send any bytes as one datagram (a malformed request); the final answer that names its Call-ID (not
        a retransmission answering an earlier request), or None when none came within `within` seconds."""
        assert self.transport is not None
        found = re.search(rb"\r\nCall-ID: *([^\r\n]+)", data)
        call_id = found.group(1).decode(errors="replace").strip() if found else None
        while not self.responses.empty():
            self.responses.get_nowait()
        self.transport.sendto(data, self.server)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while (left := deadline - loop.time()) > 0:
            try:
                answer = await asyncio.wait_for(self.responses.get(), left)
            except TimeoutError:
                return None
            if call_id is None or answer.headers.get("call-id") == call_id:
                return answer
        return None

    def _request(self, method: str, uri: str, user: str, call_id: str, cseq: int, extra: list[str]) -> str:
        host = f"{self.server[0]}:{self.server[1]}"
        me = f"{self.address}:{self.port}"
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {me};rport;branch=z9hG4bK{uuid.uuid4().hex}",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{host}>;tag={call_id[:8]}",
            f"To: <sip:{user if method == 'REGISTER' else '100'}@{host}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{user}@{me}>",
            *extra,
            "Content-Length: 0",
            "",
            "",
        ]
        return "\r\n".join(lines)

    async def register(self, user: str, password: str | None = None, within: float = 3.0) -> list[int | None]:
        """REGISTER as `user` with this socket as the contact. Without a password: the one answer. With one:
        the answer to the first request, then (on a 401 challenge) the answer to the request that carries the
        digest computed with `password`. None where nothing came back."""
        host = f"{self.server[0]}:{self.server[1]}"
        call_id, uri = uuid.uuid4().hex, f"sip:{host}"
        first = await self._send(self._request("REGISTER", uri, user, call_id, 1, ["Expires: 300"]), within)
        answers: list[int | None] = [first.status if first else None]
        if password is None or first is None or first.status != 401:
            return answers
        challenge = dict(
            (k.lower(), a or b) for k, a, b in _CHALLENGE_PARAM.findall(first.headers.get("www-authenticate", ""))
        )
        authorization = digest_authorization("REGISTER", uri, user, password, challenge)
        second = await self._send(
            self._request("REGISTER", uri, user, call_id, 2, ["Expires: 300", f"Authorization: {authorization}"]),
            within,
        )
        answers.append(second.status if second else None)
        return answers

    async def invite_as(self, user: str, number: str = "100", within: float = 3.0) -> int | None:
        """An INVITE (no SDP) for `number` whose From names `user` (e.g. a trunk); Asterisk's final answer."""
        host = f"{self.server[0]}:{self.server[1]}"
        answer = await self._send(
            self._request("INVITE", f"sip:{number}@{host}", user, uuid.uuid4().hex, 1, []), within
        )
        return answer.status if answer else None


def digest_authorization(method: str, uri: str, user: str, password: str, challenge: dict[str, str]) -> str:
    """The Authorization header answering an MD5 digest challenge (RFC 2617, qop=auth when offered)."""
    realm, nonce = challenge["realm"], challenge["nonce"]
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode(), usedforsecurity=False).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode(), usedforsecurity=False).hexdigest()
    parts = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"', "algorithm=MD5"]
    if "auth" in challenge.get("qop", "").split(","):
        cnonce, nc = uuid.uuid4().hex[:16], "00000001"
        response = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode(), usedforsecurity=False).hexdigest()
        parts += [f'cnonce="{cnonce}"', f"nc={nc}", "qop=auth"]
    else:
        response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode(), usedforsecurity=False).hexdigest()
    parts.append(f'response="{response}"')
    if "opaque" in challenge:
        parts.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(parts)


@dataclass
class Dialog:
    """What a call answered over TLS left to end it: the answer's final status, headers and SDP body."""

    status: int
    headers: dict[str, str]
    body: str
    call_id: str
    from_tag: str
    cseq: int


class SipTlsPhone:
    """A phone that speaks SIP over TLS to Asterisk (one connection, as a softphone keeps it): REGISTER and
    INVITE with digest credentials, answering Asterisk's challenge. Its own address is the connection's."""

    def __init__(
        self,
        server: tuple[str, int],
        ssl_context: ssl.SSLContext,
        user: str,
        password: str,
        local: str | None = None,
    ) -> None:
        self.server, self.ssl_context, self.user, self.password = server, ssl_context, user, password
        self.local = local  # the address it connects from (None: the system's choice)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.responses: asyncio.Queue[tuple[Response, str]] = asyncio.Queue()
        self.requests: list[str] = []
        self._reading: asyncio.Task[None] | None = None
        self.me = ""

    async def open(self, within: float = 5.0) -> SipTlsPhone:
        host = self.server[0]
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                *self.server,
                ssl=self.ssl_context,
                server_hostname=host,
                local_addr=None if self.local is None else (self.local, 0),
            ),
            within,
        )
        self.reader, self.writer = reader, writer
        address, port = writer.get_extra_info("sockname")[:2]
        self.me = f"{address}:{port}"
        self._reading = asyncio.create_task(self._read())
        return self

    async def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
        if self.writer is not None:
            self.writer.transport.abort()  # Asterisk sends no TLS close_notify to wait for

    @property
    def tls_version(self) -> str:
        assert self.writer is not None
        version: str = self.writer.get_extra_info("ssl_object").version()
        return version

    @property
    def certificate(self) -> dict[str, object]:
        """The server's certificate as the TLS handshake checked it."""
        assert self.writer is not None
        peer: dict[str, object] = self.writer.get_extra_info("peercert")
        return peer

    async def _read(self) -> None:
        assert self.reader is not None
        while True:
            head = (await self.reader.readuntil(b"\r\n\r\n")).decode(errors="replace")
            lines = head.rstrip("\r\n").split("\r\n")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers.setdefault(name.strip().lower(), value.strip())
            length = int(headers.get("content-length", headers.get("l", "0")))
            body = (await self.reader.readexactly(length)).decode(errors="replace") if length else ""
            if lines[0].startswith("SIP/2.0 "):
                _, code, *reason = lines[0].split(" ", 2)
                if not code.startswith("1"):
                    self.responses.put_nowait((Response(int(code), reason[0] if reason else "", headers), body))
            else:
                self.requests.append(lines[0])

    def _send(self, lines: list[str], body: str = "") -> None:
        assert self.writer is not None
        text = "\r\n".join([*lines, f"Content-Length: {len(body.encode())}", "", ""]) + body
        self.writer.write(text.encode())

    async def _answer(self, within: float) -> tuple[Response, str]:
        return await asyncio.wait_for(self.responses.get(), within)

    def _head(self, method: str, uri: str, call_id: str, tag: str, cseq: int, branch: str, to: str) -> list[str]:
        host = f"{self.server[0]}:{self.server[1]}"
        return [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/TLS {self.me};rport;branch={branch}",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@{host}>;tag={tag}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{self.user}@{self.me};transport=tls>",
        ]

    async def _with_credentials(
        self, method: str, uri: str, to: str, extra: list[str], body: str, within: float
    ) -> tuple[Response, str, str, str, int, str]:
        """Send a request; answer a 401 challenge once (ACKing it for an INVITE). The final answer, its body,
        the Call-ID, From tag, CSeq and the Via branch of the request answered."""
        call_id, tag = uuid.uuid4().hex, uuid.uuid4().hex[:8]
        content = ["Content-Type: application/sdp"] if body else []
        branch = f"z9hG4bK{uuid.uuid4().hex}"
        self._send([*self._head(method, uri, call_id, tag, 1, branch, to), *extra, *content], body)
        answer, text = await self._answer(within)
        if answer.status != 401:
            return answer, text, call_id, tag, 1, branch
        if method == "INVITE":
            self._ack(uri, call_id, tag, 1, branch, answer.headers["to"])
        challenge = dict(
            (k.lower(), a or b) for k, a, b in _CHALLENGE_PARAM.findall(answer.headers.get("www-authenticate", ""))
        )
        authorization = digest_authorization(method, uri, self.user, self.password, challenge)
        branch = f"z9hG4bK{uuid.uuid4().hex}"
        head = self._head(method, uri, call_id, tag, 2, branch, to)
        self._send([*head, *extra, f"Authorization: {authorization}", *content], body)
        answer, text = await self._answer(within)
        return answer, text, call_id, tag, 2, branch

    def _ack(self, uri: str, call_id: str, tag: str, cseq: int, branch: str, to: str) -> None:
        self._send(self._head("ACK", uri, call_id, tag, cseq, branch, to))

    async def register(self, within: float = 5.0) -> Response:
        """REGISTER this connection as the phone's contact; the final answer (its Contact lists the bindings)."""
        host = f"{self.server[0]}:{self.server[1]}"
        answer, *_ = await self._with_credentials(
            "REGISTER", f"sip:{host}", f"<sip:{self.user}@{host}>", ["Expires: 300"], "", within
        )
        return answer

    async def call(self, number: str, sdp: str, within: float = 5.0) -> Dialog:
        """INVITE `number` offering `sdp`; a 2xx is ACKed (end it with `hang_up`), any other answer too."""
        host = f"{self.server[0]}:{self.server[1]}"
        uri = f"sip:{number}@{host}"
        answer, body, call_id, tag, cseq, branch = await self._with_credentials(
            "INVITE", uri, f"<{uri}>", [], sdp, within
        )
        to = answer.headers.get("to", f"<{uri}>")
        if answer.status >= 300:
            self._ack(uri, call_id, tag, cseq, branch, to)
        else:
            self._ack(uri, call_id, tag, cseq, f"z9hG4bK{uuid.uuid4().hex}", to)
        return Dialog(answer.status, answer.headers, body, call_id, tag, cseq)

    async def hang_up(self, dialog: Dialog, number: str, within: float = 5.0) -> int:
        host = f"{self.server[0]}:{self.server[1]}"
        uri = f"sip:{number}@{host}"
        to = dialog.headers["to"]
        branch = f"z9hG4bK{uuid.uuid4().hex}"
        self._send(self._head("BYE", uri, dialog.call_id, dialog.from_tag, dialog.cseq + 1, branch, to))
        answer, _ = await self._answer(within)
        return answer.status
