"""The wheel carries everything: built from the tracked sources, installed into a fresh venv (outside the
repository), its `hilo` runs, every package and data file is in it, and the installed server migrates a
database of its own and answers /healthz against the stack (`make stack`).

The venv has no dependencies of its own: the stack venv's site-packages are appended to its path (as a
plain .pth line, so the editable install of the repository there is not activated), which keeps the test
offline and fast while every import of the project comes from the wheel."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis

from tests.packaging.layout import ROOT, data_files, packages, pyproject

pytestmark = [pytest.mark.stack]
if importlib.util.find_spec("pytest_timeout") is not None:
    pytestmark.append(pytest.mark.timeout(240))

STEP_TIMEOUT_S = 90  # any one command (wheel build, install, migrate)
HEALTHY_WITHIN_S = 60
STOP_WITHIN_S = 20


@dataclass(frozen=True)
class Installed:
    venv: Path
    site_packages: Path
    wheel: Path

    @property
    def hilo(self) -> Path:
        return self.venv / "bin" / "hilo"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"{' '.join(cmd)} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def source_tree(into: Path) -> Path:
    """The files git knows (tracked, and new ones not ignored), copied: the wheel is built from what would be
    committed, never from local state such as .run/ or a stale build/ folder, and the build leaves nothing in
    the repository."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout.decode()
    for path in filter(None, listed.split("\0")):
        source = ROOT / path
        if source.is_file():
            (into / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / path)
    return into


def build_wheel(src: Path, out: Path) -> Path:
    # The stack venv's setuptools builds it when it has one (no download); otherwise pip's isolated build.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") is not None else []
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(out), str(src)], cwd=src)
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    tmp = tmp_path_factory.mktemp("wheel")
    try:
        wheel = build_wheel(source_tree(tmp / "src"), tmp / "dist")
        venv = tmp / "venv"
        run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
        python = venv / "bin" / "python"
        site_packages = Path(
            run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).strip()
        )
        # the dependencies: the stack venv's site-packages, after the venv's own (a path line: no .pth there runs)
        (site_packages / "_hilo_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        run(
            [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
            cwd=tmp,
        )
        yield Installed(venv, site_packages, wheel)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_installed_hilo_runs_and_carries_every_package_and_data_file(installed: Installed) -> None:
    scripts = pyproject()["project"]["scripts"]
    assert "hilo" in scripts
    out = run([str(installed.hilo), "--help"], cwd=installed.venv)
    assert "serve" in out and "db" in out

    # every package of pyproject.toml is imported from the wheel, none from the repository
    probe = (
        "import importlib.util, json, sys;"
        " print(json.dumps({n: importlib.util.find_spec(n).origin for n in sys.argv[1:]}))"
    )
    origins: dict[str, str] = json.loads(run([str(installed.python), "-c", probe, *packages()], cwd=installed.venv))
    elsewhere = {n: o for n, o in origins.items() if not Path(o).is_relative_to(installed.site_packages)}
    assert not elsewhere, f"not imported from the installed wheel: {elsewhere}"
    # the entry point too
    module = scripts["hilo"].split(":")[0]
    assert module.split(".")[0] in {p.split(".")[0] for p in packages()}

    items = data_files()
    assert any(i.path.endswith(".sql") for i in items), "migrations are found"
    missing = [i.path for i in items if not (installed.site_packages / i.path).is_file()]
    assert not missing, f"{installed.wheel.name} lacks these tracked files: {missing}"


# The installed server against the stack ----------------------------------------------------------------


def stack_env() -> dict[str, str]:
    """The stack's settings: from the environment (`set -a; . .run/env`), else this checkout's .run/env."""
    env = {k: v for k, v in os.environ.items() if k.startswith("HILO_")}
    if "HILO_DATABASE_URL" not in env:
        file = ROOT / ".run" / "env"
        if not file.exists():
            pytest.fail(f"no HILO_DATABASE_URL and {file} is missing: start the stack with `make stack`")
        pairs = (line.split("=", 1) for line in file.read_text().splitlines() if "=" in line)
        env = {k.strip(): v.strip() for k, v in pairs if not k.strip().startswith("#")}
    return env


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def throwaway_database(dsn: str) -> Iterator[str]:
    name = f"hilo_wheel_{secrets.token_hex(4)}"
    asyncio.run(_admin(dsn, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(dsn, name)
    finally:
        asyncio.run(_admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 (http on loopback)
            status: int = resp.status
            return status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # aiohttp's graceful stop
        try:
            proc.wait(STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_installed_server_migrates_and_serves(installed: Installed, tmp_path: Path) -> None:
    stack = stack_env()
    namespace = f"hilo-wheel-{secrets.token_hex(4)}"
    port = free_port()
    migrations = sorted(Path(i.path).stem for i in data_files() if i.path.endswith(".sql"))
    with throwaway_database(stack["HILO_DATABASE_URL"]) as dsn:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HILO_")},
            **stack,
            "HILO_DATABASE_URL": dsn,
            "HILO_NAMESPACE": namespace,  # its own Stasis app, Redis keys and event channel
            "HILO_HTTP_HOST": "127.0.0.1",
            "HILO_HTTP_PORT": str(port),
            "HILO_SOUNDS_DIR": str(tmp_path / "sounds" / "hilo"),
            "HILO_TTS_CACHE_DIR": str(tmp_path / "tts-cache"),
            "HILO_RECORDINGS_DIR": str(tmp_path / "recordings"),
            "HILO_CRM_URL": "",
        }
        env.pop("HILO_ASTERISK_ROOT", None)  # never touch the stack's Asterisk configuration
        env.pop("HILO_DIALPLANS_DIR", None)  # the installed package's own
        out = run([str(installed.hilo), "db", "migrate"], cwd=tmp_path, env=env)
        assert all(m in out for m in migrations), f"hilo db migrate applied not every migration: {out}"

        log = tmp_path / "serve.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [str(installed.hilo), "serve"],
                cwd=tmp_path,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + HEALTHY_WITHIN_S
            status, body = 0, b"no answer"
            while time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(OSError):
                    status, body = get(f"{base}/healthz")
                    if status == 200:
                        break
                time.sleep(0.5)
            tail = log.read_text(errors="replace")[-3000:]
            assert status == 200, (
                f"hilo serve (exit {proc.poll()}) unhealthy after {HEALTHY_WITHIN_S}s: {body!r}\n{tail}"
            )
            assert json.loads(body)["ok"] is True
            # static files of two packages, served from the installed package
            for path in ("/console/static/agent.js", "/chat/static/chat-widget.js"):
                status, _ = get(base + path)
                assert status == 200, f"GET {path}: {status}"
        finally:
            stop(proc)
            client = redis.Redis.from_url(stack["HILO_REDIS_URL"], socket_timeout=5)
            try:
                keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
                if keys:
                    client.delete(*keys)
            finally:
                client.close()
        assert proc.returncode is not None
