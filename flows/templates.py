"""Flow texts are Jinja2 templates rendered in a sandbox: they read the flow's variables and nothing else.

A name that is not defined is an error (StrictUndefined), never a silently empty string in a prompt."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template
from jinja2.sandbox import SandboxedEnvironment

# Variables every flow starts with: `caller` (number, channel) and `customer` (known, name, id).
BUILTIN_NAMES = frozenset({"caller", "customer"})


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    # Prompts are spoken or sent as plain text, never as HTML: nothing to escape.
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


@lru_cache(maxsize=1024)
def compile_template(text: str) -> Template:
    return environment().from_string(text)


def render(text: str, variables: dict[str, Any]) -> str:
    """Render `text` with `variables`; raises jinja2.TemplateError (including SecurityError) on failure."""
    return compile_template(text).render(variables)
