"""`hilo users`: console users. The password is read from standard input (typed twice on a terminal) or
from an environment variable named with --password-env, never from the command line, where other users
of the machine and the shell history could see it."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from console.users import ROLES, UserError, add_user, list_users
from hilo.settings import Settings


def add_users_commands(sub: Any) -> None:
    users = sub.add_parser("users", help="console users").add_subparsers(dest="users_command", required=True)
    add = users.add_parser("add", help="add a console user (password from stdin or --password-env)")
    add.add_argument("name", help="user name (lowercase letters, digits, . _ -)")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--agent", help="the agent id (dialplans/routing.yaml) whose calls this user takes")
    add.add_argument(
        "--team",
        action="append",
        default=[],
        dest="teams",
        help="a team (agents' teams in dialplans/routing.yaml) this supervisor supervises; repeatable",
    )
    add.add_argument("--password-env", metavar="VAR", help="read the password from this environment variable")
    add.add_argument("--replace", action="store_true", help="update an existing user (and end their open sessions)")
    users.add_parser("list", help="list console users")


def read_password(env_var: str | None) -> str:
    if env_var:
        value = os.environ.get(env_var, "")
        if not value:
            raise UserError(f"password: environment variable {env_var} is not set or empty")
        return value
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise UserError("password: the two entries differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


async def run_users_command(args: argparse.Namespace, settings: Settings) -> int:
    from hilo.db import create_pool

    pool = await create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=2)
    try:
        if args.users_command == "list":
            for user in await list_users(pool):
                print(f"{user.username}\t{user.role}\t{user.agent_id or '-'}\t{','.join(user.teams) or '-'}")
            return 0
        try:
            password = read_password(args.password_env)
            outcome = await add_user(
                pool, args.name, password, args.role, args.agent, replace=args.replace, teams=args.teams
            )
        except (UserError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    finally:
        await pool.close()
    name = args.name.strip().lower()
    if outcome == "updated":
        ended = await _end_sessions(settings, name)
        print(f"updated console user {name} ({args.role}); {ended} open session(s) ended")
    else:
        print(f"{outcome} console user {name} ({args.role})")
    return 0


async def _end_sessions(settings: Settings, username: str) -> int | str:
    from redis.exceptions import RedisError

    from hilo.stores import redis_client
    from hilo.web.sessions import SessionStore

    redis = redis_client(settings)
    try:
        return await SessionStore(redis, settings.namespace).end_all(username)
    except (OSError, RedisError) as exc:  # Redis down: sessions expire on their own within SESSION_TTL_S
        return f"unknown ({exc})"
    finally:
        await redis.aclose()
