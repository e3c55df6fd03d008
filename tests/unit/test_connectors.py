"""The CRM connector without a database: the mapping, reading a person out of an answer, the REST connector
against a small aiohttp server on loopback, and the time box of CallerEnrichment."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from crm_bridge import connectors
from crm_bridge.connectors import (
    CallerEnrichment,
    ConnectorConfigError,
    CrmError,
    Enriched,
    ExternalCustomer,
    FieldMapping,
    RestCrmConnector,
    parse_mapping,
    person_from,
)
from crm_bridge.timeline import Interaction
from hilo.settings import Settings

PHONE = "+34600112233"
SECRET = "Bearer s3cr3t-token-value"


# -- the mapping ------------------------------------------------------------------------------------


def test_the_default_mapping_reads_flat_fields() -> None:
    mapping = parse_mapping(Settings().crm_mapping)
    assert mapping == FieldMapping((), (("name",),), ("email",), ("id",), ("language",))


def test_a_mapping_with_a_record_path_indexes_and_a_composed_name() -> None:
    mapping = parse_mapping(
        '{"record": "data.results.0", "name": ["first", "last"], "email": "contact.emails.0", "external_id": "id"}'
    )
    assert mapping.record == ("data", "results", 0)
    assert mapping.name == (("first",), ("last",))
    assert mapping.email == ("contact", "emails", 0)
    assert mapping.language is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{nope", "HILO_CRM_MAPPING: not JSON"),
        ("[1]", "HILO_CRM_MAPPING: expected a JSON object"),
        ('{"nmae": "name"}', "unknown key(s) nmae"),
        ('{"record": "data"}', "maps none of name, email, external_id, language"),
        ('{"email": "a..b"}', "HILO_CRM_MAPPING.email: empty step in path 'a..b'"),
        ('{"email": 3}', "HILO_CRM_MAPPING.email: a path is a non-empty text"),
        ('{"name": {"x": 1}}', "HILO_CRM_MAPPING.name: a path, or a list of paths"),
        ('{"name": ["first", ""]}', "HILO_CRM_MAPPING.name[1]: a path is a non-empty text"),
    ],
)
def test_a_bad_mapping_names_the_setting_and_the_key(raw: str, message: str) -> None:
    with pytest.raises(ConnectorConfigError) as error:
        parse_mapping(raw)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"crm_url": "https://crm.example/api/people"}, "HILO_CRM_URL: must contain {phone}"),
        ({"crm_url": "https://crm.example/{region}/{phone}"}, "{phone} is the only placeholder"),
        ({"crm_url": "ftp://crm.example/{phone}"}, "HILO_CRM_URL: must be an http:// or https:// URL"),
        ({"crm_url": "https:///{phone}"}, "with a host"),
        ({"crm_url": "https://crm.example/{phone}", "crm_system": "Sales Force"}, "HILO_CRM_SYSTEM: system"),
        ({"crm_url": "https://crm.example/{phone}", "crm_auth_header": "X Key"}, "HILO_CRM_AUTH_HEADER"),
        ({"crm_url": "https://crm.example/{phone}", "crm_mapping": "{}"}, "HILO_CRM_MAPPING: maps none"),
    ],
)
def test_settings_that_cannot_work_stop_the_start(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConnectorConfigError) as error:
        connectors.from_settings(Settings(**overrides))
    assert message in str(error.value)


def test_no_url_means_no_connector() -> None:
    assert connectors.from_settings(Settings(crm_url="")) is None
    made = connectors.from_settings(Settings(crm_url="https://crm.example/people?phone={phone}", crm_system="acme"))
    assert made is not None and made.system == "acme"
    assert made.url_for(PHONE) == "https://crm.example/people?phone=%2B34600112233"


# -- reading the person -----------------------------------------------------------------------------

DEFAULT = parse_mapping(connectors.DEFAULT_MAPPING)


def test_a_person_is_read_and_put_in_canonical_form() -> None:
    doc = {"id": 4711, "name": " Lucía Pérez ", "email": "Lucia@Example.COM", "language": "es_es"}
    assert person_from(doc, DEFAULT, "acme") == ExternalCustomer(
        "acme", "Lucía Pérez", "lucia@example.com", "acme:4711", "es-ES", {}
    )


def test_a_list_answer_gives_its_first_person_and_an_empty_one_nobody() -> None:
    assert person_from([{"name": "A"}, {"name": "B"}], DEFAULT, "acme") == ExternalCustomer("acme", "A")
    assert person_from([], DEFAULT, "acme") is None
    assert person_from(None, DEFAULT, "acme") is None


def test_a_record_path_finds_the_person_deeper_in() -> None:
    mapping = parse_mapping({"record": "data.results.0", "name": ["first", "last"], "external_id": "ids.crm"})
    doc = {"data": {"results": [{"first": "Ada", "last": "Lovelace", "ids": {"crm": "C-1"}}]}}
    assert person_from(doc, mapping, "acme") == ExternalCustomer("acme", "Ada Lovelace", external_id="acme:C-1")
    assert person_from({"data": {"results": []}}, mapping, "acme") is None
    assert person_from({"data": {}}, mapping, "acme") is None


def test_unusable_values_are_left_out_and_named_without_the_value() -> None:
    doc = {"id": True, "name": "x" * 300, "email": "not-an-address", "language": "español"}
    person = person_from(doc, DEFAULT, "acme")
    assert person is not None
    assert (person.name, person.email, person.external_id, person.language) == (None, None, None, None)
    assert set(person.ignored) == {"external_id", "name", "email", "language"}
    assert "not-an-address" not in str(person.ignored) and "español" not in str(person.ignored)


def test_a_person_that_is_not_an_object_is_a_crm_error() -> None:
    with pytest.raises(CrmError, match="is a str, not an object"):
        person_from("Lucía", DEFAULT, "acme")


# -- the REST connector -----------------------------------------------------------------------------


class FakeCrm:
    """An aiohttp server on 127.0.0.1 that answers as told and remembers what it was asked."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.mode = "ok"
        app = web.Application()
        app.router.add_get("/people", self.people)
        self.server = TestServer(app, host="127.0.0.1")

    async def people(self, request: web.Request) -> web.StreamResponse:
        self.requests.append({"phone": request.query.get("phone"), "auth": request.headers.get("X-Api-Key")})
        if self.mode == "slow":
            await asyncio.sleep(5)
        if self.mode == "missing":
            return web.json_response({"error": "not found"}, status=404)
        if self.mode == "error":
            return web.json_response({"error": "boom"}, status=500)
        if self.mode == "garbage":
            return web.Response(text="<html>maintenance</html>", content_type="text/html")
        if self.mode == "redirect":
            raise web.HTTPFound("/elsewhere")
        return web.json_response([{"id": "77", "name": "Lucía Pérez", "email": "lucia@example.com"}])

    def url(self) -> str:
        return str(self.server.make_url("/people")) + "?phone={phone}"


@pytest.fixture
async def crm() -> AsyncIterator[FakeCrm]:
    fake = FakeCrm()
    await fake.server.start_server()
    yield fake
    await fake.server.close()


def connector_for(crm: FakeCrm, timeout_s: float = 2.0) -> RestCrmConnector:
    return RestCrmConnector(
        system="acme",
        url_template=crm.url(),
        mapping=DEFAULT,
        auth_header="X-Api-Key",
        auth_value=SecretStr(SECRET),
        timeout_s=timeout_s,
    )


async def test_the_connector_sends_the_number_and_the_secret_header(crm: FakeCrm) -> None:
    connector = connector_for(crm)
    try:
        found = await connector.find_by_phone(PHONE)
    finally:
        await connector.close()
    assert found == ExternalCustomer("acme", "Lucía Pérez", "lucia@example.com", "acme:77")
    assert crm.requests == [{"phone": PHONE, "auth": SECRET}]


@pytest.mark.parametrize(
    ("mode", "message"),
    [("error", "HTTP 500"), ("garbage", "not JSON"), ("redirect", "HTTP 302"), ("slow", "no answer within 0.3 s")],
)
async def test_a_failing_crm_is_a_crm_error_without_the_number(crm: FakeCrm, mode: str, message: str) -> None:
    crm.mode = mode
    connector = connector_for(crm, timeout_s=0.3)
    try:
        with pytest.raises(CrmError) as error:
            await connector.find_by_phone(PHONE)
    finally:
        await connector.close()
    assert message in str(error.value)
    assert "600112233" not in str(error.value) and SECRET not in str(error.value)


async def test_not_found_is_nobody(crm: FakeCrm) -> None:
    crm.mode = "missing"
    connector = connector_for(crm)
    try:
        assert await connector.find_by_phone(PHONE) is None
    finally:
        await connector.close()


async def test_a_crm_that_is_down_is_a_crm_error() -> None:
    connector = RestCrmConnector(system="acme", url_template="http://127.0.0.1:9/people?phone={phone}", mapping=DEFAULT)
    try:
        with pytest.raises(CrmError, match="request failed"):
            await connector.find_by_phone(PHONE)
    finally:
        await connector.close()


# -- the time box -----------------------------------------------------------------------------------


class SlowConnector:
    system = "acme"

    def __init__(self, delay_s: float, fail: bool = False) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.asked: list[str] = []
        self.closed = False

    async def find_by_phone(self, e164: str) -> ExternalCustomer | None:
        self.asked.append(e164)
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise CrmError("HTTP 503")
        return ExternalCustomer("acme", "Lucía Pérez", language="es")

    async def close(self) -> None:
        self.closed = True


class MemoryStore:
    def __init__(self) -> None:
        self.applied: list[ExternalCustomer] = []

    async def apply(self, interaction: Interaction, found: ExternalCustomer) -> Enriched | None:
        self.applied.append(found)
        return Enriched(interaction.customer_id, found.source, {"display_name": found.name or ""}, [], [])


def enrichment(connector: SlowConnector, store: MemoryStore, box_s: float = 0.2) -> CallerEnrichment:
    return CallerEnrichment(connector, store, box_s=box_s, timeout_s=2.0)  # type: ignore[arg-type]


def interaction() -> Interaction:
    return Interaction(uuid.uuid4(), uuid.uuid4(), "voice")


async def test_an_answer_within_the_box_gives_the_name_at_once() -> None:
    store = MemoryStore()
    hook = enrichment(SlowConnector(0.01), store)
    call = interaction()
    assert await hook.on_new_caller(call, call.customer_id, PHONE) == "Lucía Pérez"
    assert len(store.applied) == 1
    await hook.close()


async def test_a_slow_crm_costs_the_call_only_the_box_and_lands_later() -> None:
    store = MemoryStore()
    hook = enrichment(SlowConnector(0.6), store)
    call = interaction()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await hook.on_new_caller(call, call.customer_id, PHONE) is None
    assert loop.time() - started < 0.35
    assert store.applied == []
    await hook.wait_idle()
    assert [p.name for p in store.applied] == ["Lucía Pérez"]
    await hook.close()


async def test_the_same_customer_twice_at_once_is_looked_up_once() -> None:
    store = MemoryStore()
    connector = SlowConnector(0.1)
    hook = enrichment(connector, store, box_s=0.5)
    call = interaction()
    names = await asyncio.gather(
        hook.on_new_caller(call, call.customer_id, PHONE), hook.on_new_caller(call, call.customer_id, PHONE)
    )
    assert list(names) == ["Lucía Pérez", "Lucía Pérez"]
    assert connector.asked == [PHONE] and len(store.applied) == 1
    await hook.close()


async def test_a_failing_crm_is_logged_without_the_number(caplog: pytest.LogCaptureFixture) -> None:
    hook = enrichment(SlowConnector(0.01, fail=True), MemoryStore())
    call = interaction()
    with caplog.at_level(logging.WARNING, logger="crm_bridge.connectors"):
        assert await hook.on_new_caller(call, call.customer_id, PHONE) is None
    assert "HTTP 503" in caplog.text and "600112233" not in caplog.text
    await hook.close()


async def test_closing_cancels_lookups_still_running() -> None:
    store = MemoryStore()
    connector = SlowConnector(10)
    hook = enrichment(connector, store, box_s=0.05)
    call = interaction()
    assert await hook.on_new_caller(call, call.customer_id, PHONE) is None
    await asyncio.wait_for(hook.close(), 1)
    assert store.applied == [] and connector.closed
