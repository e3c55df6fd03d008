"""The SIP guard's block list for admins (asterisk/sip_guard.py): which sources Asterisk refuses now and until
when, and lifting an entry (an office locked out by one misconfigured phone). Declared on this module's route
table, served and described in the one API (hilo.web.api)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

from aiohttp import web
from pydantic import BaseModel, Field

from asterisk.sip_guard import SIP_GUARD, SipGuard, source_network
from hilo.web.auth import ADMIN
from hilo.web.openapi import ApiError, Reply, Routes, bad_request, not_found

ROUTES = Routes()


def _guard(request: web.Request) -> SipGuard:
    guard = request.app.get(SIP_GUARD)
    if guard is None:
        raise ApiError(503, "unavailable", "the SIP guard is not running on this server (HILO_SIP_GUARD)")
    return guard


class SipBlockPath(BaseModel):
    address: str = Field(max_length=64, description="an IPv4 or IPv6 address (an IPv6 one lifts its /64)")


class SipBlockOut(BaseModel):
    source: str = Field(description="the address (IPv4 /32) or network (IPv6 /64) Asterisk refuses")
    until: datetime


class SipBlockList(BaseModel):
    blocks: list[SipBlockOut]


@ROUTES.route(
    "GET",
    "/api/sip/blocks",
    summary="Sources Asterisk refuses after repeated failed SIP requests, and until when",
    tag="sip",
    roles=ADMIN,
    ok={200: SipBlockList},
    errors={503: "the SIP guard is off on this server"},
)
async def list_sip_blocks(request: web.Request) -> SipBlockList:
    blocks = await _guard(request).blocked()
    return SipBlockList(
        blocks=[SipBlockOut(source=str(b.network), until=datetime.fromtimestamp(b.until, UTC)) for b in blocks]
    )


@ROUTES.route(
    "DELETE",
    "/api/sip/blocks/{address}",
    summary="Lift a source's block now",
    tag="sip",
    roles=ADMIN,
    ok={204: None},
    errors={400: "not an address", 404: "the source is not blocked", 503: "the SIP guard is off on this server"},
)
async def delete_sip_block(request: web.Request, path: SipBlockPath) -> Reply:
    try:
        address = ipaddress.ip_address(path.address)
    except ValueError as exc:
        raise bad_request(f"{path.address!r} is not an IP address", "address") from exc
    if not await _guard(request).unblock(source_network(address)):
        raise not_found(f"{path.address} is not blocked", "address")
    return Reply(204)
