"""`hilo flows apply|history|rollback`: make the `dialplans/` working copy live, list what was applied, and
bring an earlier version back. Running servers pick a change up for their next calls, without a restart."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from flows.admin import ApplyResult, apply_bundle, rollback_to
from flows.bundle import BundleError, FlowBundle
from flows.paths import shown_path
from flows.runtime import checks_for
from flows.versions import FlowVersions, UnknownVersion
from hilo import audit
from hilo.db import create_pool
from hilo.settings import Settings


def add_version_commands(sub: Any) -> None:
    apply = sub.add_parser("apply", help="validate dialplans/ (flows, numbers, hours) and make it live")
    apply.add_argument("--comment", default="", help="why: kept in the history")
    apply.add_argument("--by", type=_by, help="who applies, kept as login:<by>@cli (default: your login name)")
    history = sub.add_parser("history", help="the applied versions, newest first")
    history.add_argument("--limit", type=int, default=20)
    history.add_argument("--json", action="store_true")
    rollback = sub.add_parser("rollback", help="make an earlier version live again (as a new version)")
    rollback.add_argument("version", type=int)
    rollback.add_argument("--comment", default="")
    rollback.add_argument("--by", type=_by, help="who rolls back, kept as login:<by>@cli (default: your login name)")


def _by(name: str) -> str:
    """--by NAME as an actor (hilo/audit.py): `login:<NAME>@cli`."""
    try:
        return audit.cli(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _who(given: str | None) -> str:
    """Who applies, as an actor: the --by one, else `login:<login name>@cli`."""
    return given or audit.cli()


def _report(result: ApplyResult) -> int:
    if result.problems:
        for problem in result.problems:
            print(problem, file=sys.stderr)
        print(f"{len(result.problems)} problem(s): nothing applied", file=sys.stderr)
        return 1
    assert result.version is not None
    v = result.version
    if not result.new:
        print(f"version {v.version} is already live with exactly this configuration: nothing to apply")
    else:
        came_from = f" (rollback of version {v.rollback_of})" if v.rollback_of else ""
        print(f"version {v.version} is live{came_from}: applied by {v.applied_by}; running calls keep their version")
    return 0


async def run_version_command(args: argparse.Namespace, settings: Settings) -> int:
    pool = await create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=2)
    try:
        versions = FlowVersions(pool)
        if args.flows_command == "history":
            rows = await versions.history(args.limit)
            if args.json:
                print(json.dumps([r.as_dict() for r in rows], indent=2))
            for r in [] if args.json else rows:
                came_from = f"  rollback of {r.rollback_of}" if r.rollback_of else ""
                when = r.applied_at.strftime("%Y-%m-%d %H:%M:%S %Z")
                print(f"{r.version:>5}  {when}  {r.applied_by}  {r.comment}{came_from}")
            return 0
        checks = checks_for(settings.dialplans_dir, settings.sounds_dir.parent)
        if args.flows_command == "apply":
            try:
                bundle = FlowBundle.from_dir(settings.dialplans_dir)
            except (BundleError, OSError, UnicodeDecodeError) as exc:
                print(f"cannot read {settings.dialplans_dir}: {exc}", file=sys.stderr)
                return 1
            result = await apply_bundle(
                versions,
                bundle,
                checks,
                applied_by=_who(args.by),
                comment=args.comment,
                where=shown_path(settings.dialplans_dir),
            )
            return _report(result)
        if args.flows_command == "rollback":
            try:
                who = _who(args.by)
                result = await rollback_to(versions, args.version, checks, applied_by=who, comment=args.comment)
            except UnknownVersion as exc:
                print(exc, file=sys.stderr)
                return 1
            return _report(result)
    finally:
        await pool.close()
    return 2
