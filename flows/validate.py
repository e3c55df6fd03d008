"""Every problem of a set of flow files, each with file, line and column.

Beyond the schema: references to nodes that do not exist, nodes never reached from `start`, loops that can
spin forever without waiting for the caller, template errors and unknown variables, queues missing from
routing.yaml, calendars missing from hours.yaml, sound files missing from the sounds folder, `goto` to a flow
that does not exist, `now` read by a flow without a `timezone`, and variables Hilo sets itself (`caller`,
`now`) written by a flow."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from jinja2 import TemplateSyntaxError, meta

from dialplans.models import load_routing
from flows.hours import load_calendars_file
from flows.loader import FlowProblem, LoadedFlow, load_flow
from flows.schema import (
    CONSENT_VARIABLE,
    INPUT_KINDS,
    Branch,
    Callback,
    Consent,
    Flow,
    Gather,
    Goto,
    Hours,
    Http,
    Lookup,
    Menu,
    Play,
    Queue,
    SetVars,
    node_references,
    templates_of,
)
from flows.templates import BUILTIN_NAMES, environment
from hilo.yamlconf import ConfigError, Loc
from speech.matching import normalize

SOUND_EXTENSIONS = ("", ".wav", ".gsm", ".ulaw", ".alaw", ".sln", ".sln16", ".g722", ".mp3")
# Variables the engine sets and refreshes itself: a flow reads them and never writes them.
ENGINE_NAMES = frozenset({"caller", "now"})
_HH_MM = re.compile(r"^[0-9]{2}:[0-9]{2}$")


@dataclass(frozen=True)
class Checks:
    """What to check the flows against. None skips that check."""

    queues: frozenset[str] | None = None
    sounds_dir: Path | None = None
    calendars: frozenset[str] | None = None  # the calendar ids of hours.yaml


def known_queues(dialplans_dir: Path) -> tuple[frozenset[str] | None, list[FlowProblem]]:
    try:
        routing = load_routing(dialplans_dir)
    except ConfigError as exc:
        return None, [FlowProblem(str(dialplans_dir / "routing.yaml"), 1, 1, f"cannot check queues: {exc}")]
    except OSError as exc:
        return None, [FlowProblem(str(dialplans_dir / "routing.yaml"), 1, 1, f"cannot check queues: {exc}")]
    return frozenset(q.id for q in routing.queues), []


def known_calendars(dialplans_dir: Path) -> tuple[frozenset[str] | None, list[FlowProblem]]:
    """The calendar ids of dialplans/hours.yaml with its problems; no file means no calendars."""
    path = dialplans_dir / "hours.yaml"
    if not path.exists():
        return frozenset(), []
    calendars, problems = load_calendars_file(path)
    return (calendars.ids() if calendars is not None else None), problems


def flow_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())
        else:
            files.append(path)
    return files


def validate_paths(paths: Iterable[Path], checks: Checks | None = None) -> list[FlowProblem]:
    """All problems of the flow files in `paths` (files or folders). An empty list means all is well.
    `goto` targets may be any flow given, or any flow in the same folder as a given file."""
    problems, _ = load_and_validate(paths, checks)
    return problems


def load_and_validate(
    paths: Iterable[Path], checks: Checks | None = None
) -> tuple[list[FlowProblem], dict[str, LoadedFlow]]:
    checks = checks or Checks()
    given = list(paths)
    files = flow_files(given)
    problems: list[FlowProblem] = []
    if not files:
        problems += [FlowProblem(str(p), 1, 1, "no flow files (*.yaml) here") for p in given]
    loaded = [load_flow(f) for f in files]
    flows: dict[str, LoadedFlow] = {}
    for item in loaded:
        problems += item.problems
        if item.flow is None:
            continue
        if item.flow.flow in flows:
            other = flows[item.flow.flow].path
            problems.append(item.problem(("flow",), f"flow {item.flow.flow!r} is also defined in {other}"))
            continue
        flows[item.flow.flow] = item
    # Flows beside a single given file can be `goto` targets too.
    neighbours: dict[str, Flow] = {}
    for folder in {f.parent for f in given if not f.is_dir()}:
        for sibling in flow_files([folder]):
            if sibling.resolve() in {f.resolve() for f in files}:
                continue
            beside = load_flow(sibling)
            if beside.flow is not None:
                neighbours.setdefault(beside.flow.flow, beside.flow)
    every_flow = {**neighbours, **{k: v.flow for k, v in flows.items() if v.flow is not None}}
    for item in flows.values():
        problems += check_flow(item, checks, every_flow)
    return sorted(set(problems)), flows


def check_flow(item: LoadedFlow, checks: Checks, flows: dict[str, Flow]) -> list[FlowProblem]:
    flow = item.flow
    assert flow is not None
    problems: list[FlowProblem] = []
    ids = set(flow.nodes)

    def at(loc: Loc, message: str, *, key: bool = False) -> None:
        problems.append(item.problem(loc, message, key=key))

    if flow.start not in ids:
        at(("start",), f"start node {flow.start!r} does not exist")

    edges: dict[str, list[str]] = {node_id: [] for node_id in ids}
    for node_id, node in flow.nodes.items():
        for where, target in node_references(node):
            if target not in ids:
                at(("nodes", node_id, *where), f"node {target!r} does not exist")
            else:
                edges[node_id].append(target)
        if isinstance(node, Goto):
            target_flow = flows.get(node.flow)
            if target_flow is None:
                at(("nodes", node_id, "flow"), f"flow {node.flow!r} does not exist")
            elif node.node is not None and node.node not in target_flow.nodes:
                at(("nodes", node_id, "node"), f"node {node.node!r} does not exist in flow {node.flow!r}")
            elif node.flow == flow.flow:
                edges[node_id].append(node.node or flow.start)
        queue_id = node.queue if isinstance(node, Queue | Callback) else None
        if queue_id is not None and checks.queues is not None and queue_id not in checks.queues:
            known = ", ".join(sorted(checks.queues)) or "none"
            at(("nodes", node_id, "queue"), f"queue {queue_id!r} is not in routing.yaml (known: {known})")
        if isinstance(node, Hours) and checks.calendars is not None and node.calendar not in checks.calendars:
            known = ", ".join(sorted(checks.calendars)) or "none"
            at(("nodes", node_id, "calendar"), f"calendar {node.calendar!r} is not in hours.yaml (known: {known})")
        if isinstance(node, Play) and checks.sounds_dir is not None and not _sound_exists(checks.sounds_dir, node.file):
            at(("nodes", node_id, "file"), f"sound {node.file!r} not found in {checks.sounds_dir}")
        if isinstance(node, Menu) and node.speech is not None:
            problems += _speech_problems(item, node_id, node)

    if flow.start in ids:
        reached = _reachable(flow.start, edges)
        for node_id in flow.nodes:
            if node_id not in reached:
                at(("nodes", node_id), f"node {node_id!r} is never reached from start {flow.start!r}", key=True)

    for cycle in _cycles_without_input(flow, edges):
        path = " -> ".join([*cycle, cycle[0]])
        at(("nodes", cycle[0]), f"loop {path} never waits for input and can run forever", key=True)

    problems += _template_problems(item, flow)
    return problems


def _speech_problems(item: LoadedFlow, node_id: str, node: Menu) -> list[FlowProblem]:
    """Each spoken phrase must select one choice only, and must hold words (not just punctuation)."""
    problems: list[FlowProblem] = []
    owner: dict[str, str] = {}
    for key, choice in node.choices.items():
        where: tuple[str | int, ...] = ("nodes", node_id, "choices", key, "say" if choice.say else "label")
        for i, phrase in enumerate(choice.phrases()):
            loc = (*where, i) if choice.say else where
            said = normalize(phrase)
            if not said:
                problems.append(item.problem(loc, f"{phrase!r} has no words a caller could say"))
            elif said in owner and owner[said] != key:
                message = f"{phrase!r} is also said for choice {owner[said]!r}: callers could not be told apart"
                problems.append(item.problem(loc, message))
            else:
                owner[said] = key
    return problems


def _sound_exists(folder: Path, name: str) -> bool:
    """In the folder itself or in one of its language folders (Asterisk's `sounds/en/beep.gsm`)."""
    if ".." in Path(name).parts:
        return False
    places = [folder, *(d for d in folder.iterdir() if d.is_dir())] if folder.is_dir() else [folder]
    return any((place / f"{name}{ext}").is_file() for place in places for ext in SOUND_EXTENSIONS)


def _reachable(start: str, edges: dict[str, list[str]]) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for target in edges[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _cycles_without_input(flow: Flow, edges: dict[str, list[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of nodes that loops without a gather or menu on the way."""
    order = list(flow.nodes)
    keep = {n for n in order if flow.nodes[n].kind not in INPUT_KINDS}
    graph = {n: [t for t in edges[n] if t in keep] for n in order if n in keep}
    cycles: list[list[str]] = []
    for group in _strongly_connected(graph, [n for n in order if n in keep]):
        if len(group) > 1 or group[0] in graph[group[0]]:
            cycles.append(_one_cycle(sorted(group, key=order.index)[0], set(group), graph))
    return sorted(cycles, key=lambda c: order.index(c[0]))


def _strongly_connected(graph: dict[str, list[str]], order: list[str]) -> list[list[str]]:
    # Tarjan's algorithm, iterative so that a long chain of nodes cannot exhaust the stack.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for root in order:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            targets = graph[node]
            if child < len(targets):
                work.append((node, child + 1))
                target = targets[child]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                groups.append(group)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return groups


def _one_cycle(start: str, group: set[str], graph: dict[str, list[str]]) -> list[str]:
    # Breadth-first from start back to start inside the group: the shortest loop, for the message.
    previous: dict[str, str] = {}
    todo = [start]
    while todo:
        nxt: list[str] = []
        for node in todo:
            for target in graph[node]:
                if target not in group:
                    continue
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return list(reversed(path))
                if target not in previous:
                    previous[target] = node
                    nxt.append(target)
        todo = nxt
    return [start]


def _written_names(node: object) -> list[tuple[tuple[str | int, ...], str]]:
    """The variables a node writes, each with its place inside the node."""
    if isinstance(node, Gather | Lookup):
        return [(("into",), node.into)]
    if isinstance(node, SetVars):
        return [(("variables", name), name) for name in node.variables]
    if isinstance(node, Http):
        return [(("map", name), name) for name in node.map]
    return []


def _defined_names(flow: Flow) -> set[str]:
    names = set(BUILTIN_NAMES) | ENGINE_NAMES
    for node in flow.nodes.values():
        if isinstance(node, Gather | Lookup):
            names.add(node.into)
        elif isinstance(node, SetVars):
            names.update(node.variables)
        elif isinstance(node, Http):
            names.update(node.map)
        elif isinstance(node, Consent):
            names.add(CONSENT_VARIABLE)
    return names


def _template_problems(item: LoadedFlow, flow: Flow) -> list[FlowProblem]:
    env = environment()
    names = _defined_names(flow)
    problems: list[FlowProblem] = []
    reads_now: list[Loc] = []
    for node_id, node in flow.nodes.items():
        for where, name in _written_names(node):
            if name in ENGINE_NAMES:
                on_key = where[0] in ("variables", "map")
                problems.append(
                    item.problem(
                        ("nodes", node_id, *where), f"{name!r} is set by Hilo: choose another name", key=on_key
                    )
                )
        for where, text in templates_of(node):
            loc = ("nodes", node_id, *where)
            try:
                parsed = env.parse(text)
            except TemplateSyntaxError as exc:
                line, column = item.positions.of_line_in(loc, exc.lineno or 1)
                problems.append(FlowProblem(str(item.path), line, column, f"template error: {exc.message}"))
                continue
            used = meta.find_undeclared_variables(parsed)
            for name in sorted(used - names):
                problems.append(item.problem(loc, f"template uses unknown variable {name!r}"))
            if "now" in used:
                reads_now.append(loc)
        if isinstance(node, Branch):
            for i, cond in enumerate(node.when):
                root = cond.var.split(".")[0]
                if root not in names:
                    problems.append(item.problem(("nodes", node_id, "when", i, "var"), f"unknown variable {root!r}"))
                if root == "now":
                    reads_now.append(("nodes", node_id, "when", i, "var"))
                if cond.var == "now.time":
                    problems += _time_bounds(item, ("nodes", node_id, "when", i), cond.gte, cond.lt)
        if isinstance(node, Lookup) and node.variable is not None and node.variable.split(".")[0] not in names:
            problems.append(item.problem(("nodes", node_id, "variable"), f"unknown variable {node.variable!r}"))
    if reads_now and flow.timezone is None:
        problems.append(
            item.problem(
                reads_now[0],
                "the flow reads `now` but has no `timezone:`; add one at the top (e.g. `timezone: Europe/Madrid`, "
                "or `timezone: UTC`)",
            )
        )
    return problems


def _time_bounds(item: LoadedFlow, loc: Loc, *bounds: object) -> list[FlowProblem]:
    """`now.time` is text "HH:MM": compared with anything else, the test is always false."""
    problems = []
    for name, bound in zip(("gte", "lt"), bounds, strict=True):
        if bound is not None and not (isinstance(bound, str) and _HH_MM.match(bound)):
            as_time = f"{bound // 60}:{bound % 60:02d}" if isinstance(bound, int) and bound >= 0 else ""
            hint = f" (YAML reads an unquoted {as_time} as the number {bound})" if as_time else ""
            problems.append(
                item.problem((*loc, name), f"now.time is compared as text: write the time quoted as 'HH:MM'{hint}")
            )
    return problems
