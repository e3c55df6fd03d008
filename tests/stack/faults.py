"""The fault suite's report: what each fault, run against the real stack, cost.

A fault test is marked `fault` and takes the `fault_report` fixture; for each fault it causes it records the
figures it measured (never constants):

- calls: in flight when the fault struck, kept (still up after it, ended by their callers as usual), cut (ended
  by the fault itself where nothing outside it could keep them: only Asterisk, which carries the media, restarted;
  each such call must be on record as dropped), and lost (in flight, neither kept nor cut);
- messages: accepted, stored (or delivered, for outbound ones) and duplicated; lost is accepted minus stored;
- timeline events: how many facts the test checked in PostgreSQL (every event Hilo published for the fault's
  interactions, and each event the test knows happened) and which of them are not there.

When the test body is over, the lost and duplicated figures must all be 0: a failure names the fault and the
figure (tests/stack/conftest.py's `pytest_runtest_call`). At the end of the session the figures of every fault
are printed as a table and written to `.run/reports/faults.json` and `.run/reports/faults.html`."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

REPORTS = Path(".run") / "reports"  # under the session's root directory (the repository's)

# (column, heading): the figures in the order the table shows them.
COLUMNS = (
    ("calls_in_flight", "calls in flight"),
    ("calls_kept", "kept"),
    ("calls_cut", "cut"),
    ("calls_lost", "lost"),
    ("messages_accepted", "messages accepted"),
    ("messages_stored", "stored"),
    ("messages_duplicated", "duplicated"),
    ("messages_lost", "lost"),
    ("timeline_checked", "timeline events checked"),
    ("timeline_lost", "lost"),
)
MUST_BE_ZERO = ("calls_lost", "messages_lost", "messages_duplicated", "timeline_lost")


def _count(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a count (an int >= 0), not {value!r}")
    return value


@dataclass
class Fault:
    """One fault's figures; None where the test measured nothing of that kind (shown as "n/a")."""

    name: str
    test: str
    calls_in_flight: int | None = None
    calls_kept: int | None = None
    calls_cut: int | None = None
    messages_accepted: int | None = None
    messages_stored: int | None = None
    messages_duplicated: int | None = None
    timeline_checked: int | None = None
    timeline_missing: list[str] = field(default_factory=list)
    not_applicable: str | None = None  # why no figure applies (the fault touches no call, message or event)
    outcome: str = "running"
    duration_s: float | None = None

    def calls(self, *, in_flight: int, kept: int, cut: int = 0) -> Fault:
        self.calls_in_flight, self.calls_kept = _count("in_flight", in_flight), _count("kept", kept)
        self.calls_cut = _count("cut", cut)
        if kept + cut > in_flight:
            raise ValueError(f"fault {self.name!r}: {kept} kept + {cut} cut of only {in_flight} calls in flight")
        return self

    def messages(self, *, accepted: int, stored: int, duplicated: int) -> Fault:
        self.messages_accepted, self.messages_stored = _count("accepted", accepted), _count("stored", stored)
        self.messages_duplicated = _count("duplicated", duplicated)
        return self

    def timeline(self, checked: int, missing: Iterable[str]) -> Fault:
        self.timeline_checked, self.timeline_missing = _count("checked", checked), list(missing)
        return self

    def nothing_to_count(self, why: str) -> Fault:
        self.not_applicable = why
        return self

    @property
    def calls_lost(self) -> int | None:
        if self.calls_in_flight is None or self.calls_kept is None:
            return None
        return self.calls_in_flight - self.calls_kept - (self.calls_cut or 0)

    @property
    def messages_lost(self) -> int | None:
        if self.messages_accepted is None or self.messages_stored is None:
            return None
        return max(self.messages_accepted - self.messages_stored, 0)

    @property
    def timeline_lost(self) -> int | None:
        return None if self.timeline_checked is None else len(self.timeline_missing)

    def measured(self) -> bool:
        return any(getattr(self, column) is not None for column, _ in COLUMNS)

    def figures(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("timeline_missing",)}
        out.update(
            calls_lost=self.calls_lost,
            messages_lost=self.messages_lost,
            timeline_lost=self.timeline_lost,
            timeline_missing=self.timeline_missing,
        )
        return out

    def failures(self) -> list[str]:
        said = []
        for column in MUST_BE_ZERO:
            value = getattr(self, column)
            if value:
                said.append(f"fault {self.name!r}: {column.replace('_', ' ')} = {value} ({self._detail(column)})")
        return said

    def _detail(self, column: str) -> str:
        if column == "calls_lost":
            return f"in flight {self.calls_in_flight}, kept {self.calls_kept}, cut {self.calls_cut}"
        if column.startswith("messages"):
            return (
                f"accepted {self.messages_accepted}, stored {self.messages_stored},"
                f" duplicated {self.messages_duplicated}"
            )
        return f"of {self.timeline_checked} checked: {self.timeline_missing[:10]}"


# Every fault of the session, in the order the tests ran.
RESULTS: list[Fault] = []


class FaultReport:
    """A test's faults (`fault_report.fault("Redis away 30 s").calls(in_flight=2, kept=2)`)."""

    def __init__(self, test: str, results: list[Fault] = RESULTS) -> None:
        self.test, self.results = test, results
        self.faults: dict[str, Fault] = {}
        self.began = time.monotonic()

    def fault(self, name: str) -> Fault:
        if name not in self.faults:
            self.faults[name] = Fault(name, self.test)
            self.results.append(self.faults[name])
        return self.faults[name]

    def finish(self, outcome: str) -> None:
        for one in self.faults.values():
            one.outcome, one.duration_s = outcome, round(time.monotonic() - self.began, 1)

    def check(self) -> None:
        """At the end of a test body that passed: every lost and duplicated figure is 0, and every fault
        says something (figures, or why none applies)."""
        problems = [] if self.faults else [f"{self.test} is marked `fault` but recorded no fault"]
        for one in self.faults.values():
            if not one.measured() and one.not_applicable is None:
                problems.append(f"fault {one.name!r}: no figure recorded (nor why none applies)")
            problems += one.failures()
        self.finish("failed" if problems else "passed")
        if problems:
            raise AssertionError("; ".join(problems))


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> FaultReport:
    return FaultReport(request.node.nodeid)


def record_figures(report: FaultReport, name: str, found: Mapping[str, int]) -> Fault:
    """Records the figures of `tests/stack/outages.py`'s `figures()` (a test that counts its own) as one fault."""
    fault = report.fault(name)
    fault.calls(in_flight=found["calls_in_flight"], kept=found["calls_kept"])
    fault.messages(
        accepted=found["messages_accepted"],
        stored=found["messages_stored"],
        duplicated=found["messages_duplicated"],
    )
    lost = found["timeline_events_lost"]
    fault.timeline(found["timeline_events_checked"], [f"expected event {i + 1} of {lost} missing" for i in range(lost)])
    return fault


# Measuring -----------------------------------------------------------------------------------------------


async def timeline_missing(
    pool: asyncpg.Pool, published: Iterable[dict[str, Any]], required: Mapping[str, Iterable[str]]
) -> tuple[int, list[str]]:
    """What the calls produced against what is stored, for the interactions in `required`: every event Hilo
    `published` for them (e.g. its feed since the test began: an event is published once written, so its row
    id must still be there), and, for each interaction, the event types the test knows happened (`a|b`:
    either), published or not (an outage may have kept them off the feed). Returns how many facts were checked
    and a line for each that is not in timeline_events."""
    ids = list(required)
    seen = {e["id"]: e for e in published if e.get("interaction_id") in required and isinstance(e.get("id"), int)}
    rows = await pool.fetch(
        "SELECT id, interaction_id::text AS interaction, type FROM timeline_events"
        " WHERE interaction_id = ANY($1::uuid[])",
        ids,
    )
    stored_ids = {r["id"] for r in rows}
    stored_types: dict[str, set[str]] = {i: set() for i in ids}
    for r in rows:
        stored_types[r["interaction"]].add(r["type"])
    published_types: dict[str, set[str]] = {i: set() for i in ids}
    for e in seen.values():
        published_types[e["interaction_id"]].add(e["type"])
    missing = [
        f"{e['type']} #{row_id} of {e['interaction_id']} (published, not stored)"
        for row_id, e in seen.items()
        if row_id not in stored_ids
    ]
    checked = len(seen)
    for interaction, types in required.items():
        for spec in types:
            either = set(spec.split("|"))
            if not either & published_types[interaction]:
                checked += 1  # not already counted as a published event
            if not either & stored_types[interaction]:
                missing.append(f"{spec} of {interaction} (happened, not stored)")
    return checked, missing


async def calls_up_during(pool: asyncpg.Pool, began: datetime, ended: datetime) -> list[str]:
    """The voice interactions (the test's own: each test starts with none) up at some moment between `began`
    and `ended`: the calls in flight during a fault, as the store has them."""
    rows = await pool.fetch(
        "SELECT id::text AS id FROM interactions WHERE channel = 'voice' AND started_at <= $2"
        " AND (ended_at IS NULL OR ended_at >= $1) ORDER BY started_at",
        began,
        ended,
    )
    return [r["id"] for r in rows]


async def outcomes(pool: asyncpg.Pool, interactions: Iterable[str]) -> dict[str, tuple[str | None, str | None]]:
    """Each interaction's (outcome, hangup_by) as stored; (None, None) while it is open."""
    rows = await pool.fetch(
        "SELECT id::text AS id, outcome, hangup_by FROM interactions WHERE id = ANY($1::uuid[])", list(interactions)
    )
    return {r["id"]: (r["outcome"], r["hangup_by"]) for r in rows}


async def kept_by_callers(pool: asyncpg.Pool, interactions: Iterable[str]) -> int:
    """How many of the interactions ended as their callers ended them (completed or abandoned by the caller):
    the calls a fault did not take."""
    return sum(
        hangup_by == "caller" and outcome in ("completed", "abandoned")
        for outcome, hangup_by in (await outcomes(pool, interactions)).values()
    )


# Reporting ------------------------------------------------------------------------------------------------


def _cell(one: Fault, column: str) -> str:
    value = getattr(one, column)
    return "n/a" if value is None else str(value)


def table(results: list[Fault]) -> list[str]:
    headings = ["fault", *(h for _, h in COLUMNS), "outcome", "s"]
    rows = [
        [one.name, *(_cell(one, c) for c, _ in COLUMNS), one.outcome, f"{one.duration_s or 0:.0f}"] for one in results
    ]
    widths = [max(len(str(r[i])) for r in [headings, *rows]) for i in range(len(headings))]
    line = "  ".join
    out = [line(h.ljust(w) for h, w in zip(headings, widths, strict=True))]
    out += [line(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return out


def write(results: list[Fault], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    tests = {one.test: one.duration_s or 0.0 for one in results}
    summary = {
        "faults": [one.figures() for one in results],
        "tests": len(tests),
        "seconds": round(sum(tests.values()), 1),
        "all_zero": all(not one.failures() for one in results),
    }
    as_json = directory / "faults.json"
    as_json.write_text(json.dumps(summary, indent=2) + "\n")
    as_html = directory / "faults.html"
    as_html.write_text(_page(results, summary))
    return as_json, as_html


def _page(results: list[Fault], summary: dict[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["fault", *(h for _, h in COLUMNS), "outcome", "s"])
    body = []
    for one in results:
        cells = [f"<td title='{html.escape(one.test)}'>{html.escape(one.name)}</td>"]
        for column, _ in COLUMNS:
            bad = column in MUST_BE_ZERO and getattr(one, column)
            cells.append(f"<td class='{'bad' if bad else ''}'>{_cell(one, column)}</td>")
        cells.append(f"<td class='{'' if one.outcome == 'passed' else 'bad'}'>{html.escape(one.outcome)}</td>")
        cells.append(f"<td>{one.duration_s or 0:.0f}</td>")
        note = one.not_applicable or "; ".join(one.timeline_missing[:5])
        if note:
            cells.append(f"<td class='note'>{html.escape(note)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    verdict = "every lost and duplicated figure is 0" if summary["all_zero"] else "SOME FIGURES ARE NOT 0"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Hilo fault suite</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
td:first-child, th:first-child, td.note {{ text-align: left; }}
td.note {{ color: #555; border: none; }}
.bad {{ background: #fdd; font-weight: bold; }}
</style></head><body>
<h1>Hilo fault suite</h1>
<p>{len(results)} faults in {summary["tests"]} tests, {summary["seconds"]} s of test time: {verdict}.
"Cut": calls the fault itself ended (Asterisk restarted), each on record as dropped. n/a: not measured by
that fault.</p>
<table><tr>{head}</tr>
{"".join(body)}
</table></body></html>
"""


# The hooks (tests/stack/conftest.py takes them from here) ---------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> object:
    """A fault test's figures are checked once its body is over: a lost or duplicated figure fails it."""
    report = getattr(item, "funcargs", {}).get("fault_report")
    try:
        result = yield
    except BaseException:
        if isinstance(report, FaultReport):
            report.finish("failed")
        raise
    if isinstance(report, FaultReport):
        report.check()
    return result


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The session's report on the terminal, and its files."""
    terminal = terminalreporter
    if not RESULTS:
        return
    terminal.write_sep("=", "fault report")
    for row in table(RESULTS):
        terminal.write_line(row)
    for one in RESULTS:
        if one.not_applicable:
            terminal.write_line(f"n/a {one.name}: {one.not_applicable}")
    as_json, as_html = write(RESULTS, terminal.config.rootpath / REPORTS)
    tests = {one.test: one.duration_s or 0.0 for one in RESULTS}
    terminal.write_line(f"{len(tests)} fault tests, {sum(tests.values()):.0f} s; report: {as_json}, {as_html}")
