"""YAML that admins edit by hand, read so that every problem names the file, the line and (where it can) the
column: "validation error" is not enough. The place of a field is found by walking the YAML node tree along
the field's location (`Positions`).

Two ways in:
- `load_model` / `load_model_text`: a configuration file into a pydantic model; any problem raises
  `ConfigError`, one `<file>:<line>: <field>: <message>` line per problem.
- `parse`: a text into its data and `Positions`, with a `Problem` (file, line, column) for every duplicate
  key (PyYAML would silently keep the last); `InvalidYaml` when the text cannot be read. The loaders that
  collect every problem of a file instead of raising (flows/loader.py, dialplans/hours.py) build on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

# A place in a YAML document: the keys and list indexes that lead to it, as in pydantic's error locations.
Loc = tuple[str | int, ...]


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int  # from 1
    column: int  # from 1
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


def _start(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _find_key(node: yaml.MappingNode, step: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == str(step):
            return k, v
    return None


def _kind_of(node: yaml.MappingNode) -> str | None:
    pair = _find_key(node, "kind")
    return pair[1].value if pair is not None and isinstance(pair[1], yaml.ScalarNode) else None


class Positions:
    """Finds where a place in the YAML tree is, given as a path of keys and list indexes."""

    def __init__(self, tree: yaml.Node | None, text: str = "") -> None:
        self.tree = tree
        self.lines = text.splitlines()

    def _path(self, loc: Loc, *, tags: bool) -> list[tuple[int, yaml.Node | None, yaml.Node]]:
        """(index in `loc`, key node or None for a list item, value node) of each step of `loc` found in the
        tree, from the top, up to the first step that is not there. With `tags`, a step that names the
        `kind` of the mapping it is missing from is passed over: the tag of a discriminated union in
        pydantic's locations."""
        found: list[tuple[int, yaml.Node | None, yaml.Node]] = []
        node = self.tree
        for i, step in enumerate(loc):
            if isinstance(node, yaml.MappingNode):
                pair = _find_key(node, step)
                if pair is None:
                    if tags and _kind_of(node) == step:
                        continue
                    break
                key, node = pair
                found.append((i, key, node))
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
                node = node.value[step]
                found.append((i, None, node))
            else:
                break
        return found

    def node_at(self, loc: Loc) -> yaml.Node | None:
        found = self._path(loc, tags=False)
        if len(found) < len(loc):
            return None
        return found[-1][2] if found else self.tree

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
        """Line and column of the value at `loc` (or of its key, with key=True; a step followed by the
        pseudo-step "[key]" also means its key). A place that does not exist in the file, such as a
        missing field, is reported at the nearest enclosing value that does."""
        if self.tree is None:
            return 1, 1
        where = _start(self.tree)
        for i, k, v in self._path(loc, tags=True):
            wants_key = (key and i == len(loc) - 1) or (i + 1 < len(loc) and loc[i + 1] == "[key]")
            if wants_key and k is not None:
                return _start(k)
            where = _start(v)
        return where

    def line_of(self, loc: Loc) -> int:
        """The line of the deepest step of `loc` in the file: the line of its key for a mapping entry, of
        the item for a list item (1 for an empty document)."""
        if self.tree is None:
            return 1
        found = self._path(loc, tags=False)
        if not found:
            return _start(self.tree)[0]
        _, k, v = found[-1]
        return _start(k if k is not None else v)[0]


def duplicate_keys(file: str, tree: yaml.Node) -> list[Problem]:
    """A problem at every key repeated in its mapping (the first one stands)."""
    problems: list[Problem] = []
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
                            Problem(file, line, column, f"duplicate key {k.value!r} (first at line {earlier})")
                        )
                    else:
                        first[k.value] = k
                stack += [k, v]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
    return problems


def yaml_problem(file: str, exc: yaml.YAMLError) -> Problem:
    """A YAML syntax error as a problem, at its place when PyYAML knows it."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        if mark is not None:
            return Problem(file, mark.line + 1, mark.column + 1, f"invalid YAML: {what}")
        return Problem(file, 1, 1, f"invalid YAML: {what}")
    if isinstance(exc, yaml.reader.ReaderError):
        return Problem(file, 1, 1, f"invalid YAML: {exc.reason} (character {exc.character!r})")
    return Problem(file, 1, 1, f"invalid YAML: {exc}")


class NoAliasLoader(yaml.SafeLoader):
    """A SafeLoader that refuses YAML anchors and aliases (`&name`, `*name`, `<<: *name`), naming where.
    Hilo's files have no use for them, and an alias is a shared reference that anything walking the data (a
    schema's checks, `json.dumps` of a flow's http body, pydantic) expands: ten aliases per level over nine
    levels is about 600 bytes that take minutes and gigabytes ("billion laughs"). Refused while composing,
    before any of it is built."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        anchor, mark = getattr(event, "anchor", None), getattr(event, "start_mark", None)
        if anchor is not None:
            what = "aliases (*" if isinstance(event, yaml.AliasEvent) else "anchors (&"
            raise yaml.composer.ComposerError(None, None, f"YAML {what}{anchor}) are not allowed here", mark)
        return super().compose_node(parent, index)


class InvalidYaml(Exception):
    """The text is not YAML that can be read; `problem` says where and why."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass
class Parsed:
    data: Any  # None for an empty document
    positions: Positions
    problems: list[Problem] = field(default_factory=list)  # duplicate keys


def parse(text: str, file: str, *, loader: type[NoAliasLoader] = NoAliasLoader) -> Parsed:
    """Read `text` (named `file` in problems) with `loader`, a NoAliasLoader or a narrower one. InvalidYaml
    when it cannot be read, syntax, anchors and aliases or otherwise."""
    try:
        tree = yaml.compose(text, Loader=NoAliasLoader)
        data = yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader without aliases (or a narrower one)
    except yaml.YAMLError as exc:
        raise InvalidYaml(yaml_problem(file, exc)) from exc
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:
        # PyYAML can fail outside its own error types on pathological input (deep nesting, odd timestamps).
        raise InvalidYaml(Problem(file, 1, 1, f"invalid YAML: {exc}")) from exc
    return Parsed(data, Positions(tree, text), duplicate_keys(file, tree) if tree is not None else [])


def load_model(path: Path, model: type[M]) -> M:
    return load_model_text(path.read_text(), str(path), model)


def load_model_text(text: str, path: str, model: type[M]) -> M:
    """Like `load_model` for text held elsewhere (e.g. an applied configuration in PostgreSQL); `path` names
    it in errors."""
    try:
        data = yaml.safe_load(text)
        tree = yaml.compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem}") from exc
    except (yaml.YAMLError, RecursionError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}:1: invalid YAML: {exc}") from exc
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        positions = Positions(tree)
        problems = []
        for error in exc.errors():
            field_name = ".".join(str(p) for p in error["loc"]) or "(top level)"
            problems.append(f"{path}:{positions.line_of(tuple(error['loc']))}: {field_name}: {error['msg']}")
        raise ConfigError("\n".join(problems)) from exc
