"""Health, metrics, authentication and input errors of the HTTP API; nothing listens beyond loopback."""

from __future__ import annotations

import ipaddress
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.stack.conftest import Stack
from tests.stack.expect import eventually
from tests.stack.faults import FaultReport
from tests.stack.outages import postgres_away, redis_away
from tests.stack.test_calls import KNOWN_CALLER, place

PARTS = ("ari", "ami", "postgres", "redis")


async def test_health_reports_each_dependency(stack: Stack) -> None:
    resp = await stack.client.get("/healthz")
    body = await resp.json()
    assert resp.status == 200, body
    assert body == {"ok": True, **{k: {"ok": True} for k in PARTS}}  # no version for anonymous callers
    resp = await stack.client.get("/api/health", headers={"Authorization": f"Bearer {stack.token}"})
    details = await resp.json()
    assert resp.status == 200, details
    assert details["ari"]["asterisk"].startswith("22.")


async def _health(stack: Stack) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """/healthz (anonymous) and /api/health (staff): the status and both bodies."""
    anonymous = await stack.client.get("/healthz")
    staff = await stack.client.get("/api/health", headers={"Authorization": f"Bearer {stack.token}"})
    assert anonymous.status == staff.status
    return anonymous.status, await anonymous.json(), await staff.json()


async def _healthy(stack: Stack) -> bool:
    return (await _health(stack))[0] == 200


@pytest.mark.fault
async def test_health_is_503_when_a_dependency_is_down(stack: Stack, fault_report: FaultReport) -> None:
    fault_report.fault("/healthz with ARI, Redis, PostgreSQL away").nothing_to_count(
        "the health answer only: no call, message or timeline event is involved"
    )
    assert stack.services.ari is not None and stack.services.redis is not None
    stack.services.ari.connected.clear()  # as if the events socket were down
    try:
        status, body, details = await _health(stack)
        assert status == 503
        assert body["ari"] == {"ok": False} and body["postgres"]["ok"] is True  # no error text
        assert details["ari"]["error"] == "ConnectionError: events socket not connected"
    finally:
        stack.services.ari.connected.set()

    # Redis really away for the server: its connections cut, every reconnection refused.
    async with redis_away(stack.services.redis):
        status, body, details = await _health(stack)
        assert status == 503
        assert body == {"ok": False, **{k: {"ok": k != "redis"} for k in PARTS}}
        assert details["redis"]["error"].startswith("ConnectionError: Error 111 connecting to 127.0.0.1")
    await eventually(lambda: _healthy(stack), within=10, what="healthy again once Redis is back")

    # PostgreSQL really away for the server's pool.
    async with postgres_away(stack.pool):
        status, body, details = await _health(stack)
        assert status == 503
        assert body == {"ok": False, **{k: {"ok": k != "postgres"} for k in PARTS}}
        assert "Connect call failed" in details["postgres"]["error"]
    await eventually(lambda: _healthy(stack), within=10, what="healthy again once PostgreSQL is back")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The exposition parsed (a malformed one raises): sample name and labels -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _metrics(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await stack.client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    return _samples(await resp.text())


async def test_metrics_are_prometheus_text_that_counts_the_calls(stack: Stack) -> None:
    before = await _metrics(stack)
    active, started = ("hilo_calls_active", ()), ("hilo_calls_started_total", ())
    completed = ("hilo_calls_ended_total", (("outcome", "completed"),))
    assert before[active] == 0
    call, begun = await place(stack, KNOWN_CALLER, "2")
    interaction = begun["interaction_id"]
    await stack.hilo_events.expect("agent.answered", within=30, interaction_id=interaction)
    during = await _metrics(stack)
    assert (during[active], during[started]) == (1, before[started] + 1)
    await stack.observer.hangup(call.caller_leg)
    await stack.hilo_events.expect("interaction.ended", within=10, interaction_id=interaction)
    after = await _metrics(stack)
    assert (after[active], after[completed]) == (0, before.get(completed, 0) + 1)
    # anonymous: the aggregates only, no series of one agent
    assert not [name for name, labels in after if ("by", "agent") in labels or "agent" in dict(labels)]


async def test_api_needs_a_valid_token(stack: Stack) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": stack.token}):
        resp = await stack.client.get("/api/customers", params={"phone": "+34911222333"}, headers=headers)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await stack.client.get(f"/api/customers/{uuid.uuid4()}/timeline")
    assert resp.status == 401


async def test_bad_input_is_named(stack: Stack) -> None:
    auth = {"Authorization": f"Bearer {stack.token}"}
    resp = await stack.client.get("/api/customers", params={"phone": "12"}, headers=auth)
    assert resp.status == 400 and (await resp.json())["field"] == "phone"
    resp = await stack.client.get("/api/customers/not-a-uuid/timeline", headers=auth)
    assert resp.status == 400 and (await resp.json())["field"] == "customer_id"
    resp = await stack.client.get(f"/api/customers/{uuid.uuid4()}/timeline", headers=auth)
    assert resp.status == 404
    resp = await stack.client.get("/api/customers", params={"phone": "+34 911 22 23 33"}, headers=auth)
    assert resp.status == 200 and (await resp.json())["display_name"] == "Ana García"


def _ephemeral_ports() -> range:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def test_stack_services_listen_on_loopback_only() -> None:
    out = subprocess.run(["ss", "-H", "-lntup"], capture_output=True, text=True, check=True).stdout
    ours = re.compile(r'"(asterisk|postgres|redis-server|sipp)"')
    ephemeral = _ephemeral_ports()
    checked = 0
    for line in out.splitlines():
        if not ours.search(line):
            continue
        local = line.split()[4]
        host, port = local.rsplit(":", 1)
        host = host.strip("[]").split("%")[0]
        # Known limit: Asterisk's PJSIP DNS resolver keeps client UDP sockets on the wildcard address at
        # ephemeral ports (no setting binds them); they only query the chroot's nameserver, 127.0.0.1.
        if line.startswith("udp") and '"asterisk"' in line and int(port) in ephemeral:
            continue
        assert host != "*" and ipaddress.ip_address(host).is_loopback, line
        checked += 1
    assert checked >= 5, out  # asterisk (SIP, HTTP, AMI), postgres, redis at least


async def test_agent_state_can_be_set_through_the_api(stack: Stack) -> None:
    auth = {"Authorization": f"Bearer {stack.token}"}
    resp = await stack.client.post("/api/agents/bob/state", json={"state": "away"}, headers=auth)
    assert resp.status == 200
    agents = {a["id"]: a for a in (await (await stack.client.get("/api/agents", headers=auth)).json())["agents"]}
    assert agents["bob"]["state"] == "away" and agents["alice"]["state"] == "available"
    resp = await stack.client.post("/api/agents/bob/state", json={"state": "busy"}, headers=auth)
    assert resp.status == 400 and (await resp.json())["field"] == "state"
    resp = await stack.client.post("/api/agents/nobody/state", json={"state": "away"}, headers=auth)
    assert resp.status == 404
    resp = await stack.client.post("/api/agents/bob/state", json={"state": "available"})
    assert resp.status == 401
