"""Schemathesis against the live API, over every operation /api/openapi.json declares: requests generated from
the document (valid ones, and ones that break the schema) never get a server error, and every answer has a
declared status, content type and a body matching the declared schema. An operation's examples take turns
with a credential of each role it admits (the admin token; a supervisor's and an agent's console session);
one that names roles is also called once without any credential (refused 401 as declared), and a staff-only
one once with the agent's session (refused 403), in the run of valid requests.

The operations come from the document at run time, so a new route is covered without editing this file; one
that cannot be exercised must be in EXCLUDED with its reason (a path parameter this test has no id for fails
the test). Path parameters are real ids made here: a customer, its identity, case and interaction, a merge, a
webhook subscription and a dead-lettered delivery, a stored recording, a flow. An operation that destroys or
changes what it is given (deletes, agents' states, unmerge) gets its own throwaway object, so the shared ones
stay for the other operations; what outlives the conftest's truncation (agents' rows) is removed here.

Schemathesis is synchronous (requests): it runs in a worker thread while the event loop serves the
in-process Hilo it talks to."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from yarl import URL

from crm_bridge import identity
from tests.stack.conftest import Stack
from tests.stack.recordings import stored_recording
from tests.stack.test_screenpop import bearer, sign_in

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
METHODS = ("get", "put", "post", "patch", "delete")
MAX_EXAMPLES = 15  # per operation and generation mode: 70 operations in well under a minute each way
MIN_CALLS = 3  # an operation with inputs gets a few distinct requests, even when its path is all fixed

# (METHOD, path) -> why the operation is not exercised. Empty: every declared operation is.
EXCLUDED: dict[tuple[str, str], str] = {}

# Agents made here (the agents table outlives the conftest's truncation): removed at the end.
THROWAWAY_AGENTS = {"conformance": "agent-noanswer", "conformance-gone": "agent-busy"}
THROWAWAY_QUEUE = "conformance-gone"


@dataclass
class Subjects:
    ids: dict[str, str]  # path parameter -> the id every operation taking it is called with
    own: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)  # an operation's throwaway ids

    def path_parameters(self, method: str, path: str, names: list[str]) -> dict[str, str]:
        given_ids = {**self.ids, **self.own.get((method, path), {})}
        missing = [name for name in names if name not in given_ids]
        if missing:
            raise LookupError(f"{method} {path}: no id for path parameter(s) {missing}: make one in `subjects`")
        return {name: given_ids[name] for name in names}


async def _api(stack: Stack, method: str, path: str, body: Any = None, status: int = 201) -> Any:
    resp = await stack.client.request(method, path, json=body, headers=bearer(stack.token))
    answer = await resp.json() if resp.content_type == "application/json" else None
    assert resp.status == status, (method, path, resp.status, answer)
    return answer


async def _customer(stack: Stack, phone: str, *more: str) -> dict[str, Any]:
    identities = [{"kind": "phone", "value": p} for p in (phone, *more)]
    created: dict[str, Any] = await _api(stack, "POST", "/api/customers", {"identities": identities})
    listed = await _api(stack, "GET", f"/api/customers/{created['id']}/identities", status=200)
    created["identity_ids"] = [i["id"] for i in listed["identities"]]
    return created


async def subjects(stack: Stack) -> Subjects:
    """The objects the operations are called on, made through the API where it can make them."""
    rec = await stored_recording(stack)  # Ana García's, with its interaction and timeline events
    assert rec.interaction_id is not None and rec.customer_id is not None
    customer = await identity.identify_or_create(stack.pool, "phone", "+34 600 90 00 01", "ES")
    case = await _api(
        stack, "POST", f"/api/customers/{rec.customer_id}/cases", {"subject": "conformance", "interaction_id": None}
    )
    merged = await _customer(stack, "+34 600 90 00 02")
    merge = await _api(
        stack,
        "POST",
        f"/api/customers/{customer.customer_id}/merge",
        {"from": merged["id"], "reason": "conformance"},
    )
    undone = await _customer(stack, "+34 600 90 00 03")  # merged again for the unmerge to undo
    unmerge = await _api(
        stack, "POST", f"/api/customers/{customer.customer_id}/merge", {"from": undone["id"], "reason": "conformance"}
    )
    losing = await _customer(stack, "+34 600 90 00 04", "+34 600 90 00 05")  # gives up an identity
    webhook = await _api(
        stack, "POST", "/api/webhooks", {"url": "http://127.0.0.1:9/hook", "event_types": ["*"], "active": False}
    )
    gone_webhook = await _api(
        stack, "POST", "/api/webhooks", {"url": "http://127.0.0.1:9/gone", "event_types": ["*"], "active": False}
    )
    # A dead letter of the inactive subscription: a replay makes it pending, and it stays so (nothing is sent).
    event_id = await stack.pool.fetchval("SELECT max(id) FROM timeline_events")
    delivery = await stack.pool.fetchval(
        "INSERT INTO webhook_deliveries (subscription_id, event_id, state, attempts, dead_at, last_error)"
        " VALUES ($1, $2, 'dead', 3, now(), 'conformance') RETURNING id",
        uuid.UUID(webhook["id"]),
        event_id,
    )
    flows = await _api(stack, "GET", "/api/flows", status=200)
    await _api(stack, "PUT", f"/api/routing/queues/{THROWAWAY_QUEUE}", {"id": THROWAWAY_QUEUE, "name": "Gone"})
    for agent_id, phone in THROWAWAY_AGENTS.items():
        body = {"id": agent_id, "name": agent_id, "sip_endpoint": phone, "queues": ["sales"]}
        await _api(stack, "PUT", f"/api/routing/agents/{agent_id}", body)
    return Subjects(
        ids={
            "customer_id": str(rec.customer_id),
            "identity_id": str(losing["identity_ids"][0]),
            "merge_id": merge["id"],
            "case_id": case["id"],
            "delivery_id": str(delivery),
            "webhook_id": webhook["id"],
            "queue_id": "support",
            "agent_id": "alice",
            "interaction_id": str(rec.interaction_id),
            # supervisions live with a call: none here, so its operations answer 404 (a real one: test_supervision)
            "supervision_id": str(uuid.uuid4()),
            "recording_id": str(rec.id),
            "flow_id": flows["flows"][0]["id"],
            "address": "192.0.2.7",  # TEST-NET-1: never blocked, so 404
        },
        own={
            ("DELETE", "/api/customers/{customer_id}/identities/{identity_id}"): {"customer_id": losing["id"]},
            ("POST", "/api/merges/{merge_id}/unmerge"): {"merge_id": unmerge["id"]},
            ("DELETE", "/api/webhooks/{webhook_id}"): {"webhook_id": gone_webhook["id"]},
            ("PUT", "/api/routing/queues/{queue_id}"): {"queue_id": THROWAWAY_QUEUE},
            ("DELETE", "/api/routing/queues/{queue_id}"): {"queue_id": THROWAWAY_QUEUE},
            ("PUT", "/api/routing/agents/{agent_id}"): {"agent_id": "conformance"},
            ("DELETE", "/api/routing/agents/{agent_id}"): {"agent_id": "conformance-gone"},
            ("POST", "/api/agents/{agent_id}/state"): {"agent_id": "conformance"},
        },
    )


@dataclass
class Tally:
    failures: list[str] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    unbreakable: set[str] = field(default_factory=set)  # no input a negative request could break


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every operation of the document, the ones that delete last (they may take what others are given)."""
    found = [
        (method.upper(), path, entry)
        for path, item in document["paths"].items()
        for method, entry in item.items()
        if method in METHODS
    ]
    return sorted(found, key=lambda op: op[0] == "DELETE")


@dataclass
class Run:
    schema: Any  # schemathesis' view of the document
    base_url: str
    sessions: dict[str, str]  # role -> a credential of it: the API token (admin), console sessions
    subjects: Subjects
    mode: Any  # schemathesis.GenerationMode
    tally: Tally

    def operation(self, method: str, path: str, entry: dict[str, Any]) -> None:
        name = f"{method} {path}"
        names = [p["name"] for p in entry.get("parameters", []) if p["in"] == "path"]
        try:
            fixed = self.subjects.path_parameters(method, path, names) if names else None
        except LookupError as exc:
            self.tally.failures.append(str(exc))
            return
        roles = entry.get("x-roles")
        # The examples take turns with each role the operation admits (an admin's, a supervisor's of one
        # team, an agent's), so each role's own path (its scope, its refusals) is exercised too.
        allowed = [token for role, token in self.sessions.items() if roles is None or role in roles]
        strategy = self.schema[path][method].as_strategy(generation_mode=self.mode, path_parameters=fixed)
        first: list[schemathesis.Case[Any]] = []  # for the refusals, made once the operation has run

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],  # a failure is reported as found: shrinking costs minutes
        )
        @given(case=strategy)
        def exercise(case: schemathesis.Case[Any]) -> None:
            turn = self.tally.calls.get(name, 0)
            self.tally.calls[name] = turn + 1
            first[:] = first or [case]
            token = allowed[turn % len(allowed)]
            response = case.call(base_url=self.base_url, headers=bearer(token), timeout=10)
            case.validate_response(response, checks=CHECKS)

        try:
            exercise()
        except Unsatisfiable:
            # Negative generation has nothing to break in an operation without inputs: positive covers it.
            if self.mode != schemathesis.GenerationMode.NEGATIVE or entry.get("parameters") or entry.get("requestBody"):
                raise
            self.tally.unbreakable.add(name)
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is a BaseExceptionGroup
            self.tally.failures.append(f"{name}: {exc}")
        if roles is None or not first or self.mode != schemathesis.GenerationMode.POSITIVE:
            return
        try:
            _refuse(first[0], self.base_url, None, 401)
            if "agent" not in roles:
                _refuse(first[0], self.base_url, self.sessions["agent"], 403)
        except (Exception, BaseExceptionGroup) as exc:
            self.tally.failures.append(f"{name}, refused: {exc}")

    def all(self, document: dict[str, Any]) -> None:
        for method, path, entry in operations(document):
            if (method, path) not in EXCLUDED:
                self.operation(method, path, entry)


def _refuse(case: schemathesis.Case[Any], base_url: str, token: str | None, status: int) -> None:
    response = case.call(base_url=base_url, headers=bearer(token) if token else {}, timeout=10)
    who = "an agent" if token else "no credential"
    assert response.status_code == status, f"{who}: {response.status_code} {response.text[:200]}"
    case.validate_response(response, checks=CHECKS)


# Requests generated from the schema cannot succeed here (a body's id must repeat the path's): these valid
# ones, replacing what `subjects` created, get the declared 200 and its body.
KNOWN_GOOD = [
    (
        "PUT",
        "/api/routing/queues/{queue_id}",
        {"queue_id": THROWAWAY_QUEUE},
        {"id": THROWAWAY_QUEUE, "name": "Gone again", "priority": 2},
    ),
    (
        "PUT",
        "/api/routing/agents/{agent_id}",
        {"agent_id": "conformance"},
        {"id": "conformance", "name": "Renamed", "sip_endpoint": "agent-noanswer", "queues": ["support"]},
    ),
]


def known_good(run: Run) -> None:
    for method, path, path_parameters, body in KNOWN_GOOD:
        case = run.schema[path][method].Case(path_parameters=path_parameters, body=body, media_type="application/json")
        response = case.call(base_url=run.base_url, headers=bearer(run.sessions["admin"]), timeout=10)
        assert response.status_code == 200, (method, path, response.status_code, response.text[:300])
        case.validate_response(response, checks=CHECKS)


def signed_playback(run: Run, url: str) -> None:
    """A playback URL issued by POST …/url answers the declared audio (generated signatures never can)."""
    signed = URL(url)
    operation = run.schema["/api/recordings/{recording_id}/audio"]["GET"]
    case = operation.Case(path_parameters={"recording_id": signed.parts[3]}, query=dict(signed.query))
    response = case.call(base_url=run.base_url, timeout=10)
    assert (response.status_code, response.content[:4]) == (200, b"RIFF"), response.status_code
    case.validate_response(response, checks=CHECKS)


@pytest.mark.parametrize("mode", ["positive", "negative"])
async def test_generated_requests_get_declared_answers(stack: Stack, mode: str) -> None:
    document = await _api(stack, "GET", "/api/openapi.json", status=200)
    sessions = {
        "admin": stack.token,
        "supervisor": await sign_in(stack, "conformance-supervisor", "supervisor", teams=["front-office"]),
        "agent": await sign_in(stack, "conformance-agent", "agent", "alice"),
    }
    try:
        made = await subjects(stack)
        base_url = str(stack.client.make_url("")).rstrip("/")
        generation = (
            schemathesis.GenerationMode.POSITIVE if mode == "positive" else schemathesis.GenerationMode.NEGATIVE
        )
        tally = Tally()
        started = time.monotonic()
        run = Run(schemathesis.openapi.from_dict(document), base_url, sessions, made, generation, tally)
        await asyncio.to_thread(known_good, run)
        await asyncio.to_thread(run.all, document)
        issued = await _api(stack, "POST", f"/api/recordings/{made.ids['recording_id']}/url")
        await asyncio.to_thread(signed_playback, run, issued["url"])
        took = time.monotonic() - started
    finally:
        await stack.pool.execute("DELETE FROM agents WHERE id = ANY($1::text[])", list(THROWAWAY_AGENTS))
    print(f"{mode}: {sum(tally.calls.values())} requests over {len(tally.calls)} operations in {took:.1f} s")
    assert tally.failures == [], "\n\n".join(tally.failures)
    # an operation without inputs has one request to make (GET /api/openapi.json), the others several
    wanted = {
        f"{method} {path}": MIN_CALLS if entry.get("parameters") or entry.get("requestBody") else 1
        for method, path, entry in operations(document)
    }
    declared = set(wanted)
    excluded = {f"{method} {path}" for method, path in EXCLUDED}
    covered = declared - excluded - tally.unbreakable
    unexercised = sorted(name for name in covered if tally.calls.get(name, 0) < wanted[name])
    assert unexercised == [], f"operations not exercised (or only once or twice): {unexercised}"
    assert not excluded - declared, f"EXCLUDED names operations the document no longer has: {excluded - declared}"
