"""BENCHMARKS.md: each benchmark owns one `## ...` section and rewrites only that one."""

from __future__ import annotations

from pathlib import Path

from hilo.settings import REPO_ROOT

BENCHMARKS = REPO_ROOT / "BENCHMARKS.md"
_HEAD = "# Benchmarks\n\nNumbers measured on a real stack; each section says the command that produced it.\n"


def write_section(section: str, text: str, path: Path = BENCHMARKS) -> None:
    """Replace the section headed `section` (or add it at the end) with `text`, keeping the others."""
    body = path.read_text() if path.exists() else _HEAD
    start = body.find(section)
    if start < 0:
        body = body.rstrip("\n") + "\n\n" + text
    else:
        end = body.find("\n## ", start + len(section))
        body = body[:start] + text.rstrip("\n") + "\n" + ("\n" + body[end + 1 :] if end >= 0 else "")
    path.write_text(body.rstrip("\n") + "\n")
