"""The fault suite's report (tests/stack/faults.py): lost and duplicated figures fail the test that measured
them, naming the fault and the figure; the session's figures are written as JSON and an HTML page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hilo.settings import REPO_ROOT
from tests.stack.faults import Fault, FaultReport, table, write


def report() -> tuple[FaultReport, list[Fault]]:
    results: list[Fault] = []
    return FaultReport("tests/stack/test_x.py::test_y", results), results


def test_figures_all_zero_pass_and_are_kept_for_the_session() -> None:
    one, results = report()
    one.fault("Redis away 30 s").calls(in_flight=2, kept=2).timeline(9, [])
    one.fault("receiver down").messages(accepted=2, stored=2, duplicated=0)
    one.check()
    assert [(f.name, f.outcome, f.calls_lost, f.messages_lost, f.timeline_lost) for f in results] == [
        ("Redis away 30 s", "passed", 0, None, 0),
        ("receiver down", "passed", None, 0, None),
    ]


@pytest.mark.parametrize(
    ("record", "said"),
    [
        (lambda f: f.calls(in_flight=3, kept=1, cut=1), "fault 'F': calls lost = 1 (in flight 3, kept 1, cut 1)"),
        (lambda f: f.messages(accepted=4, stored=4, duplicated=1), "fault 'F': messages duplicated = 1"),
        (lambda f: f.messages(accepted=4, stored=3, duplicated=0), "fault 'F': messages lost = 1"),
        (lambda f: f.timeline(5, ["agent.answered of x (happened, not stored)"]), "fault 'F': timeline lost = 1"),
        (lambda f: f, "fault 'F': no figure recorded"),
    ],
)
def test_a_lost_or_duplicated_figure_fails_naming_the_fault_and_the_figure(record: object, said: str) -> None:
    one, results = report()
    record(one.fault("F"))  # type: ignore[operator]
    with pytest.raises(AssertionError, match=said.replace("(", r"\(").replace(")", r"\)")):
        one.check()
    assert results[0].outcome == "failed"


def test_a_test_that_records_no_fault_fails() -> None:
    one, _ = report()
    with pytest.raises(AssertionError, match="marked `fault` but recorded no fault"):
        one.check()


def test_figures_are_counts_and_cannot_add_up_to_more_than_was_in_flight() -> None:
    one, _ = report()
    with pytest.raises(ValueError, match="kept"):
        one.fault("F").calls(in_flight=1, kept=-1)
    with pytest.raises(ValueError, match="2 kept \\+ 0 cut of only 1"):
        one.fault("F").calls(in_flight=1, kept=2)


def test_the_session_report_is_a_table_a_json_file_and_a_page(tmp_path: Path) -> None:
    one, results = report()
    one.fault("Asterisk restarted").calls(in_flight=1, kept=0, cut=1).timeline(6, [])
    one.fault("health").nothing_to_count("no call")
    one.check()
    lines = table(results)
    assert lines[0].split()[:4] == ["fault", "calls", "in", "flight"]
    assert lines[1].startswith("Asterisk restarted") and " n/a " in lines[1]
    as_json, as_html = write(results, tmp_path)
    saved = json.loads(as_json.read_text())
    assert saved["all_zero"] is True and saved["tests"] == 1
    first = saved["faults"][0]
    assert (first["calls_in_flight"], first["calls_cut"], first["calls_lost"], first["timeline_lost"]) == (1, 1, 0, 0)
    assert saved["faults"][1]["not_applicable"] == "no call"
    page = as_html.read_text()
    assert "<td title='tests/stack/test_x.py::test_y'>Asterisk restarted</td>" in page
    assert "every lost and duplicated figure is 0" in page


def test_a_session_fails_the_test_that_lost_something_and_reports_every_fault(tmp_path: Path) -> None:
    """The hooks as a stack session runs them (a session of its own, in a directory of its own)."""
    (tmp_path / "test_faults.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.fault
            def test_kept(fault_report):
                fault_report.fault("kept it").calls(in_flight=2, kept=2)

            @pytest.mark.fault
            def test_lost(fault_report):
                fault_report.fault("lost one").calls(in_flight=2, kept=1)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.stack.faults", "-p", "no:cacheprovider", "-o", "markers=fault"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = run.stdout
    assert run.returncode == 1, out
    assert "1 failed, 1 passed" in out
    assert "AssertionError: fault 'lost one': calls lost = 1 (in flight 2, kept 1, cut 0)" in out
    assert "fault report" in out and "kept it" in out
    saved = json.loads((tmp_path / ".run" / "reports" / "faults.json").read_text())
    assert [(f["name"], f["calls_lost"], f["outcome"]) for f in saved["faults"]] == [
        ("kept it", 0, "passed"),
        ("lost one", 1, "failed"),
    ]
    assert saved["all_zero"] is False
