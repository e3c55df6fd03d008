"""Schemathesis against the live API: requests generated from /api/openapi.json (valid ones, and ones that
break the schema) never get a server error, and every answer has a declared status, content type and a
body matching the declared schema.

Schemathesis is synchronous (requests): it runs in a worker thread while the event loop serves the
in-process Hilo it talks to."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from crm_bridge import identity
from tests.stack.conftest import Stack

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

# Operations exercised, with fixed path parameters (a real customer) where the route takes one.
OPERATIONS = [
    ("GET", "/api/customers", False),
    ("POST", "/api/customers", False),
    ("GET", "/api/customers/{customer_id}", True),
    ("PATCH", "/api/customers/{customer_id}", True),
    ("POST", "/api/customers/{customer_id}/identities", True),
    ("GET", "/api/customers/{customer_id}/timeline", True),
    ("POST", "/api/customers/{customer_id}/cases", True),
    ("GET", "/api/webhooks/dead-letters", False),
]


def _run(document: dict[str, Any], base_url: str, token: str, customer_id: str, mode: Any) -> tuple[list[str], int]:
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    calls = 0
    for method, path, needs_customer in OPERATIONS:
        operation = schema[path][method]
        strategy = operation.as_strategy(
            generation_mode=mode, path_parameters={"customer_id": customer_id} if needs_customer else None
        )

        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        @given(case=strategy)
        def exercise(case: schemathesis.Case[Any]) -> None:
            nonlocal calls
            calls += 1
            response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
            case.validate_response(response, checks=CHECKS)

        try:
            exercise()
        except Exception as exc:
            failures.append(f"{method} {path}: {exc}")
    return failures, calls


@pytest.mark.parametrize("mode", ["positive", "negative"])
async def test_generated_requests_get_declared_answers(stack: Stack, mode: str) -> None:
    resp = await stack.client.get("/api/openapi.json")
    document = await resp.json()
    customer = await identity.identify_or_create(stack.pool, "phone", "+34 600 90 00 01", "ES")
    base_url = str(stack.client.make_url("")).rstrip("/")
    generation = schemathesis.GenerationMode.POSITIVE if mode == "positive" else schemathesis.GenerationMode.NEGATIVE
    failures, calls = await asyncio.to_thread(
        _run, document, base_url, stack.token, str(customer.customer_id), generation
    )
    assert failures == [], "\n\n".join(failures)
    assert calls >= 5 * len(OPERATIONS), calls
