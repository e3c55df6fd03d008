"""What the distribution must carry, derived from the project itself rather than listed by hand: the packages
from pyproject.toml's `[tool.setuptools.packages.find]`, the data files from git (every tracked file under a
package that is not Python)."""

from __future__ import annotations

import fnmatch
import subprocess
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# Files under a package folder that are not part of it. (None today: image recipes live in containers/.)
NOT_PACKAGE_DATA: frozenset[str] = frozenset()


@cache
def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _setuptools() -> dict[str, Any]:
    tool: dict[str, Any] = pyproject().get("tool", {})
    setuptools: dict[str, Any] = tool.get("setuptools", {})
    return setuptools


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@cache
def packages() -> tuple[str, ...]:
    """The import packages setuptools puts in the wheel: `find_packages(include=..., exclude=...)` with the
    patterns of pyproject.toml (a folder is searched only while it has an `__init__.py`)."""
    find: dict[str, Any] = _setuptools().get("packages", {}).get("find", {})
    include: list[str] = find.get("include", ["*"])
    exclude: list[str] = find.get("exclude", [])
    where = [ROOT / w for w in find.get("where", ["."])]
    found: list[str] = []

    def walk(folder: Path, dotted: str) -> None:
        for sub in sorted(folder.iterdir()):
            if not sub.is_dir() or "." in sub.name or not (sub / "__init__.py").is_file():
                continue
            name = f"{dotted}.{sub.name}" if dotted else sub.name
            if _matches(name, include) and not _matches(name, exclude):
                found.append(name)
            walk(sub, name)

    for base in where:
        walk(base, "")
    return tuple(found)


def top_level_packages() -> tuple[str, ...]:
    return tuple(p for p in packages() if "." not in p)


def package_dir(package: str) -> Path:
    return ROOT.joinpath(*package.split("."))


@cache
def tracked_files() -> tuple[str, ...]:
    """Every file git tracks (paths relative to the repository, with forward slashes)."""
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True, timeout=30).stdout
    return tuple(p for p in out.decode().split("\0") if p and (ROOT / p).is_file())


@dataclass(frozen=True)
class DataFile:
    package: str  # the innermost package the file is in
    path: str  # relative to the repository (and so to site-packages once installed)

    @property
    def in_package(self) -> str:
        """The path relative to the package's folder, as package-data globs see it."""
        return self.path.removeprefix(self.package.replace(".", "/") + "/")


@cache
def data_files() -> tuple[DataFile, ...]:
    """Every tracked file under a package folder that is not Python, with the package it belongs to."""
    folders = sorted(((p.replace(".", "/") + "/", p) for p in packages()), key=lambda x: -len(x[0]))
    found = []
    for path in tracked_files():
        if path.endswith((".py", ".pyi")) or path in NOT_PACKAGE_DATA:
            continue
        owner = next((pkg for prefix, pkg in folders if path.startswith(prefix)), None)
        if owner is not None:
            found.append(DataFile(owner, path))
    return tuple(found)


def package_data_globs() -> dict[str, list[str]]:
    globs: dict[str, list[str]] = _setuptools().get("package-data", {})
    return globs


def covered_by_package_data(item: DataFile) -> bool:
    """Whether setuptools' package-data (globbed in the package's folder, `*` for every package) takes it."""
    globs = package_data_globs()
    patterns = [*globs.get(item.package, []), *globs.get("*", [])]
    folder = package_dir(item.package)
    return any(folder / item.in_package in set(folder.glob(p)) for p in patterns)
