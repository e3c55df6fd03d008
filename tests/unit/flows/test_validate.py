import time
from pathlib import Path

import pytest

from flows.hours import load_calendars
from flows.loader import FlowProblem, load_flow_text
from flows.validate import Checks, known_calendars, known_queues, validate_paths
from tests.paths import SHIPPED_DIALPLANS

DIALPLANS = SHIPPED_DIALPLANS  # these tests are of the shipped files themselves

HEAD = "flow: t\nstart: a\nnodes:\n"


def problems(tmp_path: Path, text: str, checks: Checks | None = None, name: str = "t.yaml") -> list[str]:
    path = tmp_path / name
    path.write_text(text)
    return [f"{p.line}:{p.column}: {p.message}" for p in validate_paths([path], checks)]


def test_shipped_flows_are_valid() -> None:
    queues, routing_problems = known_queues(DIALPLANS)
    assert routing_problems == []
    assert validate_paths([DIALPLANS / "flows"], Checks(queues=queues)) == []


def test_problem_prints_file_line_column() -> None:
    assert str(FlowProblem("f.yaml", 3, 7, "bad")) == "f.yaml:3:7: bad"


def test_yaml_syntax_error(tmp_path: Path) -> None:
    found = problems(tmp_path, HEAD + "  a: {kind: hangup\n  b: x\n")
    assert len(found) == 1 and found[0].startswith("5:4: invalid YAML"), found


def test_schema_errors_point_at_the_field(tmp_path: Path) -> None:
    text = HEAD + (
        "  a:\n"  # 4
        "    kind: say\n"  # 5
        "    text: hi\n"  # 6
        "    next: b\n"  # 7
        "    colour: red\n"  # 8
        "  b:\n"  # 9
        "    kind: gather\n"  # 10
        "    into: 1x\n"  # 11
        "    next: c\n"  # 12
        "    no_input: c\n"  # 13
        "  c: {kind: teleport}\n"  # 14
        "  d: {kind: play, file: x, next: c}\n"  # 15
        "  e: {kind: menu, prompt: p, choices: {'1': {label: a, next: c}}, no_match: n, no_input: n}\n"  # 16
    )
    found = problems(tmp_path, text)
    assert "8:5: nodes.a.colour: Extra inputs are not permitted" in found
    assert any(f.startswith("11:11: nodes.b.into: String should match pattern") for f in found), found
    assert any(f.startswith("14:13: nodes.c.kind: Input tag 'teleport'") for f in found), found
    assert "15:6: nodes.d: play needs `text`: what text channels send instead of the audio file" in found
    assert "16:6: nodes.e: menu needs `fallback`: the node to go to when no valid choice was made" in found


def test_duplicate_keys(tmp_path: Path) -> None:
    text = HEAD + "  a: {kind: hangup}\n  a: {kind: hangup, text: bye}\n"
    assert "5:3: duplicate key 'a' (first at line 4)" in problems(tmp_path, text)


def test_missing_node_references(tmp_path: Path) -> None:
    text = (
        "flow: t\nstart: nowhere\nnodes:\n"
        "  a:\n"  # 4
        "    kind: branch\n"  # 5
        "    when:\n"  # 6
        "      - {var: caller.number, exists: true, next: ghost}\n"  # 7
        "    otherwise: a2\n"  # 8
    )
    found = problems(tmp_path, text)
    assert "2:8: start node 'nowhere' does not exist" in found
    assert "7:50: node 'ghost' does not exist" in found
    assert "8:16: node 'a2' does not exist" in found


def test_a_queue_nodes_on_closed_is_a_node_of_the_flow(tmp_path: Path) -> None:
    text = HEAD + "  a: {kind: queue, queue: support, on_closed: shut}\n  later: {kind: hangup}\n"  # 4, 5
    found = problems(tmp_path, text)
    assert any(f.startswith("4:") and "node 'shut' does not exist" in f for f in found), found
    reached = HEAD + "  a: {kind: queue, queue: support, on_closed: later}\n  later: {kind: hangup}\n"
    assert problems(tmp_path, reached) == []  # `later` is reached through on_closed only


def test_unreachable_nodes(tmp_path: Path) -> None:
    text = HEAD + "  a: {kind: hangup}\n  lost:\n    kind: hangup\n"
    assert problems(tmp_path, text) == ["5:3: node 'lost' is never reached from start 'a'"]


def test_loop_without_input(tmp_path: Path) -> None:
    text = HEAD + (
        "  a: {kind: say, text: hi, next: b}\n"  # 4
        "  b: {kind: set, variables: {x: '1'}, next: c}\n"  # 5
        "  c: {kind: branch, when: [{var: x, equals: '1', next: a}], otherwise: m}\n"  # 6
        "  m: {kind: menu, prompt: p, choices: {'1': {label: x, next: m}}, no_match: n, no_input: n, fallback: a}\n"
    )
    assert problems(tmp_path, text) == ["4:3: loop a -> b -> c -> a never waits for input and can run forever"]


def test_loop_through_a_menu_is_fine(tmp_path: Path) -> None:
    text = HEAD + (
        "  a: {kind: say, text: hi, next: m}\n"
        "  m: {kind: menu, prompt: p, choices: {'1': {label: x, next: a}}, no_match: n, no_input: n, fallback: z}\n"
        "  z: {kind: hangup}\n"
    )
    assert problems(tmp_path, text) == []


def test_self_loop(tmp_path: Path) -> None:
    text = HEAD + "  a: {kind: say, text: hi, next: a}\n"
    assert problems(tmp_path, text) == ["4:3: loop a -> a never waits for input and can run forever"]


def test_template_errors(tmp_path: Path) -> None:
    text = HEAD + (
        "  a: {kind: say, text: 'Hi {{ customer.name ', next: b}\n"  # 4
        "  b: {kind: say, text: 'Hi {{ who }}', next: c}\n"  # 5
        "  c:\n"  # 6
        "    kind: branch\n"  # 7
        "    when: [{var: tier, equals: gold, next: d}]\n"  # 8
        "    otherwise: d\n"  # 9
        "  d: {kind: hangup, text: '{{ customer.name | upper }}'}\n"  # 10
    )
    found = problems(tmp_path, text)
    assert len(found) == 3, found
    assert found[0].startswith("4:24: template error: unexpected end of template"), found
    assert found[1:] == ["5:24: template uses unknown variable 'who'", "8:18: unknown variable 'tier'"]


def test_multiline_template_error_line(tmp_path: Path) -> None:
    text = HEAD + "  a:\n    kind: hangup\n    text: |\n      Hello.\n      {{ 1 + }}\n      Bye.\n"
    found = problems(tmp_path, text)
    assert any(f.startswith("8:7: template") for f in found), found


def test_unknown_queue(tmp_path: Path) -> None:
    text = HEAD + "  a:\n    kind: queue\n    queue: billing\n"
    found = problems(tmp_path, text, Checks(queues=frozenset({"sales", "support"})))
    assert found == ["6:12: queue 'billing' is not in routing.yaml (known: sales, support)"]


def test_missing_sound_file(tmp_path: Path) -> None:
    sounds = tmp_path / "sounds"
    (sounds / "hilo").mkdir(parents=True)
    (sounds / "hilo" / "welcome.wav").write_bytes(b"")
    text = HEAD + (
        "  a: {kind: play, file: hilo/welcome, text: Welcome, next: b}\n"
        "  b: {kind: play, file: hilo/missing, text: Sorry, next: c}\n"
        "  c: {kind: hangup}\n"
    )
    assert problems(tmp_path, text, Checks(sounds_dir=sounds)) == [f"5:25: sound 'hilo/missing' not found in {sounds}"]


def test_goto_unknown_flow_or_node(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text("flow: other\nstart: x\nnodes:\n  x: {kind: hangup}\n")
    text = HEAD + (
        "  a: {kind: hours, calendar: main, open: b, closed: c}\n"
        "  b: {kind: goto, flow: other, node: y}\n"  # 5
        "  c: {kind: goto, flow: elsewhere}\n"  # 6
    )
    found = problems(tmp_path, text)
    assert found == ["5:38: node 'y' does not exist in flow 'other'", "6:25: flow 'elsewhere' does not exist"]
    # When validating the folder, every flow in it counts.
    assert [str(p).split(": ", 1)[1] for p in validate_paths([tmp_path])] == [
        "node 'y' does not exist in flow 'other'",
        "flow 'elsewhere' does not exist",
    ]


def test_same_flow_id_twice(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(HEAD + "  a: {kind: hangup}\n")
    (tmp_path / "b.yaml").write_text(HEAD + "  a: {kind: hangup}\n")
    found = validate_paths([tmp_path])
    assert [(Path(p.file).name, p.line, p.column) for p in found] == [("b.yaml", 1, 7)]
    assert "also defined in" in found[0].message


@pytest.mark.parametrize("text", ["", "just text", "- a\n- b\n", "flow: [", "\x00", "flow: t\nnodes: {}\n"])
def test_odd_files_give_problems(tmp_path: Path, text: str) -> None:
    assert problems(tmp_path, text)


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    found = validate_paths([tmp_path / "bin.yaml", tmp_path / "absent.yaml"])
    assert len(found) == 2 and all(p.line == 1 for p in found)


def test_play_file_cannot_leave_the_sounds_folder() -> None:
    from pydantic import ValidationError

    from flows.schema import Play

    with pytest.raises(ValidationError, match="inside Asterisk's sounds folder"):
        Play.model_validate({"kind": "play", "file": "hilo/../../etc/passwd", "text": "t", "next": "a"})


def test_unknown_calendar(tmp_path: Path) -> None:
    text = HEAD + "  a:\n    kind: hours\n    calendar: night\n    open: b\n    closed: b\n  b: {kind: hangup}\n"
    found = problems(tmp_path, text, Checks(calendars=frozenset({"always", "support"})))
    assert found == ["6:15: calendar 'night' is not in hours.yaml (known: always, support)"]
    assert problems(tmp_path, text, Checks(calendars=frozenset())) == [
        "6:15: calendar 'night' is not in hours.yaml (known: none)"
    ]


def test_known_calendars_reads_hours_yaml(tmp_path: Path) -> None:
    calendars, found = known_calendars(DIALPLANS)
    assert found == [] and calendars is not None and {"support", "always"} <= calendars
    assert known_calendars(tmp_path) == (frozenset(), [])  # no hours.yaml: no calendars
    (tmp_path / "hours.yaml").write_text("calendars:\n  a: {timezone: Nowhere}\n")
    calendars, found = known_calendars(tmp_path)
    assert calendars is None and [(p.line, p.column) for p in found] == [(2, 17)]


def test_now_needs_a_flow_time_zone(tmp_path: Path) -> None:
    text = HEAD + (
        "  a: {kind: say, text: 'It is {{ now.time }}', next: b}\n"  # 4
        "  b: {kind: branch, when: [{var: now.hour, lt: 12, next: c}], otherwise: c}\n"  # 5
        "  c: {kind: hangup}\n"
    )
    assert problems(tmp_path, text) == [
        "4:24: the flow reads `now` but has no `timezone:`; add one at the top (e.g. `timezone: Europe/Madrid`, "
        "or `timezone: UTC`)"
    ]
    assert problems(tmp_path, "timezone: Europe/Madrid\n" + text) == []
    found = problems(tmp_path, "timezone: Madrid\n" + text)
    assert found == [
        "1:11: timezone: unknown time zone 'Madrid': use an IANA name such as Europe/Madrid, America/Bogota or UTC"
    ]


def test_now_time_is_compared_with_quoted_times(tmp_path: Path) -> None:
    text = (
        "timezone: UTC\n"
        + HEAD
        + (
            "  a:\n"  # 5
            "    kind: branch\n"  # 6
            "    when:\n"  # 7
            "      - {var: now.time, gte: 14:00, next: b}\n"  # 8
            "      - {var: now.time, gte: '9:00', lt: '18:00', next: b}\n"  # 9
            "      - {var: now.time, lt: '18:00', next: b}\n"  # 10
            "    otherwise: b\n"
            "  b: {kind: hangup}\n"
        )
    )
    assert problems(tmp_path, text) == [
        "8:30: now.time is compared as text: write the time quoted as 'HH:MM' (YAML reads an unquoted 14:00 as the "
        "number 840)",
        "9:30: now.time is compared as text: write the time quoted as 'HH:MM'",
    ]


def test_variables_set_by_hilo_cannot_be_written(tmp_path: Path) -> None:
    text = HEAD + (
        "  a: {kind: set, variables: {now: x, caller: y, fine: z}, next: b}\n"  # 4
        "  b: {kind: gather, into: now, next: c, no_input: c}\n"  # 5
        "  c: {kind: hangup}\n"
    )
    assert problems(tmp_path, text) == [
        "4:30: 'now' is set by Hilo: choose another name",
        "4:38: 'caller' is set by Hilo: choose another name",
        "5:27: 'now' is set by Hilo: choose another name",
    ]


def test_conditions_in_the_file(tmp_path: Path) -> None:
    text = HEAD + (
        "  a:\n"  # 4
        "    kind: branch\n"  # 5
        "    when:\n"  # 6
        "      - {var: caller.number, equals: x, lt: 3, next: b}\n"  # 7
        "      - {var: caller.number, gte: 1, lt: z, next: b}\n"  # 8
        "    otherwise: b\n"
        "  b: {kind: hangup}\n"
    )
    assert problems(tmp_path, text) == [
        "7:9: nodes.a.when.0: Value error, a condition needs exactly one of equals, not_equals, in, exists, or gte/lt "
        "(got equals, lt)",
        "8:9: nodes.a.when.1: Value error, gte (1) and lt ('z') must both be numbers or both be texts",
    ]


def test_lookup_with_verify(tmp_path: Path) -> None:
    text = HEAD + (
        "  a:\n"  # 4
        "    kind: lookup\n"  # 5
        "    verify:\n"  # 6
        "      prompt: 'Your PIN, {{ customer.name }}'\n"  # 7
        "      field: pin\n"  # 8
        "      verified: ok\n"  # 9
        "      not_verified: ghost\n"  # 10
        "      retry: '{{ oops }}'\n"  # 11
        "    not_found: ok\n"  # 12
        "  ok: {kind: hangup, text: '{{ customer.verified }}'}\n"  # 13
    )
    assert problems(tmp_path, text) == [
        "10:21: node 'ghost' does not exist",
        "11:14: template uses unknown variable 'oops'",
    ]
    both = text.replace("    not_found: ok\n", "    found: ok\n    not_found: ok\n")
    assert problems(tmp_path, both) == [
        "5:5: nodes.a: Value error, with `verify`, a found customer goes to verify.verified or verify.not_verified: "
        "remove `found`"
    ]
    neither = HEAD + "  a: {kind: lookup, not_found: b}\n  b: {kind: hangup}\n"
    assert problems(tmp_path, neither) == [
        "4:6: nodes.a: Value error, lookup needs `found`: the node to go to when the customer is found"
    ]
    sizes = text.replace("      field: pin\n", "      field: pin\n      min_digits: 9\n")
    assert (
        problems(tmp_path, sizes)[0] == "7:7: nodes.a.verify: Value error, min_digits (9) is more than max_digits (8)"
    )


def laughs(levels: int) -> str:
    """An http node whose `json` is ten aliases of ten aliases of ... (`levels` deep): a few hundred bytes."""
    lines = ["    json:", '      a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, levels + 1):
        refs = ", ".join([f"*a{n - 1}"] * 10)
        lines.append(f"      a{n}: &a{n} [{refs}]")
    return "\n".join(lines) + "\n"


def test_yaml_aliases_are_refused_before_anything_expands_them(tmp_path: Path) -> None:
    text = HEAD + (
        "  a:\n"  # 4
        "    kind: http\n"  # 5
        "    url: https://crm.example/x\n"  # 6
        "    next: b\n"  # 7
        "    on_error: b\n"  # 8
        + laughs(5)  # 9: json, 10: the first anchor; 100,000 strings once expanded (9 levels: a billion)
        + "  b: {kind: hangup}\n"
    )
    assert len(text) < 1000
    started = time.monotonic()
    found = problems(tmp_path, text)
    assert time.monotonic() - started < 2
    assert found == ["10:11: invalid YAML: YAML anchors (&a0) are not allowed here"], found


def test_a_merge_key_alias_is_refused_at_its_line(tmp_path: Path) -> None:
    loaded = load_flow_text(HEAD + "  a: {kind: hangup}\n  b:\n    <<: *base\n", tmp_path / "t.yaml")
    assert [str(p) for p in loaded.problems] == [
        f"{tmp_path / 't.yaml'}:6:9: invalid YAML: YAML aliases (*base) are not allowed here"
    ]


def test_hours_files_refuse_aliases_too() -> None:
    text = "calendars:\n  support: &s\n    timezone: Europe/Madrid\n  other: *s\n"
    calendars, found = load_calendars(text, "hours.yaml")
    assert calendars is None
    assert [str(p) for p in found] == ["hours.yaml:2:12: invalid YAML: YAML anchors (&s) are not allowed here"]
