"""A `hilo serve` process of a benchmark's own, against the stack's Asterisk, PostgreSQL and Redis, in a
database of its own (migrated, demo-seeded). Used by bench/capacity.py, and by hand for load runs:

    .run/venv/bin/python -m bench.hilo_serve [--namespace hilo] [--database hilo_bench_capacity] [--port N]
        [--wrapup S] [--keep]

serves until Ctrl-C, then drops the database and its recordings' files (unless --keep) and the namespace's
Redis keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from bench.databases import bench_dsn, recreate_database
from hilo.db import create_pool, migrate
from hilo.settings import REPO_ROOT, Settings, load_settings
from server.seed import seed_demo

LOGS = REPO_ROOT / ".run" / "logs"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Served:
    base: str
    port: int
    pid: int
    dsn: str
    health: dict[str, Any]
    log: Path
    log_offset: int  # where this server's lines start in `log` (it is appended to)

    def log_text(self) -> str:
        with self.log.open("rb") as f:
            f.seek(self.log_offset)
            return f.read().decode(errors="replace")


async def prepare_database(settings: Settings, database: str) -> str:
    """A fresh bench database with Hilo's schema and the demo customers and agents; its DSN."""
    base = settings.database_url.get_secret_value()
    dsn = bench_dsn(base, database)
    await recreate_database(base, database)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        await seed_demo(pool, settings.dialplans_dir, settings.default_region)
    finally:
        await pool.close()
    return dsn


async def clear_namespace(redis_url: str, namespace: str) -> int:
    """Delete the namespace's Redis keys (what `hilo` resets do): live agents, interactions, sessions."""
    redis = aioredis.from_url(redis_url)
    try:
        keys = [k async for k in redis.scan_iter(f"{namespace}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
        return len(keys)
    finally:
        await redis.aclose()


async def drop_recordings(settings: Settings, dsn: str) -> int:
    """The encrypted files of the bench database's recordings (recordings/setup.py's store): with the database
    dropped they would be orphans nothing lists or purges."""
    conn = await asyncpg.connect(dsn)
    try:
        keys = [r["storage_key"] for r in await conn.fetch("SELECT storage_key FROM recordings") if r["storage_key"]]
    finally:
        await conn.close()
    for key in keys:
        (settings.recordings_dir / "store" / key).unlink(missing_ok=True)
    return len(keys)


def running_servers(namespace: str) -> list[int]:
    """Pids of `hilo serve` processes of `namespace` on this machine (their environment says which; an ARI
    app stays listed after its server stopped, so Asterisk cannot tell)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if not (b"serve" in argv and any(a.endswith((b"hilo", b"server.cli")) for a in argv)):
                continue
            env = dict(item.split(b"=", 1) for item in (entry / "environ").read_bytes().split(b"\0") if b"=" in item)
        except OSError:
            continue
        if env.get(b"HILO_NAMESPACE", b"hilo").decode(errors="replace") == namespace:
            found.append(int(entry.name))
    return found


@contextlib.asynccontextmanager
async def hilo_server(
    settings: Settings,
    database: str,
    *,
    namespace: str = "hilo",
    log_name: str = "bench-hilo",
    env: dict[str, str] | None = None,
    keep: bool = False,
    port: int = 0,
) -> AsyncIterator[Served]:
    """Prepares the database, starts `hilo serve` on a free loopback port, yields once /healthz is 200;
    afterwards stops it (SIGINT, then SIGKILL), drops the database (unless `keep`) and clears the namespace."""
    if others := running_servers(namespace):
        raise RuntimeError(f"a Hilo server of namespace {namespace!r} is running already (pid {others[0]}): stop it")
    dsn = await prepare_database(settings, database)
    await clear_namespace(settings.redis_url.get_secret_value(), namespace)
    port = port or free_tcp_port()
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{log_name}.log"
    environment = {
        **os.environ,
        "HILO_NAMESPACE": namespace,
        "HILO_DATABASE_URL": dsn,
        "HILO_HTTP_HOST": "127.0.0.1",
        "HILO_HTTP_PORT": str(port),
        "HILO_CRM_URL": "",
        **(env or {}),
    }
    with log_path.open("a") as log:
        offset = log.tell()
        log.write(f"\n===== {datetime.now(UTC).isoformat()} {log_name}: hilo serve =====\n")
        log.flush()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", "serve", cwd=REPO_ROOT, env=environment, stdout=log, stderr=log
        )
    base = f"http://127.0.0.1:{port}"
    try:
        health = await wait_healthy(base, proc, 120, log_path)
        yield Served(base, port, proc.pid, dsn, health, log_path, offset)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)  # aiohttp's graceful stop
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await clear_namespace(settings.redis_url.get_secret_value(), namespace)
        if not keep:
            await drop_recordings(settings, dsn)
            await recreate_database(settings.database_url.get_secret_value(), database, drop_only=True)


async def wait_healthy(base: str, proc: asyncio.subprocess.Process, within: float, log: Path) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last = "no answer"
    async with aiohttp.ClientSession() as http:
        while loop.time() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"hilo serve exited with {proc.returncode}: see {log}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{base}/healthz") as resp:
                    body: dict[str, Any] = await resp.json()
                    if resp.status == 200:
                        return body
                    last = json.dumps(body)
            await asyncio.sleep(0.5)
    raise RuntimeError(f"hilo serve not healthy within {within:g} s ({last}): see {log}")


async def _serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    env = {"HILO_WRAPUP_S": str(args.wrapup)}
    async with hilo_server(
        settings,
        args.database,
        namespace=args.namespace,
        log_name="bench-hilo-serve",
        env=env,
        keep=args.keep,
        port=args.port,
    ) as served:
        print(f"hilo serve pid {served.pid} on {served.base} (namespace {args.namespace}, database {args.database});"
              f" log {served.log}; Ctrl-C stops it", flush=True)  # fmt: skip
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hilo_serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", default="hilo", help="Stasis app and Redis prefix (default hilo)")
    parser.add_argument("--database", default="hilo_bench_capacity", help="a hilo_bench* database of its own")
    parser.add_argument("--wrapup", type=float, default=0.0, help="HILO_WRAPUP_S of the server")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--port", type=int, default=0, help="HTTP port on 127.0.0.1 (default: a free one)")
    return asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
