"""Who is asking and over what, behind a reverse proxy: HILO_TRUSTED_PROXIES.

A proxy in front of Hilo (TLS termination, load balancer) hides the client: the socket's peer is the
proxy, the connection to Hilo is plain HTTP. The proxy says what it saw in `X-Forwarded-For`,
`X-Forwarded-Proto` and `X-Forwarded-Host`, but anybody can write those headers, so they are believed only
when the peer is one of HILO_TRUSTED_PROXIES (comma-separated addresses or networks); from anyone else they
are ignored. Used for the client address of rate limits (sign-in, web chat), the scheme (the session
cookie's `Secure`, HSTS) and the host (the Origin check, signed provider webhooks).

`add_transport_security` sends `Strict-Transport-Security` on every answer to an HTTPS request (TLS to Hilo
itself, or a trusted proxy's `X-Forwarded-Proto: https`); never on plain HTTP, where a browser ignores it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_proxies(text: str) -> list[Network]:
    """HILO_TRUSTED_PROXIES: comma-separated addresses or networks (ValueError names the bad one)."""
    networks = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"HILO_TRUSTED_PROXIES: {item!r} is not an address or network") from exc
    return networks


def within(address: str | None, networks: list[Network] | tuple[Network, ...]) -> bool:
    if not address or not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _first(value: str) -> str:
    return value.split(",")[0].strip()


@dataclass(frozen=True)
class Proxies:
    """The trusted proxies, and what a request says through them."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Proxies:
        return cls(tuple(parse_proxies(text)))

    def trusts(self, request: web.BaseRequest) -> bool:
        """The request's peer is a trusted proxy: its X-Forwarded-* headers are believed."""
        return within(request.remote, self.networks)

    def client_address(self, request: web.BaseRequest) -> str:
        """The peer, unless it is a trusted proxy; then the last address the proxies added to X-Forwarded-For
        that is not itself a trusted proxy (earlier entries are the client's own word)."""
        peer = request.remote or "unknown"
        if not self.trusts(request):
            return peer
        forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()]
        for address in reversed(forwarded):
            if not within(address, self.networks):
                return address
        return peer

    def scheme(self, request: web.BaseRequest) -> str:
        """Either "https" (TLS reached Hilo itself, or a trusted proxy says its client used it) or "http"."""
        if request.secure:
            return "https"
        if self.trusts(request):
            forwarded = _first(request.headers.get("X-Forwarded-Proto", "")).lower()
            if forwarded in ("http", "https"):
                return forwarded
        return request.scheme

    def is_https(self, request: web.BaseRequest) -> bool:
        return self.scheme(request) == "https"

    def host(self, request: web.BaseRequest) -> str:
        """The host (and port) the client asked for: a trusted proxy's X-Forwarded-Host, else Host."""
        if self.trusts(request):
            forwarded = _first(request.headers.get("X-Forwarded-Host", ""))
            if forwarded:
                return forwarded
        return request.host


NO_PROXIES = Proxies()
PROXIES = web.AppKey("proxies", Proxies)  # set by the composition root from HILO_TRUSTED_PROXIES


def proxies(request: web.Request) -> Proxies:
    return request.app.get(PROXIES, NO_PROXIES)


def client_address(request: web.Request) -> str:
    return proxies(request).client_address(request)


def is_https(request: web.Request) -> bool:
    return proxies(request).is_https(request)


def add_transport_security(app: web.Application, trusted: Proxies, hsts_max_age_s: int) -> None:
    """Believe `trusted` proxies, and send HSTS (max-age `hsts_max_age_s`, 0: never) on HTTPS answers."""
    app[PROXIES] = trusted
    if hsts_max_age_s <= 0:
        return
    value = f"max-age={hsts_max_age_s}"

    async def strict_transport(request: web.Request, response: web.StreamResponse) -> None:
        if trusted.is_https(request):
            response.headers.setdefault("Strict-Transport-Security", value)

    app.on_response_prepare.append(strict_transport)


def address_bucket(address: str) -> str:
    """What a per-address limit counts (sign-in, web chat): the address itself, or for IPv6 its /64 (one
    subscriber usually has a whole /64: counting each /128 would be no limit at all)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)
