from pathlib import Path

import pytest

from ivr.flows.loader import FlowProblem
from ivr.flows.validate import Checks, known_queues, validate_paths

DIALPLANS = Path(__file__).resolve().parents[3] / "dialplans"

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

    from ivr.flows.schema import Play

    with pytest.raises(ValidationError, match="inside Asterisk's sounds folder"):
        Play.model_validate({"kind": "play", "file": "hilo/../../etc/passwd", "text": "t", "next": "a"})
