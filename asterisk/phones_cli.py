"""`hilo phones list|secret-keys|render|show`: the phones of `dialplans/phones.yaml` and their credentials."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from asterisk.dialplan import write_atomically
from asterisk.phones import REALM, PhoneError, render_phones, secret_of
from dialplans.models import PHONES_FILE, load_phones
from hilo.settings import REPO_ROOT, Settings
from hilo.yamlconf import ConfigError


def add_phones_commands(subparsers: Any) -> None:
    """Add `phones` and its subcommands to the `hilo` parser's subparsers."""
    phones = subparsers.add_parser("phones", help="the phones of dialplans/phones.yaml and their SIP credentials")
    sub = phones.add_subparsers(dest="phones_command", required=True)
    sub.add_parser("list", help="the phones Hilo provisions (no secrets)")
    sub.add_parser("secret-keys", help="the environment variable of each phone's password, one a line")
    render = sub.add_parser("render", help="print (or write) Asterisk's hilo-phones.conf (digest hashes only)")
    render.add_argument("--output", type=Path, default=None, help="write the file here (mode 640) instead")
    show = sub.add_parser("show", help="a phone's SIP credentials, to set the phone up (prints the password)")
    show.add_argument("endpoint")


def environment(settings: Settings) -> dict[str, str]:
    """The values the server sees: its env file (`.run/env`), then the process environment over it."""
    values: dict[str, str] = {}
    env_file = settings.model_config.get("env_file")
    if isinstance(env_file, str | Path) and Path(env_file).is_file():
        for line in Path(env_file).read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.lstrip().startswith("#"):
                values[key.strip()] = value.strip()
    values.update(os.environ)
    return values


def _source(settings: Settings) -> str:
    path = (settings.dialplans_dir / PHONES_FILE).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def run_phones_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        phones = load_phones(settings.dialplans_dir)
        if args.phones_command == "list":
            for phone in phones.phones:
                how = f"static contact {phone.contact}" if phone.contact else "registers"
                print(f"{phone.endpoint}\t{how}\t{phone.secret_key}")
            return 0
        if args.phones_command == "secret-keys":
            print("\n".join(p.secret_key for p in phones.phones))
            return 0
        if args.phones_command == "render":
            text = render_phones(phones, environment(settings), source=_source(settings))
            if args.output is None:
                sys.stdout.write(text)
            else:
                write_atomically(args.output, text, mode=0o640)
            return 0
        if args.phones_command == "show":
            return _show(args.endpoint, settings)
    except (ConfigError, PhoneError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"unknown phones command {args.phones_command}", file=sys.stderr)
    return 2


def _show(endpoint: str, settings: Settings) -> int:
    phone = load_phones(settings.dialplans_dir).get(endpoint)
    if phone is None:
        print(f"error: no phone {endpoint!r} in {_source(settings)}", file=sys.stderr)
        return 1
    secret = secret_of(phone, environment(settings))
    rows = [
        ("endpoint", phone.endpoint),
        ("username", phone.endpoint),
        ("password", secret),
        ("realm", REALM),
        ("server", f"{settings.sip_host}:{settings.sip_port} (UDP or TCP)"),
    ]
    if phone.contact:
        rows.append(("contact", f"{phone.contact} (fixed: Asterisk calls it there; it may not REGISTER)"))
    else:
        rows.append(("register", "yes, with the username and password above (one contact at a time)"))
    if phone.permit:
        rows.append(("from", ", ".join(str(n) for n in phone.permit)))
    for key, value in rows:
        print(f"{key:<9} {value}")
    print(
        f"\nThe password is {phone.secret_key} in the server's environment (.run/env, readable by root only): type "
        "it into the phone and keep it nowhere else. To change it, give that variable a new value (or delete the "
        "line and run `make run`, which generates a new one), then render the phones again "
        "(stack/asterisk.sh start) and set the phone up anew.",
        file=sys.stderr,
    )
    return 0
