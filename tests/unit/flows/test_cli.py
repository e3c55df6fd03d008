import argparse
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from flows.cli import add_flows_commands, run_flows_command, simulate_command, validate_command
from flows.paths import shown_path
from flows.schema import NODE_KINDS
from hilo.settings import Settings
from tests.paths import DIALPLANS


def settings() -> Settings:
    return Settings(_env_file=None, dialplans_dir=DIALPLANS)  # type: ignore[call-arg]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hilo")
    add_flows_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


async def test_schema_is_json_with_every_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_flows_command(parse(["flows", "schema"]), settings()) == 0
    schema = json.loads(capsys.readouterr().out)
    kinds = {d["properties"]["kind"]["const"] for d in schema["$defs"].values() if "kind" in d.get("properties", {})}
    assert kinds == set(NODE_KINDS)
    assert schema["required"] == ["flow", "start", "nodes"]


def test_validate_default_folder_is_clean() -> None:
    out = io.StringIO()
    assert validate_command([], settings(), out=out) == 0, out.getvalue()


def test_validate_prints_file_line_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("flow: bad\nstart: a\nnodes:\n  a: {kind: queue, queue: billing}\n")
    out = io.StringIO()
    assert validate_command([bad], settings(), out=out) == 1
    assert f"{bad}:4:27: queue 'billing' is not in routing.yaml" in out.getvalue()


async def lookup(kind: str, value: str) -> dict[str, Any] | None:
    return {"id": "c1", "name": "Ana García"} if (kind, value) == ("phone", "+34911222333") else None


async def test_simulate_demo_known_caller_by_label() -> None:
    out = io.StringIO()
    rc = await simulate_command("demo", "+34 911 22 23 33", ["9", "support"], settings(), lookup=lookup, out=out)
    assert rc == 0
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["< Welcome to Hilo.", "< Good to hear from you again, Ana García."]
    assert lines[-1] == "= queue support"


async def test_simulate_json_unknown_caller_gives_up() -> None:
    out = io.StringIO()
    rc = await simulate_command("demo", "600112233", [], settings(), as_json=True, lookup=lookup, out=out)
    assert rc == 0
    doc = json.loads(out.getvalue())
    assert doc["transcript"][0] == {"from": "flow", "text": "Welcome to Hilo."}
    assert doc["outcome"]["action"] == "hangup"
    assert [e["type"] for e in doc["events"]].count("ivr.no_input") == 3


async def test_simulate_without_database_uses_demo_customers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HILO_DATABASE_URL", raising=False)
    out = io.StringIO()
    rc = await simulate_command(str(DIALPLANS / "flows" / "demo.yaml"), "+34911222333", ["1"], settings(), out=out)
    assert rc == 0
    assert out.getvalue().splitlines()[1] == "< Good to hear from you again, Ana García."


async def test_simulate_unknown_flow() -> None:
    out = io.StringIO()
    assert await simulate_command("nope", "100", [], settings(), lookup=lookup, out=out) == 1
    assert "no flow 'nope'" in out.getvalue()


def settings_in(folder: Path) -> Settings:
    return Settings(_env_file=None, dialplans_dir=folder)  # type: ignore[call-arg]


def test_validate_reads_hours_yaml(tmp_path: Path) -> None:
    shutil.copytree(DIALPLANS, tmp_path / "d", ignore=shutil.ignore_patterns("__pycache__"))
    hours = tmp_path / "d" / "hours.yaml"
    hours.write_text(hours.read_text().replace("sat: [09:00-14:00]", "sat: [09:00-14:60]"))
    out = io.StringIO()
    assert validate_command([], settings_in(tmp_path / "d"), out=out) == 1
    shown = shown_path(tmp_path / "d")  # as the CLI names the folder (relative when under the current one)
    assert f"{shown}/hours.yaml:13:13: calendars.support.weekly.sat.0: '14:60' is not a time of day" in out.getvalue()
    hours.write_text("calendars:\n  always: {timezone: UTC, weekly: {mon-sun: [00:00-24:00]}}\n")
    out = io.StringIO()
    assert validate_command([], settings_in(tmp_path / "d"), out=out) == 1
    support = tmp_path / "d" / "flows" / "support.yaml"
    line = next(n for n, text in enumerate(support.read_text().splitlines(), 1) if "calendar: support" in text)
    assert (
        f"{shown}/flows/support.yaml:{line}:15: calendar 'support' is not in hours.yaml (known: always)"
        in out.getvalue()
    )


async def test_schema_of_hours(capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_flows_command(parse(["flows", "schema", "--hours"]), settings()) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "Hilo business hours" and "Calendar" in schema["$defs"]


async def account_lookup(kind: str, value: str) -> dict[str, Any] | None:
    if (kind, value) == ("account", "5555"):
        return {"id": "c9", "name": "Grace"}
    return await lookup(kind, value)


async def birth_date(customer_id: str, field: str, given: str) -> bool:
    return (customer_id, field, given) == ("c9", "birth_date", "09121906")


async def test_simulate_support_open_with_verified_account() -> None:
    out = io.StringIO()
    inputs = ["5555#", "01011990", "09121906"]
    rc = await simulate_command(
        "support",
        "+34911222333",
        inputs,
        settings(),
        lookup=account_lookup,
        verify=birth_date,
        at="2026-11-23T10:00",  # a Monday, in the flow's time zone (Europe/Madrid)
        out=out,
    )
    assert rc == 0, out.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[0] == "< Good morning Ana García, thanks for calling Hilo support."
    assert "> 5555#" in lines and lines.count("> ********") == 2
    assert "< Sorry, that does not match our records." in lines
    assert lines[-2:] == ["< Thank you, Grace. An agent will be with you shortly.", "= queue support"]
    assert "09121906" not in out.getvalue() and "01011990" not in out.getvalue()


async def test_simulate_support_closed_on_a_holiday_as_json() -> None:
    out = io.StringIO()
    rc = await simulate_command(
        "support", "+34600000000", ["1"], settings(), as_json=True, lookup=lookup, at="2026-12-25T18:30+01:00", out=out
    )
    assert rc == 0
    doc = json.loads(out.getvalue())
    assert doc["transcript"][0]["text"] == "Good afternoon, thanks for calling Hilo support."
    hours = next(e for e in doc["events"] if e["type"] == "ivr.hours")
    assert (hours["open"], hours["holiday"]) == (False, "Navidad")
    assert doc["outcome"]["action"] == "voicemail"
    assert doc["outcome"]["variables"]["now"]["date"] == "2026-12-25"


async def test_simulate_rejects_a_bad_moment() -> None:
    out = io.StringIO()
    assert await simulate_command("support", "100", [], settings(), lookup=lookup, at="tomorrow", out=out) == 1
    assert "--at: 'tomorrow' is not a date and time" in out.getvalue()
