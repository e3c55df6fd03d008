"""BENCHMARKS.md: each benchmark owns one `## ...` section and rewrites only that one."""

from __future__ import annotations

from pathlib import Path

from hilo.settings import REPO_ROOT

BENCHMARKS = REPO_ROOT / "BENCHMARKS.md"
_HEAD = "# Benchmarks\n\nNumbers measured on a real stack; each section says the command that produced it.\n"


def write_section(section: str, text: str, path: Path = BENCHMARKS, *, keep: tuple[str, ...] = ()) -> None:
    """Replace the section headed `section` (or add it at the end) with `text`, keeping the others. `keep`:
    headings of subsections (`### ...`) written by hand inside the old section, carried over at its end."""
    body = path.read_text() if path.exists() else _HEAD
    start = body.find(section)
    if start < 0:
        body = body.rstrip("\n") + "\n\n" + text
    else:
        end = body.find("\n## ", start + len(section))
        old = body[start : end if end >= 0 else len(body)]
        kept = [_subsection(old, heading) for heading in keep]
        text = "\n\n".join([text.rstrip("\n"), *(k for k in kept if k)])
        body = body[:start] + text.rstrip("\n") + "\n" + ("\n" + body[end + 1 :] if end >= 0 else "")
    path.write_text(body.rstrip("\n") + "\n")


def _subsection(section: str, heading: str) -> str:
    """The `### heading` subsection of `section` up to the next heading of its level or above ('' if none)."""
    start = section.find(f"\n{heading}\n")
    if start < 0:
        return ""
    ends = [i for i in (section.find("\n### ", start + 1), section.find("\n## ", start + 1)) if i >= 0]
    return section[start + 1 : min(ends) if ends else len(section)].strip("\n")
