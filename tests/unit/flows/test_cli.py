import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest

from hilo.settings import Settings
from ivr.flows.cli import add_flows_commands, run_flows_command, simulate_command, validate_command
from ivr.flows.schema import NODE_KINDS

DIALPLANS = Path(__file__).resolve().parents[3] / "dialplans"


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
    assert lines[0] == "< Welcome back to Hilo, Ana García."
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
    assert out.getvalue().splitlines()[0] == "< Welcome back to Hilo, Ana García."


async def test_simulate_unknown_flow() -> None:
    out = io.StringIO()
    assert await simulate_command("nope", "100", [], settings(), lookup=lookup, out=out) == 1
    assert "no flow 'nope'" in out.getvalue()
