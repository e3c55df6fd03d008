"""`hilo flows validate|schema|simulate`: check flow files, print their JSON Schema, run a flow as a text chat."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from crm_bridge.phones import InvalidPhoneNumber, to_e164
from flows.bundle import BundleError, FlowBundle, check_bundle
from flows.engine import FlowContext, FlowServices, LookupCustomer, Outcome, VerifyCustomer, run_flow
from flows.hours import Calendars, hours_json_schema, load_calendars_file
from flows.loader import FlowProblem, load_flow
from flows.paths import shown_path
from flows.schema import Flow, json_schema
from flows.text_session import TextSession
from flows.validate import Checks, flow_files, known_calendars, known_queues, load_and_validate
from flows.versions_cli import add_version_commands, run_version_command
from hilo.settings import Settings


def add_flows_commands(subparsers: Any) -> None:
    """Add `flows` and its subcommands to the `hilo` parser's subparsers."""
    flows = subparsers.add_parser("flows", help="IVR flow files: validate, schema, simulate, apply, history, rollback")
    sub = flows.add_subparsers(dest="flows_command", required=True)
    validate = sub.add_parser("validate", help="check flow files; prints file:line:column: problem")
    validate.add_argument("paths", nargs="*", type=Path, help="flow files or folders (default: dialplans/flows)")
    validate.add_argument("--sounds", type=Path, default=None, help="folder `play` files must exist in")
    schema = sub.add_parser("schema", help="print the JSON Schema of a flow file (or of hours.yaml)")
    schema.add_argument("--hours", action="store_true", help="the schema of dialplans/hours.yaml instead")
    simulate = sub.add_parser("simulate", help="run a flow as a text conversation with scripted answers")
    simulate.add_argument("flow", help="flow id (from dialplans/flows) or path of a flow file")
    simulate.add_argument("--from", dest="caller", required=True, help="the caller's number")
    simulate.add_argument("--input", dest="inputs", action="append", default=[], help="one answer (repeatable)")
    simulate.add_argument("--json", action="store_true", help="print one JSON document instead of a transcript")
    simulate.add_argument("--max-steps", type=int, default=200, help="stop a flow after this many steps")
    simulate.add_argument(
        "--at", default=None, help="the moment the flow sees, e.g. 2026-12-25T10:00 (flow's time zone) or with +01:00"
    )
    add_version_commands(sub)


async def run_flows_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.flows_command == "validate":
        return validate_command(args.paths, settings, sounds_dir=args.sounds)
    if args.flows_command == "schema":
        print(json.dumps(hours_json_schema() if args.hours else json_schema(), indent=2, ensure_ascii=False))
        return 0
    if args.flows_command == "simulate":
        return await simulate_command(
            args.flow, args.caller, args.inputs, settings, as_json=args.json, max_steps=args.max_steps, at=args.at
        )
    if args.flows_command in ("apply", "history", "rollback"):
        return await run_version_command(args, settings)
    print(f"unknown flows command {args.flows_command}", file=sys.stderr)
    return 2


def validate_command(
    paths: list[Path], settings: Settings, *, sounds_dir: Path | None = None, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    queues, problems = known_queues(settings.dialplans_dir)
    calendars, hours_problems = known_calendars(settings.dialplans_dir)
    problems += hours_problems
    checks = Checks(queues, sounds_dir, calendars)
    if paths:
        found, _ = load_and_validate(paths, checks)
    else:  # the whole working copy, as `hilo flows apply` would check it: flows, numbers.yaml, hours.yaml
        found = _working_copy_problems(settings.dialplans_dir, checks)
        problems = [p for p in problems if p not in found and not p.file.endswith("hours.yaml")]
    problems += found
    for problem in problems:
        print(problem, file=out)
    if problems:
        print(f"{len(problems)} problem(s)", file=out)
        return 1
    print("flows are valid", file=out)
    return 0


def _working_copy_problems(dialplans_dir: Path, checks: Checks) -> list[FlowProblem]:
    try:
        bundle = FlowBundle.from_dir(dialplans_dir)
    except (BundleError, OSError, UnicodeDecodeError) as exc:
        return [FlowProblem(str(dialplans_dir), 1, 1, f"cannot read: {exc}")]
    _, found = check_bundle(bundle, checks, where=shown_path(dialplans_dir))
    return found


def _demo_lookup(settings: Settings) -> LookupCustomer:
    """Without a database: the demo customers of dialplans/demo-customers.yaml, by phone number."""
    from dialplans.models import load_demo_customers
    from hilo.yamlconf import ConfigError

    phones: dict[str, dict[str, Any]] = {}
    try:
        demo = load_demo_customers(settings.dialplans_dir)
    except (ConfigError, OSError):
        demo = None
    for i, customer in enumerate(demo.customers if demo else []):
        for raw in customer.phones:
            try:
                phones[to_e164(raw, settings.default_region)] = {"id": f"demo-{i + 1}", "name": customer.name}
            except InvalidPhoneNumber:
                continue

    async def lookup(kind: str, value: str) -> dict[str, Any] | None:
        return phones.get(value) if kind == "phone" else None

    return lookup


def _database_configured(settings: Settings) -> bool:
    return "HILO_DATABASE_URL" in os.environ or "database_url" in settings.model_fields_set


def _find_flow(name: str, settings: Settings) -> tuple[Path | None, dict[str, Flow]]:
    folder = settings.dialplans_dir / "flows"
    given = Path(name)
    candidates = flow_files([folder]) if folder.is_dir() else []
    flows: dict[str, Flow] = {}
    path: Path | None = given if given.suffix in {".yaml", ".yml"} and given.is_file() else None
    for file in [*candidates, *([path] if path else [])]:
        loaded = load_flow(file)
        if loaded.flow is not None:
            flows.setdefault(loaded.flow.flow, loaded.flow)
            if path is None and loaded.flow.flow == name:
                path = file
    return path, flows


async def simulate_command(
    name: str,
    caller: str,
    inputs: list[str],
    settings: Settings,
    *,
    as_json: bool = False,
    max_steps: int = 200,
    lookup: LookupCustomer | None = None,
    verify: VerifyCustomer | None = None,
    at: str | None = None,
    out: TextIO | None = None,
) -> int:
    """Run a flow as a text conversation. Customers come from `lookup`, else the database when one is
    configured, else dialplans/demo-customers.yaml; `verify` checks secrets (default: nothing verifies);
    calendars come from dialplans/hours.yaml; `at` fixes the moment the flow sees (default: now)."""
    out = out or sys.stdout
    path, flows = _find_flow(name, settings)
    if path is None:
        print(f"no flow {name!r} (neither a file nor a flow id in {settings.dialplans_dir / 'flows'})", file=out)
        return 1
    calendars, problems = _calendars(settings.dialplans_dir)
    checks = Checks(calendars=calendars.ids()) if calendars is not None else None
    found, loaded = load_and_validate([path], checks)
    problems += found
    if problems or calendars is None:
        for problem in problems:
            print(problem, file=out)
        return 1
    flow = next(item.flow for item in loaded.values() if item.flow is not None)
    flows[flow.flow] = flow
    moment = _moment(at, flow)
    if moment is None:
        print(f"--at: {at!r} is not a date and time (e.g. 2026-11-23T14:05 or 2026-11-23T14:05+01:00)", file=out)
        return 1
    try:
        number: str | None = to_e164(caller, settings.default_region)
    except InvalidPhoneNumber:
        number = None

    def services(lookup: LookupCustomer) -> FlowServices:
        extra: dict[str, Any] = {"verify_customer": verify} if verify is not None else {}
        return FlowServices(lookup_customer=lookup, calendars=calendars, clock=lambda: moment, **extra)

    if lookup is not None:
        return await _simulate(flow, flows, number or caller, inputs, services(lookup), as_json, max_steps, out)
    if not _database_configured(settings):
        demo = services(_demo_lookup(settings))
        return await _simulate(flow, flows, number or caller, inputs, demo, as_json, max_steps, out)

    from crm_bridge.customers import find_by_identity
    from hilo.db import create_pool

    try:
        pool = await create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=1)
    except (OSError, ValueError) as exc:
        print(f"cannot reach the database ({type(exc).__name__}): {exc}", file=out)
        return 2

    async def db_lookup(kind: str, value: str) -> dict[str, Any] | None:
        async with pool.acquire() as conn:
            found = await find_by_identity(conn, kind, value)
        return {"id": str(found.customer_id), "name": found.display_name} if found else None

    try:
        return await _simulate(flow, flows, number or caller, inputs, services(db_lookup), as_json, max_steps, out)
    finally:
        await pool.close()


def _calendars(dialplans_dir: Path) -> tuple[Calendars | None, list[FlowProblem]]:
    path = dialplans_dir / "hours.yaml"
    return load_calendars_file(path) if path.exists() else (Calendars(), [])


def _moment(at: str | None, flow: Flow) -> dt.datetime | None:
    """`--at` as an aware datetime (a time without offset is in the flow's time zone); now when not given."""
    if at is None:
        return dt.datetime.now(dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(at)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(flow.timezone or "UTC"))
    return moment


async def _simulate(
    flow: Flow,
    flows: dict[str, Flow],
    number: str,
    inputs: list[str],
    services: FlowServices,
    as_json: bool,
    max_steps: int,
    out: TextIO,
) -> int:
    transcript: list[dict[str, Any]] = []

    def said(text: str) -> None:
        transcript.append({"from": "flow", "text": text})
        if not as_json:
            print(f"< {text}", file=out)

    def answered(text: str | None) -> None:
        transcript.append({"from": "caller", "text": text})
        if not as_json:
            print(f"> {text if text is not None else '(no answer)'}", file=out)

    events: list[dict[str, Any]] = []

    async def record(type_: str, data: dict[str, Any]) -> None:
        events.append({"type": type_, **data})

    customer = await services.lookup_customer("phone", number)
    session = TextSession(inputs, on_output=said, on_input=answered)
    context = FlowContext(
        caller_number=number,
        channel="text",
        customer=customer,
        flows=flows,
        services=services,
        record=record,
        max_steps=max_steps,
    )
    outcome: Outcome = await run_flow(flow, session, context)
    if as_json:
        doc = {"transcript": transcript, "events": events, "outcome": outcome.as_dict()}
        print(json.dumps(doc, indent=2, ensure_ascii=False, default=str), file=out)
    else:
        target = f" {outcome.target}" if outcome.target else ""
        reason = f" ({outcome.reason})" if outcome.reason else ""
        print(f"= {outcome.action}{target}{reason}", file=out)
    return 0 if outcome.action != "error" else 1
