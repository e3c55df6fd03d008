"""Load a flow file and keep where every key and value sits, so each problem names file, line and column.

Nothing here raises for a bad file: unreadable files, YAML syntax errors, duplicate keys and schema errors all
become `FlowProblem`s pointing at the offending place (lines and columns count from 1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from flows.schema import Flow

Loc = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class FlowProblem:
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class NoAliasLoader(yaml.SafeLoader):
    """A SafeLoader that refuses YAML anchors and aliases (`&name`, `*name`, `<<: *name`), naming where.
    A flow has no use for them, and an alias is a shared reference that anything walking the data (the
    schema's checks, `json.dumps` of an http node's body, pydantic) expands: ten aliases per level over nine
    levels is about 600 bytes that take minutes and gigabytes ("billion laughs"). Refused while composing,
    before any of it is built."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        anchor, mark = getattr(event, "anchor", None), getattr(event, "start_mark", None)
        if anchor is not None:
            what = "aliases (*" if isinstance(event, yaml.AliasEvent) else "anchors (&"
            raise yaml.composer.ComposerError(None, None, f"YAML {what}{anchor}) are not allowed here", mark)
        return super().compose_node(parent, index)


def _start(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class Positions:
    """Finds the line:column of a place in the YAML tree, given as a path of keys and list indexes."""

    def __init__(self, tree: yaml.Node | None, text: str = "") -> None:
        self.tree = tree
        self.lines = text.splitlines()

    def node_at(self, loc: Loc) -> yaml.Node | None:
        node = self.tree
        for step in loc:
            if isinstance(node, yaml.MappingNode):
                pair = _find_key(node, step)
                node = pair[1] if pair is not None else None
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
                node = node.value[step]
            else:
                return None
        return node

    def of_line_in(self, loc: Loc, line_in_value: int) -> tuple[int, int]:
        """Where line `line_in_value` (from 1) of a multi-line value is: exact for `|` and `>` block texts,
        the start of the value otherwise."""
        node = self.node_at(loc)
        if not isinstance(node, yaml.ScalarNode) or node.style not in {"|", ">"}:
            return self.of(loc)
        index = node.start_mark.line + line_in_value  # the text starts on the line after the `|`
        if 0 <= index < len(self.lines):
            source = self.lines[index]
            return index + 1, len(source) - len(source.lstrip(" ")) + 1
        return self.of(loc)

    def of(self, loc: Loc, *, key: bool = False) -> tuple[int, int]:
        """Where the value at `loc` is (or its key, with key=True). A place that does not exist in the file,
        such as a missing field, is reported at the nearest enclosing value that does."""
        node = self.tree
        if node is None:
            return 1, 1
        where = _start(node)
        items = list(loc)
        i = 0
        while i < len(items):
            step = items[i]
            wants_key = (key and i == len(items) - 1) or (i + 1 < len(items) and items[i + 1] == "[key]")
            if isinstance(node, yaml.MappingNode):
                pair = _find_key(node, step)
                if pair is None:
                    if _kind_of(node) == step:  # the tag of a discriminated union in pydantic's locations
                        i += 1
                        continue
                    return where
                k, v = pair
                if wants_key:
                    return _start(k)
                node, where = v, _start(v)
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
                node = node.value[step]
                where = _start(node)
            else:
                return where
            i += 1
        return where


def _find_key(node: yaml.MappingNode, step: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == str(step):
            return k, v
    return None


def _kind_of(node: yaml.MappingNode) -> str | None:
    pair = _find_key(node, "kind")
    return pair[1].value if pair is not None and isinstance(pair[1], yaml.ScalarNode) else None


@dataclass
class LoadedFlow:
    path: Path
    flow: Flow | None
    positions: Positions
    problems: list[FlowProblem] = field(default_factory=list)

    def problem(self, loc: Loc, message: str, *, key: bool = False) -> FlowProblem:
        line, column = self.positions.of(loc, key=key)
        return FlowProblem(str(self.path), line, column, message)


def _duplicate_keys(path: Path, tree: yaml.Node) -> list[FlowProblem]:
    problems: list[FlowProblem] = []
    stack = [tree]
    seen_nodes: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:  # aliases share nodes
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, yaml.Node] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    if k.value in first:
                        line, column = _start(k)
                        earlier = first[k.value].start_mark.line + 1
                        problems.append(
                            FlowProblem(str(path), line, column, f"duplicate key {k.value!r} (first at line {earlier})")
                        )
                    else:
                        first[k.value] = k
                stack += [k, v]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
    return problems


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


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> FlowProblem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        if mark is not None:
            return FlowProblem(str(path), mark.line + 1, mark.column + 1, f"invalid YAML: {what}")
        return FlowProblem(str(path), 1, 1, f"invalid YAML: {what}")
    if isinstance(exc, yaml.reader.ReaderError):
        return FlowProblem(str(path), 1, 1, f"invalid YAML: {exc.reason} (character {exc.character!r})")
    return FlowProblem(str(path), 1, 1, f"invalid YAML: {exc}")


def load_flow_text(text: str, path: Path) -> LoadedFlow:
    """Parse and validate one flow file's text. `flow` is None when the file has schema or YAML problems."""
    try:
        tree = yaml.compose(text, Loader=NoAliasLoader)
        data = yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 - a SafeLoader without aliases
    except yaml.YAMLError as exc:
        return LoadedFlow(path, None, Positions(None), [_yaml_problem(path, exc)])
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:
        # PyYAML can fail outside its own error types on pathological input (deep nesting, odd timestamps).
        return LoadedFlow(path, None, Positions(None), [FlowProblem(str(path), 1, 1, f"invalid YAML: {exc}")])
    positions = Positions(tree, text)
    loaded = LoadedFlow(path, None, positions)
    if tree is not None:
        loaded.problems += _duplicate_keys(path, tree)
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
