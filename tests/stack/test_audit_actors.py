"""One actor form in every audit trail (hilo/audit.py), through each door: a console session cookie, a bearer
token on the API (a console session's or the API token), the command line and the system; and migration 021,
which rewrote the rows written before in the older forms."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from console.users import add_user
from hilo.db import migration_files
from tests.stack.conftest import Stack
from tests.stack.test_crm_api import new_customer
from tests.stack.test_flow_versions import SWAPPED
from tests.stack.test_screenpop import bearer, forget_cookies, new_password

MIGRATION = dict(migration_files())["021_one_actor_form"]


async def console_session(stack: Stack, username: str, role: str, teams: list[str] | None = None) -> str:
    """Create the console user (a supervisor of `teams`) and sign in as a browser does: the session cookie
    stays in the client's jar (requests without an Authorization header carry it). Returns the session token,
    for bearer use."""
    password = new_password()
    await add_user(stack.pool, username, password, role, None, teams=teams)
    resp = await stack.client.post("/console/api/login", json={"username": username, "password": password})
    body = await resp.json()
    assert resp.status == 200, body
    return str(body["token"])


@pytest.fixture
async def cookies(stack: Stack) -> AsyncIterator[None]:
    yield
    forget_cookies(stack)


def token(stack: Stack) -> dict[str, str]:
    return bearer(stack.token)


# Each door -----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("cookies")
async def test_a_supervisor_action_names_the_door_it_came_through(stack: Stack) -> None:
    session = await console_session(stack, "door-sup", "supervisor", ["front-office"])  # alice's team
    for headers in ({}, bearer(session), token(stack)):  # the cookie, the session as bearer, the API token
        resp = await stack.client.post("/api/agents/alice/state", json={"state": "away"}, headers=headers)
        assert resp.status == 200, await resp.text()
    rows = await stack.pool.fetch("SELECT actor, actor_role FROM supervisor_actions ORDER BY id")
    assert [tuple(r) for r in rows] == [
        ("user:door-sup@console", "supervisor"),
        ("user:door-sup@api", "supervisor"),
        ("token:admin@api", "admin"),
    ]


@pytest.mark.usefixtures("cookies")
async def test_a_flow_applied_by_a_signed_in_admin_is_stamped_with_that_admin(stack: Stack) -> None:
    """It used to be stamped "admin token (api)" whoever applied it: the handler looked the principal up
    under a key `requires` does not use."""
    session = await console_session(stack, "door-admin", "admin")
    resp = await stack.client.get("/api/flows", headers=token(stack))
    first = (await resp.json())["version"]

    applied = await stack.client.post("/api/flows/apply", json={"files": {"flows/demo.yaml": SWAPPED}})
    body = await applied.json()
    assert applied.status == 201, body
    assert body["applied_by"] == "user:door-admin@console"
    rolled = await stack.client.post("/api/flows/rollback", json={"version": first}, headers=bearer(session))
    assert rolled.status == 201 and (await rolled.json())["applied_by"] == "user:door-admin@api"
    again = await stack.client.post(
        "/api/flows/apply", json={"files": {"flows/demo.yaml": SWAPPED}}, headers=token(stack)
    )
    assert again.status == 201 and (await again.json())["applied_by"] == "token:admin@api"

    history = await (await stack.client.get("/api/flows/history", headers=token(stack))).json()
    assert [v["applied_by"] for v in history["versions"][:3]] == [
        "token:admin@api",
        "user:door-admin@api",
        "user:door-admin@console",
    ]


@pytest.mark.usefixtures("cookies")
async def test_a_merge_and_its_undoing_name_who_and_through_which_door(stack: Stack) -> None:
    ana = await new_customer(stack, "Ana", {"kind": "phone", "value": "+34 600 70 00 01"})
    twin = await new_customer(stack, "Ana G.", {"kind": "email", "value": "ana.door@example.org"})
    session = await console_session(stack, "door-merger", "supervisor")
    resp = await stack.client.post(f"/api/customers/{ana['id']}/merge", json={"from": twin["id"], "reason": "dup"})
    merge = await resp.json()
    assert resp.status == 201, merge
    assert merge["merged_by"] == "user:door-merger@console"
    resp = await stack.client.post(f"/api/merges/{merge['id']}/unmerge", headers=bearer(session))
    undone = await resp.json()
    assert resp.status == 200, undone
    assert (undone["merged_by"], undone["undone_by"]) == ("user:door-merger@console", "user:door-merger@api")


# Migration 021 -----------------------------------------------------------------------------------------------


async def _old_rows(conn: Any) -> dict[str, Any]:
    """Rows in every old form, as the code up to migration 020 wrote them; their keys."""
    customers = [
        await conn.fetchval("INSERT INTO customers (display_name) VALUES ($1) RETURNING id", f"c{i}") for i in range(7)
    ]
    interactions = [
        await conn.fetchval(
            "INSERT INTO interactions (customer_id, channel, direction, state) VALUES ($1, 'voice', 'inbound', 'ended')"
            " RETURNING id",
            customers[0],
        )
        for _ in range(3)
    ]
    recording = await conn.fetchval(
        "INSERT INTO recordings (kind, interaction_id, customer_id, state, asterisk_name, started_at, retention_days,"
        " delete_after) VALUES ('call', $1, $2, 'failed', $3, now(), 30, now() + interval '30 days') RETURNING id",
        interactions[0],
        customers[0],
        f"old-forms-{uuid.uuid4()}",
    )
    keys: dict[str, Any] = {"supervisor_actions": {}, "recording_audit": {}, "customer_merges": {}}
    for actor, role in [("maria", "supervisor"), ("api-token", "admin"), ("Maria Lopez!", "supervisor")]:
        keys["supervisor_actions"][actor] = await conn.fetchval(
            "INSERT INTO supervisor_actions (actor, actor_role, action, target_kind, target_id)"
            " VALUES ($1, $2, 'agent-state', 'agent', 'alice') RETURNING id",
            actor,
            role,
        )
    for actor in ["console:maria", "api:admin", "system:retention", "system:flow", "unverified", "someone"]:
        keys["recording_audit"][actor] = await conn.fetchval(
            "INSERT INTO recording_audit (recording_id, action, actor) VALUES ($1, 'url', $2) RETURNING id",
            recording,
            actor,
        )
    merges = [("api:admin", "api:sam"), ("api:sam", None), ("conversation", None), ("agent:bob", None)]
    for n, (merged_by, undone_by) in enumerate(merges, start=1):
        keys["customer_merges"][merged_by] = await conn.fetchval(
            "INSERT INTO customer_merges (survivor_id, merged_id, identity_ids, interaction_ids, case_ids,"
            " timeline_event_ids, merged_by, reason, undone_at, undone_by)"
            " VALUES ($1, $2, '{}', '{}', '{}', '{}', $3, 'dup', CASE WHEN $4::text IS NULL THEN NULL ELSE now() END,"
            " $4) RETURNING id",
            customers[0],
            customers[n],
            merged_by,
            undone_by,
        )
    newest = await conn.fetchval("SELECT coalesce(max(version), 0) FROM flow_versions")
    old_flows = ["admin token (api)", "maria (api)", "root (cli)", "hilo serve", "make run", "cli", "ana b."]
    keys["flow_versions"] = {}
    for n, applied_by in enumerate(old_flows, start=newest + 1):
        await conn.execute(
            "INSERT INTO flow_versions (version, files, digest, applied_by) VALUES ($1, '{}', 'x', $2)", n, applied_by
        )
        keys["flow_versions"][applied_by] = n
    keys["interaction_wrapups"] = {}
    for interaction, username in zip(interactions, ["maria", "api-token:admin", "api-token:"], strict=True):
        await conn.execute(
            "INSERT INTO interaction_wrapups (interaction_id, username, disposition) VALUES ($1, $2, 'resolved')",
            interaction,
            username,
        )
        keys["interaction_wrapups"][username] = interaction
    return keys


async def _now(conn: Any, keys: dict[str, Any]) -> dict[tuple[str, str], str | None]:
    """(table.column, old text) -> the text the row holds now."""
    now: dict[tuple[str, str], str | None] = {}
    for old, key in keys["supervisor_actions"].items():
        now["supervisor_actions.actor", old] = await conn.fetchval(
            "SELECT actor FROM supervisor_actions WHERE id = $1", key
        )
    for old, key in keys["recording_audit"].items():
        now["recording_audit.actor", old] = await conn.fetchval("SELECT actor FROM recording_audit WHERE id = $1", key)
    for old, key in keys["customer_merges"].items():
        row = await conn.fetchrow("SELECT merged_by, undone_by FROM customer_merges WHERE id = $1", key)
        now["customer_merges.merged_by", old] = row["merged_by"]
        if old == "api:admin":
            now["customer_merges.undone_by", "api:sam"] = row["undone_by"]
    for old, key in keys["flow_versions"].items():
        now["flow_versions.applied_by", old] = await conn.fetchval(
            "SELECT applied_by FROM flow_versions WHERE version = $1", key
        )
    for old, key in keys["interaction_wrapups"].items():
        now["interaction_wrapups.username", old] = await conn.fetchval(
            "SELECT username FROM interaction_wrapups WHERE interaction_id = $1", key
        )
    return now


# The mapping, old form -> new, per column (no console user called admin or api-token).
MAPPED = {
    ("supervisor_actions.actor", "maria"): "user:maria@unknown",
    ("supervisor_actions.actor", "api-token"): "token:admin@api",
    ("supervisor_actions.actor", "Maria Lopez!"): "unknown:Maria%20Lopez%21@unknown",
    ("recording_audit.actor", "console:maria"): "user:maria@unknown",
    ("recording_audit.actor", "api:admin"): "token:admin@api",
    ("recording_audit.actor", "system:retention"): "system:retention@unknown",
    ("recording_audit.actor", "system:flow"): "system:flow@system",
    ("recording_audit.actor", "unverified"): "unknown:unverified@api",
    ("recording_audit.actor", "someone"): "unknown:someone@unknown",
    ("customer_merges.merged_by", "api:admin"): "token:admin@api",
    ("customer_merges.undone_by", "api:sam"): "user:sam@unknown",
    ("customer_merges.merged_by", "api:sam"): "user:sam@unknown",
    ("customer_merges.merged_by", "conversation"): "system:conversation@system",
    ("customer_merges.merged_by", "agent:bob"): "unknown:agent%3Abob@unknown",
    ("flow_versions.applied_by", "admin token (api)"): "unknown:admin%20token%20%28api%29@api",
    ("flow_versions.applied_by", "maria (api)"): "user:maria@unknown",
    ("flow_versions.applied_by", "root (cli)"): "login:root@cli",
    ("flow_versions.applied_by", "hilo serve"): "system:serve@system",
    ("flow_versions.applied_by", "make run"): "login:make-run@cli",
    ("flow_versions.applied_by", "cli"): "unknown:cli@cli",
    ("flow_versions.applied_by", "ana b."): "login:ana%20b.@cli",
    ("interaction_wrapups.username", "maria"): "user:maria@unknown",
    ("interaction_wrapups.username", "api-token:admin"): "token:admin@api",
    ("interaction_wrapups.username", "api-token:"): "unknown:api-token%3A@unknown",
}


async def test_migration_021_maps_each_old_form(stack: Stack) -> None:
    """Old-form rows, then the SQL of 021 as `hilo db migrate` runs it; all in one transaction rolled back, so
    the shared test database keeps nothing of it."""
    async with stack.pool.acquire() as conn:
        outer = conn.transaction()
        await outer.start()
        try:
            await conn.execute("SET LOCAL lock_timeout = '10s'")
            keys = await _old_rows(conn)
            assert set(await _now(conn, keys)) == set(MAPPED)

            before = conn.transaction()  # a savepoint: the same rows once more, with other console users
            await before.start()
            await conn.execute(MIGRATION)
            assert await _now(conn, keys) == MAPPED
            kept = {
                (r["table_name"], r["column_name"], r["row_key"]): (r["old_actor"], r["new_actor"])
                for r in await conn.fetch("SELECT * FROM actor_rewrites")
            }
            for (source, old), new in MAPPED.items():
                table, column = source.split(".")
                key = keys[table].get(old) if column != "undone_by" else keys[table]["api:admin"]
                assert kept[table, column, str(key)] == (old, new), (source, old)
            # Again: rows in the form are left as they are, and nothing more is kept.
            await conn.execute(MIGRATION)
            assert await _now(conn, keys) == MAPPED
            assert await conn.fetchval("SELECT count(*) FROM actor_rewrites") == len(kept)
            # The append-only guards are back.
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(
                    "UPDATE recording_audit SET actor = actor WHERE id = $1", keys["recording_audit"]["someone"]
                )
            await before.rollback()

            # With a console user called admin, api:admin could be either: marked, not guessed; api-token too.
            for name in ("admin", "api-token"):
                await conn.execute(
                    "INSERT INTO console_users (username, password_hash, role) VALUES ($1, 'scrypt$x', 'admin')", name
                )
            await conn.execute(MIGRATION)
            now = await _now(conn, keys)
            assert now["customer_merges.merged_by", "api:admin"] == "unknown:api%3Aadmin@unknown"
            assert now["supervisor_actions.actor", "api-token"] == "unknown:api-token@unknown"
            assert now["recording_audit.actor", "api:admin"] == "token:admin@api"  # users were console:<name> here
        finally:
            await outer.rollback()
