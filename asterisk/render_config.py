"""Render `asterisk/etc/*` templates into an Asterisk configuration folder.

A template marker `@@NAME@@` takes the value of the environment variable `HILO_NAME`. The same templates
serve the local stack (`make run`, bound to loopback) and docker-compose (bound to the container network):
only the environment differs. An unknown marker is an error naming the file and line."""

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


def render_folder(src: Path, out: Path, env: Mapping[str, str]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for template in sorted(src.glob("*.conf")):
        target = out / template.name
        target.write_text(render_text(template.read_text(), env, str(template)))
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", type=Path, default=Path(__file__).parent / "etc")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        written = render_folder(args.src, args.out, os.environ)
    except TemplateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"rendered {len(written)} files into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
