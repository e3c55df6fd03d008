"""How the CLI names a folder in its messages."""

from __future__ import annotations

from pathlib import Path


def shown_path(path: Path) -> str:
    """Relative to the current folder when below it (`dialplans`), the path as given otherwise (never `../..`)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
