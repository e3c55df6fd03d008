"""A flow's opening: the prompts a voice call says while it does not know yet who calls.

A call answers, then identifies the caller (within HILO_IDENTIFY_BUDGET_S) and opens its interaction on the
store. The flow's first prompts need neither unless they read a customer fact, so they are said meanwhile
(ivr/inbound.py) and the caller hears the greeting at once, never silence. Which nodes those are is decided
here, from the flow's nodes, and nowhere else."""

from __future__ import annotations

from jinja2 import TemplateError, meta

from flows.schema import Flow, Play, Say
from flows.templates import environment

# What identification tells a flow: the `customer` variable (known, id, name, and the store's fields).
IDENTIFIED_NAMES = frozenset({"customer"})


def reads_identification(text: str) -> bool:
    """Does this template read what identification tells? A text that does not parse is taken to (the flow's
    own run reports it, at its place)."""
    try:
        return not IDENTIFIED_NAMES.isdisjoint(meta.find_undeclared_variables(environment().parse(text)))
    except TemplateError:
        return True


def opening(flow: Flow) -> list[str]:
    """The nodes said before the call knows who calls: from the start, each `say` or `play` node whose text
    reads no customer fact, up to the first node that is anything else (a branch, a menu, a lookup: it decides,
    asks, or needs the interaction) or reads one. Never a node twice (a loop of prompts ends the opening)."""
    nodes: list[str] = []
    node_id = flow.start
    while node_id not in nodes:
        node = flow.nodes.get(node_id)
        if not isinstance(node, Say | Play) or reads_identification(node.text):
            break
        nodes.append(node_id)
        node_id = node.next
    return nodes
