"""The one Hilo API: each feature declares its routes on its own table (`ROUTES` in its `rest.py`), and the
composition root gathers them here with `build_api(...)`, which also serves the document itself at
`GET /api/openapi.json`. Roles are `hilo.web.auth.ADMIN / STAFF / EVERYONE`."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from hilo.web.openapi import Api, Routes

DESCRIPTION = (
    "Customers, identities, merges, timelines, cases and webhook subscriptions; agents, routing, calls"
    " (hold, transfer, supervision), recordings, reports and flows. Authenticate with"
    " `Authorization: Bearer <token>`; each operation lists the roles it admits in `x-roles`."
)
API_KEY = web.AppKey("api", Api)
ROUTES = Routes()


def version() -> str:
    try:
        return metadata.version("hilo")
    except metadata.PackageNotFoundError:
        return "0"


class OpenApiDocument(BaseModel):
    model_config = ConfigDict(extra="allow")

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


@ROUTES.route(
    "GET",
    "/api/openapi.json",
    summary="This API's OpenAPI 3.1 document",
    tag="meta",
    roles=None,
    ok={200: OpenApiDocument},
)
async def openapi_document(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[API_KEY].document())


def build_api(*tables: Routes) -> Api:
    """The document route first, then each table in the order given (fixed paths before templated ones
    within a table, as each declares them)."""
    return Api("Hilo API", version(), DESCRIPTION).include(ROUTES, *tables)


def add_api(app: web.Application, api: Api) -> None:
    app[API_KEY] = api
    api.add_routes(app)
