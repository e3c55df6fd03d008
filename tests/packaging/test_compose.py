"""docker-compose.yml for real, under podman: the images stack/images.sh builds (brought up to date with this
tree first, from the layer cache), the four services up on a loopback address of their own (127.0.0.9, so
nothing clashes with the local stack), the Hilo container healthy, and one call through it: `hilo call` inside
the Hilo container places a simulated caller into the compose Asterisk (ARI), who takes the demo line's menu
to the sales queue and hangs up; the interaction must then be on the customer's timeline through the REST API.
The production profile: SIP is published over TLS only (5061, with the certificate made here; plain SIP is
not published), the phones are rendered with passwords generated into their volume, on TLS with SRTP, and a
REGISTER over TLS has its credentials checked (wrong: 401; right, for a phone Asterisk reaches at a fixed
address: 403). Everything is torn down (`podman-compose down -v`) whatever happens.

Skips, saying why, where podman is missing or cannot start a container, or where the base images were never
built (`make images`: debootstrap, root)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.packaging.layout import ROOT
from tests.stack.sip import SipTlsPhone

if importlib.util.find_spec("pytest_timeout") is not None:
    pytestmark = [pytest.mark.timeout(600)]

PUBLISH_ADDR = "127.0.0.9"  # the local stack uses 127.0.0.1-3
BASE_IMAGES = ("localhost/hilo-base:bookworm", "localhost/hilo-base:sid")
IMAGES_WITHIN_S = 300  # stack/images.sh: seconds when only this tree's layers change
UP_WITHIN_S = 180
HEALTHY_WITHIN_S = 180
CALL_S = 12  # how long the simulated caller stays in the queue before hanging up
DOWN_WITHIN_S = 120


def sh(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def why_not() -> str | None:
    """Why the compose stack cannot run here, or None."""
    for tool in ("podman", "podman-compose"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (`make images` installs podman and podman-compose)"
    missing = [i for i in BASE_IMAGES if sh(["podman", "image", "exists", i], timeout=30).returncode != 0]
    if missing:
        return f"the base images {missing} are not built: run `make images` (stack/images.sh, as root)"
    probe = sh(["podman", "run", "--rm", BASE_IMAGES[0], "true"], timeout=90)
    if probe.returncode != 0:
        return f"podman cannot start a container here: {(probe.stderr or probe.stdout).strip()}"
    return None


def free_port(kind: int, within: tuple[int, int] | None = None) -> int:
    """A port free on PUBLISH_ADDR: any, or one of the range `within`."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((PUBLISH_ADDR, 0 if within is None else secrets.choice(range(within[0], within[1] + 1))))
            except OSError:
                continue
            port: int = s.getsockname()[1]
            return port
    raise AssertionError(f"no free port on {PUBLISH_ADDR} in {within}")


@dataclass
class Compose:
    project: str
    env: dict[str, str]
    http: str
    token: str
    tls_port: int
    certificate: str  # Asterisk's (sip.crt), which the phones trust

    def run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return sh(["podman-compose", "-p", self.project, *args], timeout=timeout, env=self.env)

    def containers(self) -> dict[str, str]:
        """service -> status, of this project's containers."""
        out = sh(
            [
                "podman",
                "ps",
                "-a",
                "--filter",
                f"label=io.podman.compose.project={self.project}",
                "--format",
                "json",
            ],
            timeout=30,
        ).stdout
        found: dict[str, str] = {}
        for c in json.loads(out or "[]"):
            labels = c.get("Labels") or {}
            found[labels.get("com.docker.compose.service", c["Names"][0])] = c.get("State", "")
        return found

    def container(self, service: str) -> str:
        out = sh(
            [
                "podman",
                "ps",
                "-a",
                "--filter",
                f"label=io.podman.compose.project={self.project}",
                "--filter",
                f"label=com.docker.compose.service={service}",
                "--format",
                "{{.Names}}",
            ],
            timeout=30,
        ).stdout.split()
        assert out, f"no container of service {service}"
        return out[0]

    def logs(self) -> str:
        parts = []
        for service in self.containers():
            out = sh(["podman", "logs", "--tail", "25", self.container(service)], timeout=30)
            parts.append(f"----- {service}\n{out.stdout}{out.stderr}")
        return "\n".join(parts)

    def api(self, path: str) -> tuple[int, Any]:
        request = urllib.request.Request(  # noqa: S310 (http on loopback)
            self.http + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 (http on loopback)
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")


def make_certificate(folder: str) -> str:
    """sip.crt and sip.key for PUBLISH_ADDR in `folder`, made with openssl as docs/security.md says."""
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={PUBLISH_ADDR}",
            "-addext",
            f"subjectAltName=IP:{PUBLISH_ADDR}",
            "-keyout",
            os.path.join(folder, "sip.key"),
            "-out",
            os.path.join(folder, "sip.crt"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return os.path.join(folder, "sip.crt")


@contextlib.contextmanager
def compose_stack() -> Iterator[Compose]:
    project = f"hilotest{secrets.token_hex(3)}"
    http_port, tls_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    rtp_port = free_port(socket.SOCK_DGRAM, within=(10000, 20000))  # one of Asterisk's RTP ports (rtp.conf)
    token = secrets.token_hex(16)
    certs = tempfile.TemporaryDirectory(prefix="hilo-compose-tls-")
    certificate = make_certificate(certs.name)
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        **{
            f"HILO_{k}": secrets.token_hex(16)
            for k in ("ARI_PASSWORD", "AMI_PASSWORD", "DB_PASSWORD", "REDIS_PASSWORD", "METRICS_TOKEN", "SECRET_PEPPER")
        },
        "HILO_API_TOKEN": token,
        "HILO_RECORDING_KEYS": "k1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "HILO_RECORDING_KEY_ID": "k1",
        "HILO_TRUSTED_PROXIES": "127.0.0.1/32",  # no proxy in this test: nobody's X-Forwarded-* is believed
        "HILO_SIP_TLS_CERTS": certs.name,
        "HILO_MEDIA_ADDR": "127.0.0.1",  # no media leaves the compose Asterisk in this test
        "HILO_PUBLISH_ADDR": PUBLISH_ADDR,
        "HILO_HTTP_PUBLISH_ADDR": PUBLISH_ADDR,
        "HILO_HTTP_PUBLISH_PORT": str(http_port),
        "HILO_SIP_TLS_PUBLISH_PORT": str(tls_port),
        "HILO_RTP_PORTS": str(rtp_port),
    }
    stack = Compose(project, env, f"http://{PUBLISH_ADDR}:{http_port}", token, tls_port, certificate)
    try:
        up = stack.run("up", "-d", "--no-build", timeout=UP_WITHIN_S)
        assert up.returncode == 0, f"podman-compose up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
        yield stack
    finally:
        tear_down(stack)
        certs.cleanup()


def tear_down(stack: Compose) -> None:
    """`podman-compose down -v`, then whatever it leaves behind (its network) or a failed `up` left; each step
    bounded, and a step that times out does not stop the next."""
    label = f"label=io.podman.compose.project={stack.project}"
    with contextlib.suppress(subprocess.TimeoutExpired):
        stack.run("down", "-v", timeout=DOWN_WITHIN_S)
    with contextlib.suppress(subprocess.TimeoutExpired):
        leftovers = sh(["podman", "ps", "-a", "-q", "--filter", label], timeout=30).stdout.split()
        if leftovers:
            sh(["podman", "rm", "-f", "-v", *leftovers], timeout=60)
    with contextlib.suppress(subprocess.TimeoutExpired):
        volumes = sh(["podman", "volume", "ls", "-q", "--filter", label], timeout=30).stdout.split()
        if volumes:
            sh(["podman", "volume", "rm", "-f", *volumes], timeout=60)
    with contextlib.suppress(subprocess.TimeoutExpired):
        sh(["podman", "network", "rm", "-f", f"{stack.project}_default"], timeout=60)


def wait_healthy(stack: Compose) -> dict[str, Any]:
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    last: object = "no answer"
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            status, body = stack.api("/healthz")
            if status == 200 and isinstance(body, dict) and body.get("ok"):
                status, details = stack.api("/api/health")  # the versions, for staff only
                assert status == 200, details
                assert isinstance(details, dict)
                return details
            last = body
        states = stack.containers()
        stopped = {s: state for s, state in states.items() if s != "asterisk-config" and state != "running"}
        assert not stopped, f"containers stopped: {stopped}\n{stack.logs()}"
        time.sleep(1)
    raise AssertionError(f"{stack.http}/healthz not ok within {HEALTHY_WITHIN_S}s: {last}\n{stack.logs()}")


def timeline_of(stack: Compose, phone: str, within: float, until: str) -> list[dict[str, Any]]:
    """The timeline of the customer with this phone, once it has an event of type `until`."""
    deadline = time.monotonic() + within
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        status, customer = stack.api("/api/customers?" + urllib.parse.urlencode({"phone": phone}))
        if status == 200:
            status, page = stack.api(f"/api/customers/{customer['id']}/timeline")
            assert status == 200, page
            events = page["events"]
            if any(e["type"] == until for e in events):
                return events
        time.sleep(1)
    raise AssertionError(f"no {until} on the timeline of {phone} within {within}s: {events}\n{stack.logs()}")


def test_compose_stack_takes_a_call() -> None:
    reason = why_not()
    if reason is not None:
        pytest.skip(reason)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"postgres", "redis", "asterisk-config", "asterisk", "hilo"} <= set(compose["services"])

    images = sh(["bash", "stack/images.sh"], timeout=IMAGES_WITHIN_S)
    assert images.returncode == 0, f"stack/images.sh failed:\n{images.stdout[-3000:]}\n{images.stderr[-3000:]}"

    with compose_stack() as stack:
        health = wait_healthy(stack)
        assert health["ari"]["asterisk"].startswith("22."), health

        phone = "+3491" + "".join(secrets.choice("0123456789") for _ in range(7))
        call = sh(
            [
                "podman",
                "exec",
                stack.container("hilo"),
                "hilo",
                "call",
                "100",
                "--from",
                phone,
                "--digits",
                "1",
                "--timeout",
                str(CALL_S),
            ],
            timeout=CALL_S + 60,
        )
        # The caller hangs up while still queued (no agent phone answers in this stack): `hilo call` then
        # says the call did not end within its timeout.
        assert "interaction.started" in call.stdout, f"hilo call:\n{call.stdout}\n{call.stderr}\n{stack.logs()}"

        events = timeline_of(stack, phone, 30, until="interaction.ended")
        kinds = [e["type"] for e in events]
        assert kinds[0] == "interaction.started" and events[0]["data"]["dialed"] == "100", kinds
        assert {"customer.identified", "ivr.flow_started", "routing.queued"} <= set(kinds), kinds
        flow = next(e for e in events if e["type"] == "ivr.flow_started")
        assert flow["data"]["flow"] == "demo"
        queued = next(e for e in events if e["type"] == "routing.queued")
        assert queued["data"]["queue"] == "sales"
        ended = next(e for e in events if e["type"] == "interaction.ended")
        assert ended["data"]["hangup_by"] == "caller", ended
        assert len({e["interaction_id"] for e in events}) == 1

        check_sip_over_tls(stack)


def check_sip_over_tls(stack: Compose) -> None:
    """SIP published over TLS only; the phones rendered on it with SRTP, their generated passwords checked."""
    ports = sh(["podman", "port", stack.container("asterisk")], timeout=30).stdout
    assert "5061/tcp" in ports and "5060" not in ports, ports
    show = sh(["podman", "exec", stack.container("hilo"), "hilo", "phones", "show", "agent-alice"], timeout=60)
    assert show.returncode == 0, show.stderr
    assert re.search(r"^server\s+127\.0\.0\.1:5061 \(TLS only\)$", show.stdout, re.MULTILINE), show.stdout
    found = re.search(r"^password\s+(\S+)$", show.stdout, re.MULTILINE)
    assert found, show.stdout
    endpoint = sh(
        ["podman", "exec", stack.container("asterisk"), "asterisk", "-rx", "pjsip show endpoint agent-alice"],
        timeout=60,
    ).stdout
    assert re.search(r"^ media_encryption\s+: sdes$", endpoint, re.MULTILINE), endpoint
    assert re.search(r"^ transport\s+: transport-tls$", endpoint, re.MULTILINE), endpoint

    async def register(password: str) -> int:
        context = ssl.create_default_context(cafile=stack.certificate)  # checks the certificate names 127.0.0.9
        # from the system's choice of address: podman's port forwarding does not answer one bound to PUBLISH_ADDR
        phone = SipTlsPhone((PUBLISH_ADDR, stack.tls_port), context, "agent-alice", password)
        await phone.open(within=10)
        try:
            return (await phone.register(within=10)).status
        finally:
            await phone.close()

    assert asyncio.run(register("not-alices-password")) == 401
    assert asyncio.run(register(found.group(1))) == 403  # her password, but her phone takes no registration
