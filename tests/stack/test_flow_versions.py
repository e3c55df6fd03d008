"""Flow versions over real calls: apply without a restart while a call is in progress, roll back, and the
admin API's answers and refusals. The tests' own `dialplans/` copy is live again after every test."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hilo.web.auth import AUTH_KEY
from tests.paths import DIALPLANS
from tests.stack.calls import hang_up
from tests.stack.conftest import Stack
from tests.stack.test_calls import KNOWN_CALLER, place

DEMO = (DIALPLANS / "flows" / "demo.yaml").read_text()
# Version 2 of the demo line: keys 1 and 2 swap queues.
SWAPPED = (
    DEMO.replace("next: to_support}", "next: TO_SALES}")
    .replace("next: to_sales}", "next: to_support}")
    .replace("TO_SALES", "to_sales")
)


def _auth(stack: Stack, token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or stack.token}"}


async def _apply(stack: Stack, files: dict[str, Any], comment: str = "") -> dict[str, Any]:
    resp = await stack.client.post("/api/flows/apply", json={"files": files, "comment": comment}, headers=_auth(stack))
    body: dict[str, Any] = await resp.json()
    assert resp.status == 201, body
    return body


async def _queue_of(stack: Stack, interaction: str, since: int) -> str:
    queued = await stack.hilo_events.expect("routing.queued", within=20, since=since, interaction_id=interaction)
    return str(queued["data"]["queue"])


async def test_apply_while_a_call_runs_then_roll_back(stack: Stack) -> None:
    assert SWAPPED != DEMO
    first = await stack.client.get("/api/flows", headers=_auth(stack))
    v1 = (await first.json())["version"]

    # Call A reaches the menu on the version live when it began, and waits there.
    call_a, started_a = await place(stack, KNOWN_CALLER, "", in_app=True)
    a = started_a["interaction_id"]
    await stack.hilo_events.expect("ivr.flow_started", within=10, interaction_id=a, data__version=v1)
    await stack.hilo_events.expect("ivr.menu", within=15, interaction_id=a)

    applied = await _apply(stack, {"flows/demo.yaml": SWAPPED}, comment="key 2 to sales")
    v2 = applied["version"]
    assert v2 == v1 + 1 and applied["applied_by"] == "token:admin@api"
    after_apply = stack.hilo_events.mark()

    # A presses 2 only now, with version 2 live: it still follows the version it began with.
    await stack.observer.send_dtmf(call_a.caller_leg, "2")
    await stack.hilo_events.expect("ivr.input", within=10, since=after_apply, interaction_id=a, data__digit="2")
    assert await _queue_of(stack, a, after_apply) == "support"

    # A new call B, same key, takes version 2.
    call_b, started_b = await place(stack, KNOWN_CALLER, "2")
    b = started_b["interaction_id"]
    await stack.hilo_events.expect("ivr.flow_started", within=10, interaction_id=b, data__version=v2)
    assert await _queue_of(stack, b, after_apply) == "sales"
    await hang_up(stack, call_a.caller_leg, a)
    await hang_up(stack, call_b.caller_leg, b)

    resp = await stack.client.post("/api/flows/rollback", json={"version": v1}, headers=_auth(stack))
    rolled = await resp.json()
    assert resp.status == 201, rolled
    assert (rolled["version"], rolled["rollback_of"]) == (v2 + 1, v1)
    call_c, started_c = await place(stack, KNOWN_CALLER, "2")
    c = started_c["interaction_id"]
    await stack.hilo_events.expect("ivr.flow_started", within=10, interaction_id=c, data__version=v2 + 1)
    assert await _queue_of(stack, c, stack.hilo_events.baseline) == "support"
    await hang_up(stack, call_c.caller_leg, c)

    history = await (await stack.client.get("/api/flows/history", headers=_auth(stack))).json()
    assert history["live"] == v2 + 1
    newest = history["versions"][:3]
    assert [(v["version"], v["rollback_of"]) for v in newest] == [(v2 + 1, v1), (v2, None), (v1, None)]
    assert newest[1]["comment"] == "key 2 to sales"


async def test_a_broken_change_is_refused_with_positions_and_nothing_changes(stack: Stack) -> None:
    before = await (await stack.client.get("/api/flows/history", headers=_auth(stack))).json()
    broken = DEMO.replace("queue: sales", "queue: billing").replace("kind: say", "kind: shout", 1)
    for route in ("/api/flows/validate", "/api/flows/apply"):
        resp = await stack.client.post(route, json={"files": {"flows/demo.yaml": broken}}, headers=_auth(stack))
        body = await resp.json()
        assert resp.status == 422, body
        where = {(p["file"], p["line"]) for p in body["problems"]}
        billing_line = 1 + broken.splitlines().index("    queue: billing")
        shout_line = 1 + broken.splitlines().index("    kind: shout")
        assert ("dialplans/flows/demo.yaml", shout_line) in where, body
        del billing_line  # the unknown queue is only checked once the node kinds parse
        assert all(p["column"] >= 1 and p["message"] for p in body["problems"])
    # A sound that Asterisk does not have.
    silent = DEMO.replace(
        "  greet:\n    kind: say\n    text: Welcome to Hilo.\n",
        "  greet:\n    kind: play\n    file: no-such-sound\n    text: Welcome to Hilo.\n",
    )
    assert silent != DEMO
    resp = await stack.client.post(
        "/api/flows/validate", json={"files": {"flows/demo.yaml": silent}}, headers=_auth(stack)
    )
    body = await resp.json()
    assert resp.status == 422
    line = 1 + silent.splitlines().index("    file: no-such-sound")
    assert [(p["line"], "no-such-sound" in p["message"]) for p in body["problems"]] == [(line, True)], body
    # A number sent to a flow that the same change removes.
    resp = await stack.client.post("/api/flows/apply", json={"files": {"flows/demo.yaml": None}}, headers=_auth(stack))
    body = await resp.json()
    assert resp.status == 422
    assert any(
        "unknown flow 'demo'" in p["message"] and p["file"] == "dialplans/numbers.yaml" for p in body["problems"]
    )
    after = await (await stack.client.get("/api/flows/history", headers=_auth(stack))).json()
    assert after == before


async def test_flow_api_is_for_admins_only_and_names_bad_fields(stack: Stack) -> None:
    assert stack.client.app is not None
    tokens = stack.client.app[AUTH_KEY].tokens
    tokens["supervisor-token-for-tests"] = "supervisor"
    try:
        resp = await stack.client.get("/api/flows", headers=_auth(stack, "supervisor-token-for-tests"))
        assert resp.status == 403
    finally:
        del tokens["supervisor-token-for-tests"]
    assert (await stack.client.get("/api/flows")).status == 401
    cases = [
        ({"files": {"../../etc/passwd": "x"}}, "files"),
        ({"files": {}}, "files"),
        ({"files": {"flows/demo.yaml": 3}}, "files.flows/demo.yaml"),
        ({"files": {"flows/demo.yaml": DEMO}, "comment": 5}, "comment"),
    ]
    for body, field in cases:
        resp = await stack.client.post("/api/flows/apply", json=body, headers=_auth(stack))
        assert resp.status == 400, body
        assert (await resp.json())["field"] == field
    resp = await stack.client.post("/api/flows/rollback", json={"version": 999}, headers=_auth(stack))
    assert resp.status == 404
    got = await (await stack.client.get("/api/flows/demo", headers=_auth(stack))).json()
    assert got["file"] == "flows/demo.yaml" and got["source"] == DEMO
    assert (await stack.client.get("/api/flows/nope", headers=_auth(stack))).status == 404


async def test_cli_apply_reaches_a_running_server_through_postgres(stack: Stack, tmp_path: Path) -> None:
    """`hilo flows apply` in another process: the server learns of it by NOTIFY, no API call, no restart."""
    folder = tmp_path / "dialplans"
    shutil.copytree(DIALPLANS, folder)
    (folder / "flows" / "demo.yaml").write_text(SWAPPED)
    env = {
        **os.environ,
        "HILO_DATABASE_URL": stack.settings.database_url.get_secret_value(),
        "HILO_DIALPLANS_DIR": str(folder),
    }
    assert stack.services.flows is not None
    before = stack.services.flows.current.version
    cli = [sys.executable, "-m", "server.cli", "flows"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:  # bounded: a thread cannot be cancelled
        return subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=60)

    done = await asyncio.to_thread(run, "apply", "--by", "ana", "--comment", "cli")
    assert done.returncode == 0, done.stderr
    assert "is live" in done.stdout
    newest = await stack.pool.fetchval("SELECT applied_by FROM flow_versions ORDER BY version DESC LIMIT 1")
    assert newest == "login:ana@cli"  # who, and the door: the command line

    # NOTIFY, well inside the 5 s poll
    await stack.hilo_events.expect("flows.live", within=3, data__version=lambda v: v != before)
    assert stack.services.flows.current.files["flows/demo.yaml"] == SWAPPED

    again = await asyncio.to_thread(run, "apply")
    assert again.returncode == 0 and "nothing to apply" in again.stdout
    (folder / "numbers.yaml").write_text('numbers:\n  "100": demo\n  "200": nowhere\n')
    bad = await asyncio.to_thread(run, "apply")
    assert bad.returncode == 1
    assert "dialplans/numbers.yaml:3:1: number '200' goes to unknown flow 'nowhere'" in bad.stderr
    history = await asyncio.to_thread(run, "history")
    assert history.returncode == 0 and "login:ana@cli" in history.stdout and "cli" in history.stdout
