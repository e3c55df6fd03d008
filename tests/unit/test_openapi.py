"""The OpenAPI document covers exactly the app's /api/ routes, and the route declarations validate input
and name the field at fault."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel, Field

from hilo.settings import Settings
from hilo.web.auth import AUTH_KEY, TokenAuth
from hilo.web.openapi import Api, Reply, not_found
from server.app import hilo_api, init_app

API = hilo_api()

# Routes mounted by other modules that declare no OpenAPI description yet. Each entry is a known gap,
# named here so that any other undescribed route fails this test.
NOT_YET_DESCRIBED: dict[str, str] = {}


def _served() -> set[tuple[str, str]]:
    app = init_app(Settings())
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/")
        and route.method not in ("HEAD", "OPTIONS")
    }


def _documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


def test_every_api_route_is_documented_and_every_documented_route_is_served() -> None:
    served = {
        (method, path)
        for method, path in _served()
        if not any(path == p or path.startswith(p + "/") for p in NOT_YET_DESCRIBED)
    }
    documented = _documented(API.document())
    assert sorted(served - documented) == [], "served but not in /api/openapi.json"
    assert sorted(documented - served) == [], "in /api/openapi.json but not served"


def test_document_is_openapi_3_1_with_resolvable_references() -> None:
    document = API.document()
    assert document["openapi"] == "3.1.0"
    schemas = document["components"]["schemas"]
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', __import__("json").dumps(document)))
    assert refs and refs <= set(schemas), refs - set(schemas)
    operation_ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))
    for path, item in document["paths"].items():
        for method, op in item.items():
            in_path = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert in_path == set(re.findall(r"{([^}]+)}", path)), (method, path)
            assert any(status.startswith("2") for status in op["responses"]), (method, path)
            if op["security"]:
                assert {"401", "403"} <= set(op["responses"]) and op["x-roles"], (method, path)
    assert document["paths"]["/api/openapi.json"]["get"]["security"] == []
    assert document["paths"]["/api/webhooks"]["post"]["x-roles"] == ["admin"]
    assert "timelineEvent" in document["webhooks"]


def test_document_names_the_signature_headers() -> None:
    hook = API.document()["webhooks"]["timelineEvent"]["post"]
    assert {p["name"] for p in hook["parameters"]} >= {"Hilo-Webhook-Id", "Hilo-Timestamp", "Hilo-Signature"}
    assert "HMAC-SHA256" in hook["description"]


# The route declaration machinery, on a small API of its own ------------------------------------------


class ThingPath(BaseModel):
    thing_id: uuid.UUID


class ThingQuery(BaseModel):
    limit: int = Field(10, ge=1, le=50)


class ThingIn(BaseModel):
    name: str = Field(min_length=1)
    tags: list[str] = Field(default_factory=list)


class ThingOut(BaseModel):
    id: uuid.UUID
    name: str
    limit: int


def _api() -> Api:
    api = Api("test", "1")

    @api.route(
        "POST", "/api/things/{thing_id}", summary="put", tag="t", roles=("admin",), ok={201: ThingOut, 200: ThingOut}
    )
    async def put_thing(request: web.Request, path: ThingPath, query: ThingQuery, body: ThingIn) -> Any:
        if body.name == "missing":
            raise not_found("no such thing", "thing_id")
        if body.name == "wrong-status":
            return Reply(204)
        return Reply(200 if body.name == "old" else 201, ThingOut(id=path.thing_id, name=body.name, limit=query.limit))

    return api


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = web.Application()
    app[AUTH_KEY] = TokenAuth({"admin-token": "admin", "agent-token": "agent"})
    _api().add_routes(app)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


ADMIN = {"Authorization": "Bearer admin-token"}


async def test_valid_input_reaches_the_handler(client: TestClient) -> None:  # type: ignore[type-arg]
    thing = uuid.uuid4()
    resp = await client.post(f"/api/things/{thing}?limit=5", json={"name": "new"}, headers=ADMIN)
    assert resp.status == 201 and await resp.json() == {"id": str(thing), "name": "new", "limit": 5}
    resp = await client.post(f"/api/things/{thing}", json={"name": "old"}, headers=ADMIN)
    assert resp.status == 200 and (await resp.json())["limit"] == 10


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/api/things/nope", {"name": "x"}, "thing_id"),
        (f"/api/things/{uuid.UUID(int=1)}?limit=0", {"name": "x"}, "limit"),
        (f"/api/things/{uuid.UUID(int=1)}?limit=ten", {"name": "x"}, "limit"),
        (f"/api/things/{uuid.UUID(int=1)}?limit=1&limit=2", {"name": "x"}, "limit"),
        (f"/api/things/{uuid.UUID(int=1)}", {"name": ""}, "name"),
        (f"/api/things/{uuid.UUID(int=1)}", {"tags": [1]}, "name"),
        (f"/api/things/{uuid.UUID(int=1)}", {"name": "x", "tags": ["a", 2]}, "tags.1"),
        (f"/api/things/{uuid.UUID(int=1)}", [1], "body"),
        (f"/api/things/{uuid.UUID(int=1)}", None, "body"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    client: TestClient,  # type: ignore[type-arg]
    url: str,
    body: Any,
    field: str,
) -> None:
    resp = (
        await client.post(url, json=body, headers=ADMIN) if body is not None else await client.post(url, headers=ADMIN)
    )
    payload = await resp.json()
    assert resp.status == 400, payload
    assert payload["error"] == "bad_request" and payload["field"] == field and payload["reason"]


async def test_broken_json_is_named(client: TestClient) -> None:  # type: ignore[type-arg]
    resp = await client.post(f"/api/things/{uuid.uuid4()}", data=b"{nope", headers=ADMIN)
    assert resp.status == 400 and (await resp.json())["field"] == "body"


async def test_errors_and_roles(client: TestClient) -> None:  # type: ignore[type-arg]
    url = f"/api/things/{uuid.uuid4()}"
    resp = await client.post(url, json={"name": "missing"}, headers=ADMIN)
    assert resp.status == 404 and await resp.json() == {
        "error": "not_found",
        "field": "thing_id",
        "reason": "no such thing",
    }
    assert (await client.post(url, json={"name": "x"})).status == 401
    assert (await client.post(url, json={"name": "x"}, headers={"Authorization": "Bearer agent-token"})).status == 403
    # auth comes before validation: an anonymous caller learns nothing about the input rules
    assert (await client.post("/api/things/nope", json={})).status == 401


async def test_an_undeclared_status_is_a_server_error(client: TestClient) -> None:  # type: ignore[type-arg]
    resp = await client.post(f"/api/things/{uuid.uuid4()}", json={"name": "wrong-status"}, headers=ADMIN)
    assert resp.status == 500


def test_path_parameters_must_match_the_path_model() -> None:
    api = Api("test", "1")
    with pytest.raises(TypeError, match="path parameters"):

        @api.route("GET", "/api/x/{other_id}", summary="x", tag="t", roles=None, ok={200: ThingOut})
        async def get_x(request: web.Request, path: ThingPath) -> ThingOut:
            raise AssertionError

    with pytest.raises(TypeError, match="must be path, query or body"):

        @api.route("GET", "/api/y", summary="y", tag="t", roles=None, ok={200: ThingOut})
        async def get_y(request: web.Request, limit: int) -> ThingOut:
            raise AssertionError
