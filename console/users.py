"""Console users in PostgreSQL: who may sign in, with which role, taking which agent's calls, and (for a
supervisor) supervising which teams (agents' `teams` in routing.yaml; what that opens to them: routing/scope.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from hilo.passwords import check_strength, hash_password_async, verify_password_async
from hilo.web.auth import EVERYONE

ROLES = EVERYONE  # every role a console user may have
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_TEAM = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # as dialplans.models.Name


class UserError(ValueError):
    """Bad input for a console user; the message names the field."""


@dataclass(frozen=True)
class ConsoleUser:
    username: str
    role: str
    agent_id: str | None
    password_hash: str
    teams: tuple[str, ...] = ()  # a supervisor's


def normalize_username(raw: str) -> str:
    name = raw.strip().lower()
    if not _USERNAME.match(name):
        raise UserError(f"username {raw!r}: use 1-64 of a-z, 0-9, '.', '_', '-' (starting with a letter or digit)")
    return name


_USER_COLUMNS = "username, role, agent_id, password_hash, teams"


def _user(row: asyncpg.Record) -> ConsoleUser:
    return ConsoleUser(row["username"], row["role"], row["agent_id"], row["password_hash"], tuple(row["teams"]))


async def get_user(pool: asyncpg.Pool, username: str) -> ConsoleUser | None:
    row = await pool.fetchrow(f"SELECT {_USER_COLUMNS} FROM console_users WHERE username = $1", username)  # noqa: S608
    return _user(row) if row else None


async def replace_password_hash(pool: asyncpg.Pool, username: str, old_hash: str, new_hash: str) -> bool:
    """A new hash of the same password (a higher cost), unless the password was changed meanwhile."""
    done = await pool.fetchval(
        "UPDATE console_users SET password_hash = $3 WHERE username = $1 AND password_hash = $2 RETURNING true",
        username,
        old_hash,
        new_hash,
    )
    return bool(done)


async def check_teams(pool: asyncpg.Pool, role: str, teams: list[str]) -> tuple[str, ...]:
    """The teams, sorted and once each; a clear error for a non-supervisor with teams or a team no agent is in."""
    if teams and role != "supervisor":
        raise UserError(f"team: only a supervisor supervises teams (role {role!r}; agents' teams are in routing.yaml)")
    for team in teams:
        if not _TEAM.match(team):
            raise UserError(f"team {team!r}: use 1-64 of A-Z, a-z, 0-9, '.', '_', '-'")
        if not await pool.fetchval("SELECT true FROM agents WHERE $1 = ANY(teams)", team):
            raise UserError(f"team {team!r}: no agent is in it (agents' teams come from dialplans/routing.yaml)")
    return tuple(sorted(set(teams)))


async def add_user(
    pool: asyncpg.Pool,
    username: str,
    password: str,
    role: str,
    agent_id: str | None,
    *,
    replace: bool = False,
    teams: list[str] | None = None,
) -> str:
    """Create the user, or with `replace` make an existing one match (role, agent, teams, password).
    Returns "created", "updated" or "unchanged" (already so: running it again changes nothing)."""
    name = normalize_username(username)
    if role not in ROLES:
        raise UserError(f"role {role!r}: one of {', '.join(ROLES)}")
    if role == "agent" and not agent_id:
        raise UserError("agent: an agent user needs --agent (the agent id in dialplans/routing.yaml)")
    check_strength(password)
    if agent_id is not None and not await pool.fetchval("SELECT true FROM agents WHERE id = $1", agent_id):
        raise UserError(f"agent: no agent {agent_id!r} (agents come from dialplans/routing.yaml)")
    supervised = await check_teams(pool, role, teams or [])
    existing = await get_user(pool, name)
    if existing is not None:
        if not replace:
            raise UserError(f"username: {name!r} exists already (use --replace to change it)")
        same = (existing.role, existing.agent_id, existing.teams) == (role, agent_id, supervised)
        if same and await verify_password_async(password, existing.password_hash):
            return "unchanged"
    password_hash = await hash_password_async(password)
    # Without `replace` a user made meanwhile by someone else is left alone (DO NOTHING).
    on_conflict = (
        "DO UPDATE SET password_hash = excluded.password_hash, role = excluded.role,"
        " agent_id = excluded.agent_id, teams = excluded.teams, updated_at = now()"
        if replace
        else "DO NOTHING"
    )
    try:
        written = await pool.fetchval(
            "INSERT INTO console_users (username, password_hash, role, agent_id, teams) VALUES ($1, $2, $3, $4, $5)"  # noqa: S608 (one of two constant clauses)
            f" ON CONFLICT (username) {on_conflict} RETURNING true",
            name,
            password_hash,
            role,
            agent_id,
            list(supervised),
        )
    except asyncpg.UniqueViolationError as exc:
        raise UserError(f"agent: agent {agent_id!r} already has a console user") from exc
    if not written:
        raise UserError(f"username: {name!r} exists already (use --replace to change it)")
    return "created" if existing is None else "updated"


async def list_users(pool: asyncpg.Pool) -> list[ConsoleUser]:
    rows = await pool.fetch(f"SELECT {_USER_COLUMNS} FROM console_users ORDER BY username")  # noqa: S608
    return [_user(r) for r in rows]
