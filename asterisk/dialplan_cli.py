"""`hilo dialplan render|apply`: the Asterisk dialplan generated from `dialplans/numbers.yaml`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from asterisk.ami import AmiClient
from asterisk.dialplan import (
    DialplanError,
    apply_numbers_dialplan,
    config_path,
    render_numbers_dialplan,
    write_atomically,
)
from dialplans.models import load_numbers
from hilo.settings import REPO_ROOT, Settings
from hilo.yamlconf import ConfigError

AMI_LOGIN_TIMEOUT_S = 10.0


def add_dialplan_commands(subparsers: Any) -> None:
    """Add `dialplan` and its subcommands to the `hilo` parser's subparsers."""
    dialplan = subparsers.add_parser("dialplan", help="the Asterisk dialplan generated from dialplans/numbers.yaml")
    sub = dialplan.add_subparsers(dest="dialplan_command", required=True)
    render = sub.add_parser("render", help="print (or write) hilo-numbers.conf")
    render.add_argument("--output", type=Path, default=None, help="write the file here instead of printing it")
    apply = sub.add_parser("apply", help="install hilo-numbers.conf into the running Asterisk and reload its dialplan")
    apply.add_argument(
        "--asterisk-root", type=Path, default=None, help="Asterisk's root folder (default: HILO_ASTERISK_ROOT)"
    )


def numbers_source(settings: Settings) -> tuple[dict[str, str], str]:
    """The numbers of `numbers.yaml` and how to name that file (relative to the repository when inside it)."""
    path = settings.dialplans_dir / "numbers.yaml"
    numbers = load_numbers(settings.dialplans_dir).numbers
    resolved = path.resolve()
    source = str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(path)
    return numbers, source


async def run_dialplan_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        numbers, source = numbers_source(settings)
        if args.dialplan_command == "render":
            text = render_numbers_dialplan(numbers, source=source)
            if args.output is None:
                sys.stdout.write(text)
            else:
                write_atomically(args.output, text)
            return 0
        if args.dialplan_command == "apply":
            return await _apply(settings, args.asterisk_root or settings.asterisk_root, numbers, source)
    except (ConfigError, DialplanError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"unknown dialplan command {args.dialplan_command}", file=sys.stderr)
    return 2


async def _apply(settings: Settings, root: Path | None, numbers: dict[str, str], source: str) -> int:
    if root is None:
        print("error: HILO_ASTERISK_ROOT is not set (or give --asterisk-root): where is Asterisk?", file=sys.stderr)
        return 2
    folder = config_path(root).parent
    if not folder.is_dir():
        print(f"error: {folder} does not exist: is {root} Asterisk's root folder?", file=sys.stderr)
        return 2
    ami = AmiClient(settings.ami_host, settings.ami_port, settings.ami_user, settings.ami_password.get_secret_value())
    await ami.start()
    try:
        try:
            await asyncio.wait_for(ami.logged_in.wait(), AMI_LOGIN_TIMEOUT_S)
        except TimeoutError:
            where = f"{settings.ami_host}:{settings.ami_port} within {AMI_LOGIN_TIMEOUT_S:.0f}s"
            print(f"error: no AMI login at {where}: is Asterisk running?", file=sys.stderr)
            return 1
        known = await apply_numbers_dialplan(ami, root, numbers, source=source)
    finally:
        await ami.close()
    print(f"Asterisk routes {len(known)} number{'' if len(known) == 1 else 's'} to Hilo: {', '.join(known)}")
    return 0
