"""Routes declared once, with pydantic models, and served and described from that one declaration.

`Api.route` registers a handler under a method and path. The handler names what it takes by its
parameters, each annotated with a pydantic model: `path` (the `{...}` parts of the path), `query` and
`body`; it returns a response model (or `Reply` for another declared status, or raises `ApiError`). The
same declaration gives the aiohttp route (inputs validated before the handler runs, bad input answered
400 with the field named) and the route's entry in the OpenAPI 3.1 document, so the document cannot
drift from the handlers. Routes served by handlers elsewhere are declared with `Api.describe`."""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.json_schema import models_json_schema

from hilo.web.auth import requires

Handler = Callable[..., Awaitable[Any]]
WebhookBuilder = Callable[[Callable[[type[BaseModel]], dict[str, Any]]], dict[str, Any]]
Method = Literal["GET", "POST", "PATCH", "PUT", "DELETE"]
_INPUTS = ("path", "query", "body")
_PATH_PARAM = re.compile(r"{([^{}:]+)}")


class ErrorOut(BaseModel):
    """Every error of the API: what kind, which input field (when one is to blame) and why."""

    error: str
    field: str | None = None
    reason: str
    # on 409s: the customer that owns the identity, or the customer a merged customer now lives in
    owner_customer_id: str | None = None
    survivor_id: str | None = None


class ApiError(Exception):
    def __init__(self, status: int, error: str, reason: str, field: str | None = None, **extra: str) -> None:
        super().__init__(reason)
        self.status = status
        self.body = ErrorOut(error=error, field=field, reason=reason, **extra)

    def response(self) -> web.Response:
        body = self.body.model_dump(exclude_none=True)
        body.setdefault("field", None)
        return web.json_response(body, status=self.status)


def error_response(status: int, error: str, reason: str, field: str | None = None) -> web.Response:
    """The JSON error body of the hand-written handlers (the console's pages, flows), as `ApiError` writes
    it for declared routes, but without a `field` when none is at fault."""
    body: dict[str, Any] = {"error": error, "reason": reason}
    if field:
        body["field"] = field
    return web.json_response(body, status=status)


class Input(BaseModel):
    """Inputs name every field they accept: a misspelt field is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


def bad_request(reason: str, field: str | None) -> ApiError:
    return ApiError(400, "bad_request", reason, field)


def not_found(reason: str, field: str | None = None) -> ApiError:
    return ApiError(404, "not_found", reason, field)


def conflict(reason: str, field: str | None = None, **extra: str) -> ApiError:
    return ApiError(409, "conflict", reason, field, **extra)


@dataclass(frozen=True)
class Reply:
    """A response with a status other than the route's first declared one (it must be declared too)."""

    status: int
    body: BaseModel | None = None


@dataclass
class Operation:
    method: Method
    path: str
    summary: str
    tag: str
    roles: tuple[str, ...] | None  # None: no authentication
    ok: dict[int, type[BaseModel] | None]  # success statuses, first one the default
    errors: dict[int, str]
    inputs: dict[str, type[BaseModel]] = field(default_factory=dict)
    handler: Handler | None = None  # None: served by a handler elsewhere, only described here
    description: str = ""
    media_type: str = "application/json"  # of the success responses (e.g. text/csv for an export)

    @property
    def operation_id(self) -> str:
        if self.handler is not None:
            return self.handler.__name__
        return re.sub(r"[^A-Za-z0-9]+", "_", f"{self.method.lower()}{self.path}").strip("_")


def validation_error(exc: ValidationError, prefix: str = "") -> ApiError:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    field_name = f"{prefix}{where}" if where else (prefix.rstrip(".") or "body")
    return bad_request(first["msg"], field_name)


class Routes:
    """One feature's route table: each `rest.py` declares its operations on its own `ROUTES = Routes()`,
    and the composition root gathers the tables into the one `Api` (`Api.include`). Nothing is
    registered by importing a module."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []
        self.webhooks: dict[str, tuple[WebhookBuilder, list[type[BaseModel]]]] = {}

    # Declaring ------------------------------------------------------------------------------------

    def route(
        self,
        method: Method,
        path: str,
        *,
        summary: str,
        tag: str,
        roles: tuple[str, ...] | None,
        ok: dict[int, type[BaseModel] | None],
        errors: dict[int, str] | None = None,
        media_type: str = "application/json",
    ) -> Callable[[Handler], Handler]:
        """A handler answering another `media_type` than JSON returns its own web.Response; the ok model
        then only describes the body (e.g. a RootModel[str])."""

        def register(handler: Handler) -> Handler:
            hints = typing.get_type_hints(handler)
            inputs: dict[str, type[BaseModel]] = {}
            for name in list(inspect.signature(handler).parameters)[1:]:
                model = hints.get(name)
                if name not in _INPUTS or not (isinstance(model, type) and issubclass(model, BaseModel)):
                    raise TypeError(f"{handler.__name__}: parameter {name!r} must be path, query or body: a model")
                inputs[name] = model
            self._add(
                Operation(
                    method,
                    path,
                    summary,
                    tag,
                    roles,
                    ok,
                    errors or {},
                    inputs,
                    handler,
                    inspect.getdoc(handler) or "",
                    media_type,
                )
            )
            return handler

        return register

    def describe(
        self,
        method: Method,
        path: str,
        *,
        summary: str,
        tag: str,
        roles: tuple[str, ...] | None,
        ok: dict[int, type[BaseModel] | None],
        errors: dict[int, str] | None = None,
        path_model: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        body: type[BaseModel] | None = None,
        description: str = "",
    ) -> None:
        """Describe a route whose handler is registered elsewhere (its inputs are not validated here)."""
        inputs = {k: v for k, v in (("path", path_model), ("query", query), ("body", body)) if v is not None}
        self._add(Operation(method, path, summary, tag, roles, ok, errors or {}, inputs, None, description))

    def webhook(self, name: str, build: WebhookBuilder, models: list[type[BaseModel]]) -> None:
        """An outbound request Hilo makes (OpenAPI's top-level `webhooks`): `build` gets a function giving
        the schema reference of each of `models` and returns the path item."""
        self.webhooks[name] = (build, models)

    def _add(self, op: Operation) -> None:
        if not op.ok:
            raise ValueError(f"{op.method} {op.path}: declare at least one success status")
        params = set(_PATH_PARAM.findall(op.path))
        path_model = op.inputs.get("path")
        declared = set(path_model.model_fields) if path_model else set()
        if params != declared:
            raise TypeError(f"{op.method} {op.path}: path parameters {sorted(params)} but model has {sorted(declared)}")
        if any(o.method == op.method and o.path == op.path for o in self.operations):
            raise ValueError(f"{op.method} {op.path} declared twice")
        self.operations.append(op)


class Api(Routes):
    """The one API: every feature's route table, served and described in one OpenAPI 3.1 document."""

    def __init__(self, title: str, version: str, description: str = "") -> None:
        super().__init__()
        self.title = title
        self.version = version
        self.description = description
        self._document: dict[str, Any] | None = None

    def include(self, *tables: Routes) -> Api:
        for table in tables:
            for op in table.operations:
                self._add(op)
            self.webhooks.update(table.webhooks)
        self._document = None
        return self

    # Serving --------------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """Register every route that has a handler here (in declaration order: fixed paths first)."""
        for op in self.operations:
            if op.handler is not None:
                app.router.add_route(op.method, op.path, self._endpoint(op))

    def _endpoint(self, op: Operation) -> Handler:
        assert op.handler is not None
        handler = op.handler
        default_status = next(iter(op.ok))

        async def endpoint(request: web.Request) -> web.StreamResponse:
            try:
                kwargs = {name: await _read_input(request, name, model) for name, model in op.inputs.items()}
                result = await handler(request, **kwargs)
            except ApiError as exc:
                return exc.response()
            if isinstance(result, web.StreamResponse):
                return result
            reply = result if isinstance(result, Reply) else Reply(default_status, result)
            if reply.status not in op.ok:
                raise AssertionError(f"{op.operation_id} answered {reply.status}, not declared in {sorted(op.ok)}")
            model = op.ok[reply.status]
            if model is None or reply.body is None:
                assert model is None and reply.body is None, f"{op.operation_id}: body does not match declaration"
                return web.Response(status=reply.status)
            assert isinstance(reply.body, model), f"{op.operation_id}: answered {type(reply.body).__name__}"
            return web.json_response(reply.body.model_dump(mode="json", by_alias=True), status=reply.status)

        endpoint.__name__ = handler.__name__
        return requires(*op.roles)(endpoint) if op.roles is not None else endpoint

    # Describing -----------------------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        if self._document is None:
            self._document = self._build()
        return self._document

    def _build(self) -> dict[str, Any]:
        wanted: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [(ErrorOut, "serialization")]
        for op in self.operations:
            wanted += [(model, "validation") for model in op.inputs.values()]
            wanted += [(model, "serialization") for model in op.ok.values() if model is not None]
        wanted += [(model, "serialization") for _, models in self.webhooks.values() for model in models]
        unique = list(dict.fromkeys(wanted))
        refs, top = models_json_schema(unique, ref_template="#/components/schemas/{model}")
        schemas: dict[str, Any] = top.get("$defs", {})

        def ref(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, Any]:
            return dict(refs[(model, mode)])

        def properties(model: type[BaseModel]) -> tuple[dict[str, Any], list[str]]:
            name = ref(model, "validation")["$ref"].rsplit("/", 1)[1]
            return schemas[name].get("properties", {}), schemas[name].get("required", [])

        paths: dict[str, dict[str, Any]] = {}
        for op in self.operations:
            entry: dict[str, Any] = {
                "operationId": op.operation_id,
                "summary": op.summary,
                "tags": [op.tag],
                "responses": {},
            }
            if op.description:
                entry["description"] = op.description
            parameters = []
            for where in ("path", "query"):
                model = op.inputs.get(where)
                if model is None:
                    continue
                props, required = properties(model)
                for name, schema in props.items():
                    param: dict[str, Any] = {"name": name, "in": where, "required": name in required, "schema": schema}
                    if "description" in schema:
                        param["description"] = schema["description"]
                    parameters.append(param)
            if parameters:
                entry["parameters"] = parameters
            if "body" in op.inputs:
                entry["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": ref(op.inputs["body"], "validation")}},
                }
            for status, model in op.ok.items():
                response: dict[str, Any] = {"description": _STATUS_TEXT.get(status, "success")}
                if model is not None:
                    response["content"] = {op.media_type: {"schema": ref(model, "serialization")}}
                entry["responses"][str(status)] = response
            errors = dict(op.errors)
            if op.inputs:
                errors.setdefault(400, "bad input: `field` names the input at fault")
            if op.roles is not None:
                errors.setdefault(401, "missing or invalid bearer token")
                errors.setdefault(403, f"the token's role is not one of: {', '.join(op.roles)}")
                entry["security"] = [{"bearer": []}]
                entry["x-roles"] = list(op.roles)
            else:
                entry["security"] = []
            for status, text in sorted(errors.items()):
                entry["responses"][str(status)] = {
                    "description": text,
                    "content": {"application/json": {"schema": ref(ErrorOut, "serialization")}},
                }
            paths.setdefault(op.path, {})[op.method.lower()] = entry

        # Path and query models were only needed for their fields, which are now parameters.
        for op in self.operations:
            for where in ("path", "query"):
                if where in op.inputs:
                    schemas.pop(ref(op.inputs[where], "validation")["$ref"].rsplit("/", 1)[1], None)

        document: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": self.version, "description": self.description},
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
        }
        if self.webhooks:
            document["webhooks"] = {
                name: build(lambda model: ref(model, "serialization")) for name, (build, _) in self.webhooks.items()
            }
        # A round trip through JSON proves the document serialises, and gives the handler a plain copy.
        result: dict[str, Any] = json.loads(json.dumps(document))
        return result


_STATUS_TEXT = {200: "OK", 201: "created", 202: "accepted", 204: "done, no content", 503: "unavailable"}


async def _read_input(request: web.Request, where: str, model: type[BaseModel]) -> BaseModel:
    if where == "path":
        raw: Any = dict(request.match_info)
    elif where == "query":
        raw = {key: request.query.getone(key) for key in request.query}
        repeated = [key for key in request.query if len(request.query.getall(key)) > 1]
        if repeated:
            raise bad_request("give this query parameter once", repeated[0])
    else:
        if not request.can_read_body:
            raise bad_request("a JSON body is required", "body")
        try:
            raw = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_request(f"body is not valid JSON: {exc}", "body") from exc
        if not isinstance(raw, dict):
            raise bad_request("body must be a JSON object", "body")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc) from exc
