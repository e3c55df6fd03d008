"""Load a flow file and keep where every key and value sits (hilo/yamlconf.py), so each problem names file,
line and column.

Nothing here raises for a bad file: unreadable files, YAML syntax errors, duplicate keys and schema errors all
become `FlowProblem`s pointing at the offending place (lines and columns count from 1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from flows.schema import Flow
from hilo.yamlconf import InvalidYaml, Loc, Positions, Problem, parse

# A problem of a file of the flow bundle (flow files, hours.yaml, numbers.yaml).
FlowProblem = Problem


@dataclass
class LoadedFlow:
    path: Path
    flow: Flow | None
    positions: Positions
    problems: list[FlowProblem] = field(default_factory=list)

    def problem(self, loc: Loc, message: str, *, key: bool = False) -> FlowProblem:
        line, column = self.positions.of(loc, key=key)
        return FlowProblem(str(self.path), line, column, message)


def _field_name(loc: Loc, data: object) -> str:
    # Drop pydantic's union tag ("nodes.greet.say.text" -> "nodes.greet.text").
    parts: list[str] = []
    current = data
    for step in loc:
        if isinstance(current, dict) and step not in current and current.get("kind") == step:
            continue
        parts.append(str(step))
        if isinstance(current, dict):
            current = current.get(step)
        elif isinstance(current, list) and isinstance(step, int) and 0 <= step < len(current):
            current = current[step]
        else:
            current = None
    return ".".join(parts)


def load_flow_text(text: str, path: Path) -> LoadedFlow:
    """Parse and validate one flow file's text. `flow` is None when the file has schema or YAML problems."""
    try:
        parsed = parse(text, str(path))
    except InvalidYaml as exc:
        return LoadedFlow(path, None, Positions(None), [exc.problem])
    data = parsed.data
    loaded = LoadedFlow(path, None, parsed.positions, parsed.problems)
    if data is None:
        loaded.problems.append(FlowProblem(str(path), 1, 1, "the file is empty: a flow needs `flow`, `start`, `nodes`"))
        return loaded
    try:
        loaded.flow = Flow.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc: Loc = tuple(error["loc"])
            if error["type"] in {"union_tag_invalid", "union_tag_not_found"}:
                loc = (*loc, "kind")
            field_name = _field_name(loc, data) or "(top level)"
            loaded.problems.append(
                loaded.problem(loc, f"{field_name}: {error['msg']}", key=error["type"] == "extra_forbidden")
            )
    except RecursionError:
        loaded.problems.append(FlowProblem(str(path), 1, 1, "the file is nested too deeply"))
    if loaded.problems:
        loaded.flow = None
    return loaded


def load_flow(path: Path) -> LoadedFlow:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return LoadedFlow(path, None, Positions(None), [FlowProblem(str(path), 1, 1, f"cannot read the file: {exc}")])
    return load_flow_text(text, path)
