"""Load a YAML file into a pydantic model; every error names the file, the line and the field.

Admins edit these files by hand, so "validation error" is not enough: we walk the YAML node tree along the
error's location to find the line that holds the offending field."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    pass


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(key):
                    node, line = v, k.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


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
        problems = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "(top level)"
            line = _line_of(tree, tuple(error["loc"]))
            problems.append(f"{path}:{line or 1}: {field}: {error['msg']}")
        raise ConfigError("\n".join(problems)) from exc
