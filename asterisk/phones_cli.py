"""`hilo phones list|secret-keys|new-secrets|render|show`: the phones of `dialplans/phones.yaml` and their
credentials."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from asterisk.dialplan import DialplanError, write_atomically
from asterisk.phones import REALM, PhoneError, new_secrets, render_phones, secret_of
from dialplans.models import PHONES_FILE, load_phones
from hilo.settings import REPO_ROOT, Settings
from hilo.yamlconf import ConfigError


def add_phones_commands(subparsers: Any) -> None:
    """Add `phones` and its subcommands to the `hilo` parser's subparsers."""
    phones = subparsers.add_parser("phones", help="the phones of dialplans/phones.yaml and their SIP credentials")
    sub = phones.add_subparsers(dest="phones_command", required=True)
    sub.add_parser("list", help="the phones Hilo provisions (no secrets)")
    sub.add_parser("secret-keys", help="the environment variable of each phone's password, one a line")
    new = sub.add_parser(
        "new-secrets",
        help="give every phone without a password a random one, in HILO_PHONE_SECRETS_FILE (docker-compose.yml)",
    )
    new.add_argument("--renew", nargs="+", default=[], metavar="ENDPOINT", help="new passwords for these phones")
    render = sub.add_parser("render", help="print (or write) Asterisk's hilo-phones.conf (digest hashes only)")
    render.add_argument("--output", type=Path, default=None, help="write the file here (mode 640) instead")
    show = sub.add_parser("show", help="a phone's SIP credentials, to set the phone up (prints the password)")
    show.add_argument("endpoint")


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            values[key.strip()] = value.strip()
    return values


def environment(settings: Settings) -> dict[str, str]:
    """The values the server sees: its env file (`.run/env`), the phones' secrets file over it
    (HILO_PHONE_SECRETS_FILE), then the process environment over both."""
    values: dict[str, str] = {}
    env_file = settings.model_config.get("env_file")
    if isinstance(env_file, str | Path) and Path(env_file).is_file():
        values.update(read_env_file(Path(env_file)))
    if settings.phone_secrets_file is not None and settings.phone_secrets_file.is_file():
        values.update(read_env_file(settings.phone_secrets_file))
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
        if args.phones_command == "new-secrets":
            return _new_secrets(args.renew, settings)
        if args.phones_command == "render":
            tls = settings.sip_tls_port > 0
            text = render_phones(phones, environment(settings), source=_source(settings), tls=tls)
            if args.output is None:
                sys.stdout.write(text)
            else:
                write_atomically(args.output, text, mode=0o640)
            return 0
        if args.phones_command == "show":
            return _show(args.endpoint, settings)
    except (ConfigError, PhoneError, DialplanError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"unknown phones command {args.phones_command}", file=sys.stderr)
    return 2


def _new_secrets(renew: list[str], settings: Settings) -> int:
    """Passwords for the phones that have none (and those to renew), kept in HILO_PHONE_SECRETS_FILE (0600):
    what `make run` does into .run/env, for a deployment without it."""
    path = settings.phone_secrets_file
    if path is None:
        print("error: HILO_PHONE_SECRETS_FILE is not set (the file to keep the phones' passwords in)", file=sys.stderr)
        return 1
    kept = read_env_file(path) if path.is_file() else {}
    made = new_secrets(load_phones(settings.dialplans_dir), {**environment(settings), **kept}, renew)
    for key in sorted(k for k in made if k in os.environ):  # renewed here, but the environment's value wins
        print(f"warning: the environment sets {key}, which wins over {path}", file=sys.stderr)
    if made:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = "".join(f"{key}={value}\n" for key, value in {**kept, **made}.items())
        write_atomically(path, text, mode=0o600)
    for key in made:
        print(f"new password: {key}")
    return 0


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
    ]
    if settings.sip_tls_port:
        rows += [
            ("server", f"{settings.sip_host}:{settings.sip_tls_port} (TLS only)"),
            ("media", "SRTP with SDES keys (media_encryption=sdes); a call without SRTP is refused"),
        ]
    else:
        rows.append(("server", f"{settings.sip_host}:{settings.sip_port} (UDP or TCP)"))
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
