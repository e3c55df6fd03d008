"""A flow bundle: the admin-edited files that together decide what callers hear and where they go —
`flows/*.yaml`, `numbers.yaml` and `hours.yaml` — held as texts, so the same bundle can be read from the
`dialplans/` working copy, stored as a version in PostgreSQL, sent through the admin API, and validated
as one unit before it goes live (a number pointing at a flow that the same change deletes is caught)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from dialplans.models import Numbers
from flows.hours import Calendars, load_calendars
from flows.loader import FlowProblem, LoadedFlow, load_flow_text
from flows.schema import Flow
from flows.validate import Checks, check_flow
from hilo.yamlconf import ConfigError, load_model_text

NUMBERS_FILE = "numbers.yaml"
HOURS_FILE = "hours.yaml"
FLOWS_FOLDER = "flows"
MAX_FILE_CHARS = 200_000


class BundleError(ValueError):
    """A file name or size that no bundle may hold."""


def check_file_name(name: str) -> str:
    """`flows/<id>.yaml`, `numbers.yaml` or `hours.yaml`; anything else (paths out of the folder, other
    files) is refused, because the name is also where the file is written back."""
    path = PurePosixPath(name)
    if name in (NUMBERS_FILE, HOURS_FILE):
        return name
    if (
        len(path.parts) == 2
        and path.parts[0] == FLOWS_FOLDER
        and path.suffix == ".yaml"
        and path.stem.replace("-", "_").isidentifier()
    ):
        return name
    raise BundleError(f"{name!r}: a bundle holds only flows/<name>.yaml, {NUMBERS_FILE} and {HOURS_FILE}")


@dataclass(frozen=True)
class FlowBundle:
    files: Mapping[str, str]  # name inside dialplans/ (e.g. "flows/demo.yaml") -> text

    def __post_init__(self) -> None:
        for name, text in self.files.items():
            check_file_name(name)
            if len(text) > MAX_FILE_CHARS:
                raise BundleError(f"{name}: longer than {MAX_FILE_CHARS} characters")

    @classmethod
    def from_dir(cls, dialplans_dir: Path) -> FlowBundle:
        files = {
            f"{FLOWS_FOLDER}/{p.name}": p.read_text(encoding="utf-8")
            for p in sorted((dialplans_dir / FLOWS_FOLDER).glob("*.yaml"))
        }
        for name in (NUMBERS_FILE, HOURS_FILE):
            if (dialplans_dir / name).exists():
                files[name] = (dialplans_dir / name).read_text(encoding="utf-8")
        return cls(files)

    def digest(self) -> str:
        canonical = json.dumps(dict(sorted(self.files.items())), ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def changed(self, updates: Mapping[str, str | None]) -> FlowBundle:
        """This bundle with some files replaced, added, or (None) removed."""
        files = dict(self.files)
        for name, text in updates.items():
            check_file_name(name)
            if text is None:
                files.pop(name, None)
            else:
                files[name] = text
        return FlowBundle(files)

    def flow_files(self) -> dict[str, str]:
        return {name: text for name, text in sorted(self.files.items()) if name.startswith(f"{FLOWS_FOLDER}/")}


@dataclass(frozen=True)
class CheckedBundle:
    """A bundle that passed every check, with what the server needs to answer calls with it."""

    bundle: FlowBundle
    flows: dict[str, Flow]
    sources: dict[str, str]  # flow id -> the file that defines it
    numbers: dict[str, str]  # dialled number -> flow id
    calendars: Calendars  # of hours.yaml (none when the bundle has no hours.yaml)


def check_bundle(
    bundle: FlowBundle, checks: Checks, *, where: str = "dialplans"
) -> tuple[CheckedBundle | None, list[FlowProblem]]:
    """Validate every file of the bundle and the links between them. Problems name `<where>/<file>`, line
    and column; the bundle is usable only when there are none."""
    problems: list[FlowProblem] = []
    hours_path = f"{where}/{HOURS_FILE}"
    calendars, found = load_calendars(bundle.files.get(HOURS_FILE, ""), hours_path)
    problems += found
    # Calendars are checked against this bundle's hours.yaml, not whatever the caller passed.
    checks = replace(checks, calendars=calendars.ids() if calendars is not None else None)
    loaded: dict[str, LoadedFlow] = {}
    for name, text in bundle.flow_files().items():
        item = load_flow_text(text, Path(where) / name)
        problems += item.problems
        if item.flow is None:
            continue
        if item.flow.flow in loaded:
            other = loaded[item.flow.flow].path
            problems.append(item.problem(("flow",), f"flow {item.flow.flow!r} is also defined in {other}"))
            continue
        loaded[item.flow.flow] = item
    if not bundle.flow_files():
        problems.append(FlowProblem(f"{where}/{FLOWS_FOLDER}", 1, 1, "no flow files (*.yaml) here"))
    flows = {flow_id: item.flow for flow_id, item in loaded.items() if item.flow is not None}
    for item in loaded.values():
        problems += check_flow(item, checks, flows)

    numbers: dict[str, str] = {}
    numbers_path = f"{where}/{NUMBERS_FILE}"
    numbers_text = bundle.files.get(NUMBERS_FILE)
    if numbers_text is None:
        problems.append(FlowProblem(numbers_path, 1, 1, "missing: it maps dialled numbers to flows"))
    else:
        try:
            numbers = load_model_text(numbers_text, numbers_path, Numbers).numbers
        except ConfigError as exc:
            problems += [_config_problem(line, numbers_path) for line in str(exc).splitlines()]
        lines = numbers_text.splitlines()
        for number, flow_id in numbers.items():
            if flow_id not in flows:
                line = next((n for n, text in enumerate(lines, 1) if number in text), 1)
                message = f"number {number!r} goes to unknown flow {flow_id!r}"
                problems.append(FlowProblem(numbers_path, line, 1, message))

    if problems or calendars is None:
        return None, sorted(set(problems))
    sources = {flow_id: str(PurePosixPath(str(item.path)).relative_to(where)) for flow_id, item in loaded.items()}
    return CheckedBundle(bundle, flows, sources, numbers, calendars), []


def _config_problem(message: str, path: str) -> FlowProblem:
    # ConfigError lines read "<path>:<line>: <message>".
    rest = message.removeprefix(f"{path}:")
    line, _, text = rest.partition(": ")
    return FlowProblem(path, int(line) if line.isdigit() else 1, 1, text if line.isdigit() else message)
