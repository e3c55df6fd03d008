"""Render `asterisk/etc/*` templates into an Asterisk configuration folder.

A template marker `@@NAME@@` takes the value of the environment variable `HILO_NAME`. The same templates
serve the local stack (`make run`, bound to loopback) and docker-compose (bound to the container network):
only the environment differs. An unknown marker is an error naming the file and line.

`--production` (docker-compose.yml) adds the templates of `asterisk/etc/production/`: SIP over TLS with
SRTP (`hilo-tls.conf`, which pjsip.conf includes when it is there)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

MARKER = re.compile(r"@@([A-Z0-9_]+)@@")


class TemplateError(ValueError):
    pass


def render_text(text: str, env: Mapping[str, str], source: str = "<template>") -> str:
    def substitute(lineno: int, line: str) -> str:
        def one(match: re.Match[str]) -> str:
            key = "HILO_" + match.group(1)
            if key not in env:
                raise TemplateError(f"{source}:{lineno}: {match.group(0)} needs environment variable {key}")
            return env[key]

        return MARKER.sub(one, line)

    return "".join(substitute(n, line) for n, line in enumerate(text.splitlines(keepends=True), start=1))


PRODUCTION = "production"  # the folder of the production profile's templates, under the templates' folder


def templates(src: Path, *, production: bool = False) -> list[Path]:
    found = sorted(src.glob("*.conf"))
    return found + sorted((src / PRODUCTION).glob("*.conf")) if production else found


def render_folder(src: Path, out: Path, env: Mapping[str, str], *, production: bool = False) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for template in templates(src, production=production):
        target = out / template.name
        target.write_text(render_text(template.read_text(), env, str(template)))
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", type=Path, default=Path(__file__).parent / "etc")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--production", action="store_true", help=f"also the templates of {PRODUCTION}/ (SIP over TLS with SRTP)"
    )
    args = parser.parse_args(argv)
    try:
        written = render_folder(args.src, args.out, os.environ, production=args.production)
    except TemplateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"rendered {len(written)} files into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
