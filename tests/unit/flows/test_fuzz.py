"""Whatever an admin (or a cat on the keyboard) writes, validation answers with problems, never a traceback."""

import datetime as dt
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.hours import load_calendars
from flows.loader import FlowProblem, load_flow_text
from flows.validate import Checks, validate_paths
from tests.paths import DIALPLANS

FLOWS = DIALPLANS / "flows"
DEMO_LINES = (FLOWS / "demo.yaml").read_text().splitlines()
SUPPORT_LINES = (FLOWS / "support.yaml").read_text().splitlines()
HOURS_LINES = (FLOWS.parent / "hours.yaml").read_text().splitlines()
YAML_CHARS = st.sampled_from(list(":-{}[],'\"#&*!|>%@` \t\n") + list("abc0129_"))


@st.composite
def mutated_flow(draw: st.DrawFn, sources: tuple[list[str], ...] = (DEMO_LINES, SUPPORT_LINES)) -> str:
    lines = list(draw(st.sampled_from(sources)))
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "insert_chars", "swap", "dedent", "replace_word"]))
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "insert_chars":
            at = draw(st.integers(0, len(lines[i])))
            chars = draw(st.text(YAML_CHARS | st.characters(), min_size=1, max_size=5))
            lines[i] = lines[i][:at] + chars + lines[i][at:]
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "dedent":
            lines[i] = lines[i][2:]
        elif op == "replace_word" and ":" in lines[i]:
            key = lines[i].split(":", 1)[0]
            values = ["", "[]", "{}", "null", "7", "main_menu", "x y", "'{{'", "25:00", "[22:00-02:00]", "2026-02-30"]
            lines[i] = key + ": " + draw(st.sampled_from(values))
    return "\n".join(lines) + "\n"


def check(tmp_path: Path, text: str) -> None:
    loaded = load_flow_text(text, tmp_path / "f.yaml")
    assert all(isinstance(p, FlowProblem) for p in loaded.problems)
    path = tmp_path / "f.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    checks = Checks(queues=frozenset({"sales", "support"}), sounds_dir=tmp_path, calendars=frozenset({"support"}))
    found = validate_paths([path], checks)
    assert all(isinstance(p, FlowProblem) and p.line >= 1 and p.column >= 1 for p in found)


def check_hours(text: str) -> None:
    calendars, found = load_calendars(text, "hours.yaml")
    assert all(isinstance(p, FlowProblem) and p.line >= 1 and p.column >= 1 for p in found)
    assert (calendars is None) == bool(found)
    if calendars is not None:
        moment = dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.UTC)
        for calendar_id in calendars.ids():
            assert calendars.is_open(calendar_id, moment) in (True, False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutated_flow())
def test_mutated_flows_never_raise(tmp_path: Path, text: str) -> None:
    check(tmp_path, text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(YAML_CHARS | st.characters(), max_size=300))
def test_random_text_never_raises(tmp_path: Path, text: str) -> None:
    check(tmp_path, text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    )
)
def test_random_structures_never_raise(tmp_path: Path, data: object) -> None:
    import yaml

    check(tmp_path, yaml.safe_dump({"flow": "t", "start": "a", "nodes": data}))


def test_deep_nesting_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    check(tmp_path, "[" * 5000 + "]" * 5000)


@settings(max_examples=300, deadline=None)
@given(text=mutated_flow((HOURS_LINES,)))
def test_mutated_hours_never_raise(text: str) -> None:
    check_hours(text)


@settings(max_examples=200, deadline=None)
@given(text=st.text(YAML_CHARS | st.characters(), max_size=300))
def test_random_hours_text_never_raises(text: str) -> None:
    check_hours(text)


HOURS_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=12)
    | st.sampled_from(
        ["UTC", "Europe/Madrid", "mon-fri", "fri-mon", "09:00-14:00", "22:00-02:00", "00:00-24:00", "2026-12-25"]
    )
)


@settings(max_examples=200, deadline=None)
@given(
    data=st.recursive(
        HOURS_LEAVES,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(["timezone", "weekly", "holidays", "date", "hours", "mon", "x"]), inner)
        ),
        max_leaves=20,
    )
)
def test_random_hours_structures_never_raise(data: object) -> None:
    import yaml

    check_hours(yaml.safe_dump({"calendars": {"c": data}}))


def test_deeply_nested_hours_are_a_problem_not_a_crash() -> None:
    check_hours("[" * 5000 + "]" * 5000)
