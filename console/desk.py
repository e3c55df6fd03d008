"""The agent console over HTTP: the page, sign-in and sign-out, the agent's own state, reading an
interaction (its screen-pop) and wrapping it up.

Agents act only on their own agent and read only interactions offered to them (`routing.offered` on the
timeline); supervisors read and wrap up those of their teams' agents (offered to or taken by one; with no
agent, queued in their teams' queues), admins any (routing/scope.py; a refusal is audited, hilo/actions.py).
Errors are `{"error", "field", "reason"}`."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from console import users
from console.config import ConsoleConfig, load_console_config
from console.screenpop import SCREENPOPS, offered_to
from console.wrapup import WrapupConflict, WrapupError, parse_wrapup, save_wrapup
from console.ws import SOCKETS, close_sockets, console_ws
from crm_bridge.timeline import TIMELINE
from hilo.actions import audit
from hilo.audit import actor
from hilo.passwords import MAX_LENGTH, hash_password_async, needs_rehash, verify_password_async
from hilo.web.auth import EVERYONE, principal, requires, same_origin, session_store
from hilo.web.forwarded import client_address, is_https
from hilo.web.keys import POOL, REDIS, SETTINGS
from hilo.web.openapi import error_response
from hilo.web.sessions import COOKIE, SESSION_TTL_S, Principal, SessionStore
from hilo.web.signin import SIGNIN
from routing.live import BOARD, MANUAL_STATES
from routing.scope import interaction_work, refuse, scope_of

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
CONFIG_KEY = web.AppKey("console_config", ConsoleConfig)
ON_A_CALL = ("ringing", "busy")

# The page loads nothing from elsewhere and may not be framed; it talks only to its own origin.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self';"
        " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _bad(reason: str, field: str) -> web.Response:
    return error_response(400, "bad_request", reason, field)


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


def _sessions(request: web.Request) -> SessionStore:
    sessions = session_store(request)
    assert sessions is not None, "Redis is not connected"
    return sessions


def _away_key(request: web.Request, agent_id: str) -> str:
    return f"{request.app[SETTINGS].namespace}:console:away-reason:{agent_id}"


# -- the page ---------------------------------------------------------------------------------------


async def page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "agent.html", headers=PAGE_HEADERS)


async def to_page(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/console/")


# -- signing in and out -----------------------------------------------------------------------------


def _too_many(wait_s: int, reason: str) -> web.Response:
    response = error_response(429, "too_many_attempts", reason)
    response.headers["Retry-After"] = str(wait_s)
    return response


async def login(request: web.Request) -> web.Response:
    """Sign in. Only from this site's own page (login CSRF: another site's form could otherwise sign the
    victim's browser into the attacker's account), only a JSON body (which a cross-site form cannot send
    without a CORS preflight), and within the limits of hilo/web/signin.py, settled before any hashing."""
    if not same_origin(request):
        return error_response(403, "forbidden", "sign in from this site's own page", "origin")
    if request.content_type != "application/json":
        return error_response(415, "unsupported_media_type", "the body must be application/json", "body")
    body = await _json_body(request)
    if not isinstance(body, dict):
        return _bad('body must be JSON like {"username": "...", "password": "..."}', "body")
    raw_name, password = body.get("username"), body.get("password")
    if not isinstance(raw_name, str) or not raw_name.strip():
        return _bad("username is required", "username")
    if not isinstance(password, str) or not password:
        return _bad("password is required", "password")
    if len(password) > MAX_LENGTH:
        return _bad(f"password is longer than {MAX_LENGTH} characters", "password")
    try:
        username = users.normalize_username(raw_name)
    except users.UserError as exc:
        return _bad(str(exc), "username")
    limiter = request.app[SIGNIN]
    attempt = await limiter.begin(username, client_address(request))  # counted before it is checked
    if attempt.retry_after:
        log.info("console sign-in for user %r refused: %s", username, attempt.reason)
        return _too_many(attempt.retry_after, attempt.reason)
    if not limiter.reserve():  # this node is checking as many as it may at once
        await limiter.not_judged(attempt)
        return _too_many(1, "too many sign-ins at once: try again in 1 s")
    pool = request.app[POOL]
    try:
        user = await users.get_user(pool, username)
        matched = await verify_password_async(password, user.password_hash if user else None)
    except Exception:
        await limiter.not_judged(attempt)
        raise
    finally:
        limiter.release()
    if not matched or user is None:
        log.info("console sign-in refused for user %r", username)
        return error_response(401, "unauthorized", "wrong username or password")
    await limiter.succeeded(attempt)
    if needs_rehash(user.password_hash):  # made at an older cost: upgraded now that the password is known
        await users.replace_password_hash(pool, username, user.password_hash, await hash_password_async(password))
    sessions = _sessions(request)
    token, who = await sessions.create(user.username, user.role, user.agent_id)
    log.info("console user %r signed in (%s)", user.username, user.role)
    response = web.json_response(
        {
            "username": who.username,
            "role": who.role,
            "agent_id": who.agent_id,
            "token": token,
            "expires_in": sessions.ttl_s,
        }
    )
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_TTL_S,
        path="/",
        httponly=True,
        samesite="Strict",
        # HTTPS, to Hilo or through a trusted proxy (HILO_TRUSTED_PROXIES): the cookie never travels in clear
        secure=is_https(request),
    )
    return response


@requires(*EVERYONE)
async def logout(request: web.Request) -> web.Response:
    await _sessions(request).end(principal(request))
    response = web.json_response({"signed_out": True})
    response.del_cookie(COOKIE, path="/")
    return response


# -- the agent's own state --------------------------------------------------------------------------


@requires(*EVERYONE)
async def me(request: web.Request) -> web.Response:
    who = principal(request)
    config = request.app[CONFIG_KEY]
    live: dict[str, str] = {}
    reason = None
    if who.agent_id:
        live = await request.app[BOARD].agent(who.agent_id)
        raw = await request.app[REDIS].get(_away_key(request, who.agent_id))
        reason = raw.decode() if isinstance(raw, bytes) else raw
    return web.json_response(
        {
            "username": who.username,
            "role": who.role,
            "agent_id": who.agent_id,
            "state": live.get("state", "offline") if who.agent_id else None,
            "away_reason": reason if live.get("state") == "away" else None,
            "dispositions": [{"id": k, "label": v} for k, v in config.dispositions.items()],
            "away_reasons": [{"id": k, "label": v} for k, v in config.away_reasons.items()],
            "note_max_length": config.note_max_length,
        }
    )


@requires(*EVERYONE)
async def set_my_state(request: web.Request) -> web.Response:
    who = principal(request)
    if not who.agent_id:
        return error_response(403, "forbidden", "this user takes no calls (no agent id)")
    board, redis = request.app[BOARD], request.app[REDIS]
    config = request.app[CONFIG_KEY]
    body = await _json_body(request)
    if not isinstance(body, dict):
        return _bad('body must be JSON like {"state": "away", "reason": "break"}', "body")
    state, reason = body.get("state"), body.get("reason")
    if state not in MANUAL_STATES:
        return _bad(f"state must be one of {', '.join(MANUAL_STATES)}", "state")
    if state == "away" and reason not in config.away_reasons:
        return _bad(f"an away state needs a reason, one of {', '.join(config.away_reasons)}", "reason")
    if state != "away" and reason is not None:
        return _bad("only the away state takes a reason", "reason")
    current = (await board.agent(who.agent_id)).get("state")
    if current in ON_A_CALL:
        return error_response(409, "conflict", f"you are {current} on a call: change state after it", "state")
    if not await board.set_state(who.agent_id, state, reason):  # the reason goes into the history
        return error_response(404, "not_found", f"agent {who.agent_id!r} is not on the board")
    if state == "away":
        await redis.set(_away_key(request, who.agent_id), str(reason))
    else:
        await redis.delete(_away_key(request, who.agent_id))
    return web.json_response({"agent_id": who.agent_id, "state": state, "away_reason": reason})


# -- interactions -----------------------------------------------------------------------------------


def _interaction_id(request: web.Request) -> uuid.UUID | None:
    try:
        return uuid.UUID(request.match_info["interaction_id"])
    except ValueError:
        return None


def _is_agent(who: Principal) -> bool:
    return who.role == "agent"


async def _out_of_scope(
    request: web.Request, who: Principal, interaction_id: uuid.UUID, action: str, **detail: Any
) -> web.Response | None:
    """For a supervisor (or any non-agent): 403, audited, if the interaction is not their teams' work."""
    pool = request.app[POOL]
    scope = await scope_of(pool, who)
    if scope.everything:
        return None
    work = await interaction_work(pool, interaction_id)
    if work is None or scope.has_work(work.agents, work.queue):
        return None  # (no such interaction: 404 below)
    refusal = await refuse(
        pool,
        who,
        scope,
        action=action,
        target_kind="interaction",
        target_id=str(interaction_id),
        what="this interaction",
        field="interaction_id",
        detail={"agents": list(work.agents), "queue": work.queue, **detail},
    )
    return refusal.response()


@requires(*EVERYONE)
async def read_interaction(request: web.Request) -> web.Response:
    who = principal(request)
    interaction_id = _interaction_id(request)
    if interaction_id is None:
        return _bad("interaction id must be a UUID", "interaction_id")
    pool = request.app[POOL]
    if _is_agent(who) and not (who.agent_id and await offered_to(pool, interaction_id, who.agent_id)):
        reason = "this interaction was not offered to you"
        await audit(
            pool, who, "read", "interaction", str(interaction_id), ok=False, detail={"reason": reason, "read": "pop"}
        )
        return error_response(403, "forbidden", reason)
    if not _is_agent(who) and (refused := await _out_of_scope(request, who, interaction_id, "read", read="pop")):
        return refused
    pop = await request.app[SCREENPOPS].build(interaction_id, who.agent_id)
    if pop is None:
        return error_response(404, "not_found", "no such interaction")
    wrapup = await pool.fetchrow(
        "SELECT disposition, note, username, created_at FROM interaction_wrapups WHERE interaction_id = $1",
        interaction_id,
    )
    pop["wrapup"] = {**dict(wrapup), "created_at": wrapup["created_at"].isoformat()} if wrapup is not None else None
    return web.json_response(pop)


@requires(*EVERYONE)
async def wrap_up(request: web.Request) -> web.Response:
    who = principal(request)
    interaction_id = _interaction_id(request)
    if interaction_id is None:
        return _bad("interaction id must be a UUID", "interaction_id")
    pool = request.app[POOL]
    try:
        wrapup = parse_wrapup(await _json_body(request), request.app[CONFIG_KEY])
    except WrapupError as exc:
        return _bad(exc.reason, exc.field)
    row = await pool.fetchrow("SELECT agent_id FROM interactions WHERE id = $1", interaction_id)
    if row is None:
        return error_response(404, "not_found", "no such interaction")
    had_it = row["agent_id"]  # set when an agent answered
    if _is_agent(who) and (who.agent_id is None or had_it != who.agent_id):
        reason = "only the agent who took this interaction (or a supervisor) wraps it up"
        await audit(pool, who, "wrapup", "interaction", str(interaction_id), ok=False, detail={"reason": reason})
        return error_response(403, "forbidden", reason)
    if not _is_agent(who) and (refused := await _out_of_scope(request, who, interaction_id, "wrapup")):
        return refused
    try:
        result = await save_wrapup(
            pool,
            request.app[TIMELINE].publish,
            interaction_id,
            wrapup,
            agent_id=had_it,
            by=actor(who),
        )
    except LookupError:
        return error_response(404, "not_found", "no such interaction")
    except WrapupConflict as exc:
        return error_response(
            409,
            "conflict",
            f"this interaction is already wrapped up as {exc.existing.disposition!r}; a wrap-up is given once",
            "disposition",
        )
    return web.json_response(
        {
            "interaction_id": str(interaction_id),
            "disposition": wrapup.disposition,
            "note": wrapup.note,
            "duplicate": not result.created,
            "events": [e["id"] for e in result.events],
        },
        status=201 if result.created else 200,
    )


def add_routes(app: web.Application) -> None:
    """Mount the console; reads dialplans/console.yaml now, so a broken file stops the start."""
    app[CONFIG_KEY] = load_console_config(app[SETTINGS].dialplans_dir)
    app[SOCKETS] = set()
    app.on_shutdown.append(close_sockets)
    app.router.add_get("/console", to_page)
    app.router.add_get("/console/", page)
    app.router.add_static("/console/static/", STATIC_DIR, follow_symlinks=False)
    app.router.add_post("/console/api/login", login)
    app.router.add_post("/console/api/logout", logout)
    app.router.add_get("/console/api/me", me)
    app.router.add_post("/console/api/me/state", set_my_state)
    app.router.add_get("/console/api/interactions/{interaction_id}", read_interaction)
    app.router.add_post("/console/api/interactions/{interaction_id}/wrapup", wrap_up)
    app.router.add_get("/console/ws", console_ws)
