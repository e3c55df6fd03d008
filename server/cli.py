"""The `hilo` command: serve, database migrations, demo seed, a test call, the load test and the flow tools."""

from __future__ import annotations

import argparse
import asyncio
import sys
from urllib.parse import urlsplit

from asterisk.dialplan_cli import add_dialplan_commands, run_dialplan_command
from asterisk.phones_cli import add_phones_commands, run_phones_command
from console.users_cli import add_users_commands, run_users_command
from crm_bridge.import_cli import add_customers_commands, run_customers_command
from flows.cli import add_flows_commands, run_flows_command
from hilo.logs import setup_logging
from hilo.settings import Settings, load_settings
from recordings.cli import add_recordings_commands, run_recordings_command
from reports.cli import add_reports_commands, run_reports_command
from server.loadtest.cli import add_loadtest_command, run_loadtest_command
from speech.cli import add_speech_commands, run_speech_command


def _secrets(settings: Settings) -> list[str]:
    values = [
        settings.ari_password,
        settings.ami_password,
        settings.api_token,
        settings.metrics_token,
        settings.database_url,
        settings.redis_url,
        settings.crm_auth,
        settings.twilio_auth_token,
        settings.whatsapp_app_secret,
        settings.whatsapp_verify_token,
        settings.whatsapp_access_token,
    ]
    # the connection URLs' passwords alone too (a driver's message may name one without its URL)
    passwords = [urlsplit(u.get_secret_value()).password or "" for u in (settings.database_url, settings.redis_url)]
    keys = settings.recording_keys.get_secret_value()  # the whole list, and each key in it
    peppers = [
        settings.secret_pepper.get_secret_value(),
        *settings.secret_pepper_previous.get_secret_value().split(","),
    ]
    return (
        [v.get_secret_value() for v in values]
        + passwords
        + [keys, *(k.partition(":")[2] for k in keys.split(","))]
        + [p.strip() for p in peppers]
    )


async def _migrate(settings: Settings) -> int:
    import asyncpg

    from hilo.db import migrate

    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
    return 0


async def _seed_demo(settings: Settings) -> int:
    from hilo.db import create_pool
    from server.seed import seed_demo

    pool = await create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=2)
    try:
        summary = await seed_demo(pool, settings.dialplans_dir, settings.default_region)
    finally:
        await pool.close()
    print(f"seeded {summary['customers']} demo customers and {summary['agents']} agents")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hilo", description="Hilo contact-center core")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the Hilo server (HTTP API + Stasis app)")
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes on this machine, each owning its own calls (default: HILO_WORKERS, or 1)",
    )
    db = sub.add_parser("db", help="database tasks").add_subparsers(dest="db_command", required=True)
    db.add_parser("migrate", help="apply pending schema migrations")
    seed = sub.add_parser("seed", help="seed data").add_subparsers(dest="seed_command", required=True)
    seed.add_parser("demo", help="demo customers and agents from dialplans/")
    call = sub.add_parser("call", help="place a simulated call into Asterisk and follow it on the timeline")
    call.add_argument("number", help="the number dialled, e.g. 100")
    call.add_argument("--from", dest="caller", default="+34911222333", help="caller number")
    call.add_argument("--digits", default="", help="keys the caller types, e.g. 2 (w = half-second pause)")
    call.add_argument("--say", default="", help='what the caller says (synthesized), e.g. "technical support"')
    call.add_argument("--say-after", type=float, default=3.0, help="seconds after answer (and keys) to say it")
    call.add_argument("--talk", type=float, default=3.0, help="seconds to stay on the line with the agent")
    call.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds")
    add_flows_commands(sub)
    add_customers_commands(sub)
    add_dialplan_commands(sub)
    add_phones_commands(sub)
    add_users_commands(sub)
    add_speech_commands(sub)
    add_recordings_commands(sub)
    add_reports_commands(sub)
    add_loadtest_command(sub)
    args = parser.parse_args(argv)

    settings = load_settings()
    setup_logging(secrets=_secrets(settings))
    if args.command == "serve":
        workers = settings.workers if args.workers is None else args.workers
        if workers < 1:
            parser.error(f"--workers {workers}: give at least 1")
        if workers > 1 and settings.worker == 0:  # the parent: it starts the workers and keeps them running
            from server.workers import serve_workers

            return serve_workers(workers)
        from server.app import run

        run(settings)
        return 0
    if args.command == "db":
        return asyncio.run(_migrate(settings))
    if args.command == "seed":
        return asyncio.run(_seed_demo(settings))
    if args.command == "call":
        from server.simcall import place_call

        return asyncio.run(
            place_call(
                settings,
                args.number,
                args.caller,
                args.digits,
                talk_s=args.talk,
                timeout_s=args.timeout,
                say=args.say,
                say_after_s=args.say_after,
            )
        )
    if args.command == "flows":
        return asyncio.run(run_flows_command(args, settings))
    if args.command == "customers":
        return asyncio.run(run_customers_command(args, settings))
    if args.command == "dialplan":
        return asyncio.run(run_dialplan_command(args, settings))
    if args.command == "phones":
        return run_phones_command(args, settings)
    if args.command == "speech":
        return run_speech_command(args, settings)
    if args.command == "users":
        return asyncio.run(run_users_command(args, settings))
    if args.command == "recordings":
        return asyncio.run(run_recordings_command(args, settings))
    if args.command == "reports":
        return asyncio.run(run_reports_command(args, settings))
    if args.command == "loadtest":
        return asyncio.run(run_loadtest_command(args, settings))
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
