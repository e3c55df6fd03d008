"""The admin API for flows (admin role only): list, get, validate, apply, history, rollback.

A change is sent as `{"files": {"flows/billing.yaml": "<yaml>", "numbers.yaml": "<yaml>"}, "comment": "..."}`:
the files given replace (or, with null, remove) those of the live version, and the result is checked as a
whole. Problems come back in the same `file:line:column` terms as `hilo flows validate`."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from flows.admin import ApplyResult, apply_bundle, rollback_to
from flows.bundle import BundleError, FlowBundle, check_bundle
from flows.loader import FlowProblem
from flows.runtime import FLOWS, checks_for
from flows.versions import UnknownVersion
from hilo.audit import FORM_DESCRIPTION, actor
from hilo.web.auth import ADMIN, principal, requires
from hilo.web.keys import SETTINGS
from hilo.web.openapi import Routes, error_response

ROUTES = Routes()
MAX_VERSION = 2**31 - 1  # flow_versions.version is a PostgreSQL integer


def _problems(problems: list[FlowProblem]) -> list[dict[str, Any]]:
    return [{"file": p.file, "line": p.line, "column": p.column, "message": p.message} for p in problems]


def _who(request: web.Request) -> str:
    """Who applies, as an actor (hilo/audit.py): the signed-in admin or the API token, and through which door."""
    return actor(principal(request))


async def _change(request: web.Request) -> tuple[dict[str, str | None], str] | web.Response:
    try:
        body = await request.json()
    except ValueError:
        return error_response(400, "bad_request", 'body must be JSON: {"files": {"flows/x.yaml": "..."}}', "body")
    if not isinstance(body, dict):
        return error_response(400, "bad_request", "body must be a JSON object", "body")
    files = body.get("files")
    if not isinstance(files, dict) or not files:
        reason = "files must map file names to their text (or null to remove)"
        return error_response(400, "bad_request", reason, "files")
    for name, text in files.items():
        if text is not None and not isinstance(text, str):
            return error_response(400, "bad_request", "each file's content must be text or null", f"files.{name}")
    comment = body.get("comment", "")
    if not isinstance(comment, str) or len(comment) > 500:
        return error_response(400, "bad_request", "comment must be text of at most 500 characters", "comment")
    return files, comment


async def _proposed(request: web.Request) -> tuple[FlowBundle, str] | web.Response:
    change = await _change(request)
    if isinstance(change, web.Response):
        return change
    files, comment = change
    runtime = request.app[FLOWS]
    live = await runtime.versions.live()
    base = live[1] if live else FlowBundle({})
    try:
        return base.changed(files), comment
    except BundleError as exc:
        return error_response(400, "bad_request", str(exc), "files")


def _applied(result: ApplyResult) -> web.Response:
    if result.problems:
        return web.json_response({"ok": False, "problems": _problems(result.problems)}, status=422)
    assert result.version is not None
    return web.json_response(
        {"ok": True, "new": result.new, **result.version.as_dict()}, status=201 if result.new else 200
    )


@requires(*ADMIN)
async def list_flows(request: web.Request) -> web.Response:
    runtime = request.app[FLOWS]
    live = runtime.current
    by_flow: dict[str, list[str]] = {}
    for number, flow_id in sorted(live.numbers.items()):
        by_flow.setdefault(flow_id, []).append(number)
    flows = [
        {"id": f.flow, "description": f.description, "language": f.language, "numbers": by_flow.get(f.flow, [])}
        for f in sorted(live.flows.values(), key=lambda f: f.flow)
    ]
    return web.json_response({"version": live.version, "flows": flows})


@requires(*ADMIN)
async def get_flow(request: web.Request) -> web.Response:
    runtime = request.app[FLOWS]
    live = runtime.current
    flow_id = request.match_info["flow_id"]
    file = live.sources.get(flow_id)
    if file is None:
        return error_response(404, "not_found", f"no flow {flow_id!r} in the live version", "flow_id")
    return web.json_response({"id": flow_id, "file": file, "version": live.version, "source": live.files[file]})


@requires(*ADMIN)
async def validate_flows(request: web.Request) -> web.Response:
    proposed = await _proposed(request)
    if isinstance(proposed, web.Response):
        return proposed
    bundle, _ = proposed
    runtime = request.app[FLOWS]
    checks = checks_for(request.app[SETTINGS].dialplans_dir, runtime.sounds_root)
    _, problems = check_bundle(bundle, checks, where="dialplans")
    return web.json_response({"ok": not problems, "problems": _problems(problems)}, status=200 if not problems else 422)


@requires(*ADMIN)
async def apply_flows(request: web.Request) -> web.Response:
    proposed = await _proposed(request)
    if isinstance(proposed, web.Response):
        return proposed
    bundle, comment = proposed
    runtime = request.app[FLOWS]
    result = await apply_bundle(
        runtime.versions,
        bundle,
        checks_for(request.app[SETTINGS].dialplans_dir, runtime.sounds_root),
        applied_by=_who(request),
        comment=comment,
    )
    if result.version is not None and result.new:
        await runtime.reload()  # this node at once; the others on the NOTIFY
    return _applied(result)


@requires(*ADMIN)
async def flow_history(request: web.Request) -> web.Response:
    runtime = request.app[FLOWS]
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        return error_response(400, "bad_request", "limit must be a whole number", "limit")
    if not 1 <= limit <= 500:
        return error_response(400, "bad_request", "limit must be between 1 and 500", "limit")
    rows = await runtime.versions.history(limit)
    return web.json_response({"live": runtime.current.version, "versions": [r.as_dict() for r in rows]})


@requires(*ADMIN)
async def rollback_flows(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return error_response(400, "bad_request", 'body must be JSON: {"version": 3}', "body")
    version = body.get("version") if isinstance(body, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= MAX_VERSION:
        reason = f"version must be a whole number from 1 to {MAX_VERSION}"
        return error_response(400, "bad_request", reason, "version")
    comment = body.get("comment", "") if isinstance(body.get("comment", ""), str) else ""
    runtime = request.app[FLOWS]
    try:
        result = await rollback_to(
            runtime.versions,
            version,
            checks_for(request.app[SETTINGS].dialplans_dir, runtime.sounds_root),
            applied_by=_who(request),
            comment=comment[:500],
        )
    except UnknownVersion as exc:
        return error_response(404, "not_found", str(exc), "version")
    if result.version is not None:
        await runtime.reload()
    return _applied(result)


class FlowChangeIn(BaseModel):
    files: dict[str, str | None] = Field(description="file name in dialplans/ -> new text, or null to remove")
    comment: str = Field("", max_length=500)


class RollbackIn(BaseModel):
    version: int = Field(ge=1, le=MAX_VERSION)
    comment: str = Field("", max_length=500)


class FlowPath(BaseModel):
    flow_id: str


class HistoryQuery(BaseModel):
    limit: int = Field(50, ge=1, le=500)


class FlowSummary(BaseModel):
    id: str
    description: str
    language: str
    numbers: list[str]


class FlowListOut(BaseModel):
    version: int | None
    flows: list[FlowSummary]


class FlowOut(BaseModel):
    id: str
    file: str
    version: int | None
    source: str


class Problem(BaseModel):
    file: str
    line: int
    column: int
    message: str


class ProblemsOut(BaseModel):
    ok: bool
    problems: list[Problem]


class VersionOut(BaseModel):
    version: int
    digest: str
    applied_by: str = Field(description=FORM_DESCRIPTION)
    applied_at: str
    comment: str
    rollback_of: int | None


class AppliedOut(VersionOut):
    ok: bool
    new: bool


class HistoryOut(BaseModel):
    live: int | None
    versions: list[VersionOut]


_CHANGE_ERRORS = {400: "a file name or field is not acceptable", 422: "the flows have problems (line:column)"}
ROUTES.describe(
    "GET", "/api/flows", summary="The live flows and their numbers", tag="flows", roles=ADMIN, ok={200: FlowListOut}
)
ROUTES.describe(
    "GET",
    "/api/flows/history",
    summary="Applied flow versions, newest first",
    tag="flows",
    roles=ADMIN,
    ok={200: HistoryOut},
    errors={400: "limit out of range"},
    query=HistoryQuery,
)
ROUTES.describe(
    "POST",
    "/api/flows/validate",
    summary="Check a change against the live flows",
    tag="flows",
    roles=ADMIN,
    ok={200: ProblemsOut},
    errors=_CHANGE_ERRORS,
    body=FlowChangeIn,
)
ROUTES.describe(
    "POST",
    "/api/flows/apply",
    summary="Make a change live for the next calls",
    tag="flows",
    roles=ADMIN,
    ok={201: AppliedOut, 200: AppliedOut},
    errors=_CHANGE_ERRORS,
    body=FlowChangeIn,
)
ROUTES.describe(
    "POST",
    "/api/flows/rollback",
    summary="Make an earlier version live again",
    tag="flows",
    roles=ADMIN,
    ok={201: AppliedOut},
    errors={400: "version is not a positive number", 404: "no such version", 422: "that version has problems today"},
    body=RollbackIn,
)
ROUTES.describe(
    "GET",
    "/api/flows/{flow_id}",
    summary="One live flow's source",
    tag="flows",
    roles=ADMIN,
    ok={200: FlowOut},
    errors={404: "no such flow in the live version"},
    path_model=FlowPath,
)


def add_flow_routes(app: web.Application) -> None:
    app.router.add_get("/api/flows", list_flows)
    app.router.add_get("/api/flows/history", flow_history)
    app.router.add_post("/api/flows/validate", validate_flows)
    app.router.add_post("/api/flows/apply", apply_flows)
    app.router.add_post("/api/flows/rollback", rollback_flows)
    app.router.add_get("/api/flows/{flow_id}", get_flow)
