"""Outside CRMs: ask the company's own CRM about a caller Hilo has never seen, and enrich the new customer.

`CrmConnector` is what any outside system offers (`find_by_phone`); `RestCrmConnector` is the generic one,
configured by settings (HILO_CRM_*): a URL template with `{phone}`, an auth header whose value is a secret,
and a JSON mapping of which response fields give the name, e-mail, external id and language.

`CallerEnrichment.on_new_caller` is the call's hook (ivr/inbound.py): for a caller just created by
identification it starts the lookup and waits at most the time box (HILO_CRM_TIMEBOX_S, default 0.8 s).
What lands within the box is there for the flow's greeting and the screen-pop; a slower CRM keeps going in
the background (up to HILO_CRM_TIMEOUT_S) and its enrichment lands later. A CRM that is down, slow or
answers nonsense never delays or fails the call: it is logged, without the caller's number or the secret.

`EnrichmentStore.apply` writes the enrichment: the name and language only where the customer has none
(a person may have set them meanwhile), the e-mail and external id through `identity.link_identity` (an
identity another customer owns is not taken from them: a `customer.identity_conflict` event says so), and
one `customer.enriched` event naming the source and the fields. The profile change and the events commit
in one transaction, before anything is published; a second enrichment of the same customer from the same
source finds that event and changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import aiohttp
import asyncpg
from pydantic import SecretStr

from crm_bridge import identity
from crm_bridge.timeline import Interaction, Timeline, append

log = logging.getLogger(__name__)

MAX_BODY = 1_000_000  # bytes of a CRM answer read at most: one person, not an export
MAX_NAME = 200
MAPPED_FIELDS = ("name", "email", "external_id", "language")
DEFAULT_MAPPING = {"name": "name", "email": "email", "external_id": "id", "language": "language"}
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class ConnectorConfigError(ValueError):
    """A HILO_CRM_* setting that cannot work; the message names the setting and the problem."""


class CrmError(Exception):
    """The CRM gave no usable answer. The message says what went wrong (HTTP status, not JSON, timeout)
    and never carries the caller's number, the URL or the secret."""


@dataclass(frozen=True)
class ExternalCustomer:
    """A person as an outside CRM knows them, every value already in canonical form."""

    source: str  # the CRM's system name (the namespace of its external ids)
    name: str | None = None
    email: str | None = None
    external_id: str | None = None  # `<system>:<id>`
    language: str | None = None  # BCP 47, e.g. `es`, `pt-BR`
    ignored: dict[str, str] = field(default_factory=dict)  # field -> why its value was not used (never the value)


class CrmConnector(Protocol):
    system: str

    async def find_by_phone(self, e164: str) -> ExternalCustomer | None: ...

    async def close(self) -> None: ...


# The mapping --------------------------------------------------------------------------------------

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class FieldMapping:
    """Where each field sits in the CRM's JSON answer. Paths are dotted (`data.person.email`, a number
    indexes a list: `results.0.id`). `record` is where the person is (default: the answer itself, or its
    first element when it is a list; an empty list or null means "not known"); the other paths start
    there. `name` may join several fields (`["first_name", "last_name"]`)."""

    record: Path = ()
    name: tuple[Path, ...] = ()
    email: Path | None = None
    external_id: Path | None = None
    language: Path | None = None


def parse_path(text: str, where: str) -> Path:
    if not isinstance(text, str) or not text.strip():
        raise ConnectorConfigError(f"{where}: a path is a non-empty text like 'data.0.email'")
    parts: list[str | int] = []
    for part in text.strip().split("."):
        if not part:
            raise ConnectorConfigError(f"{where}: empty step in path {text!r}")
        parts.append(int(part) if part.isdigit() else part)
    return tuple(parts)


def parse_mapping(raw: str | Mapping[str, Any], setting: str = "HILO_CRM_MAPPING") -> FieldMapping:
    """The mapping from its JSON text (or an already parsed object); ConnectorConfigError names the key."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ConnectorConfigError(f"{setting}: not JSON ({exc})") from None
    if not isinstance(raw, Mapping):
        raise ConnectorConfigError(f"{setting}: expected a JSON object like {json.dumps(DEFAULT_MAPPING)}")
    unknown = set(raw) - {*MAPPED_FIELDS, "record"}
    if unknown:
        raise ConnectorConfigError(
            f"{setting}: unknown key(s) {', '.join(sorted(unknown))} (known: record, {', '.join(MAPPED_FIELDS)})"
        )
    if not set(raw) & set(MAPPED_FIELDS):
        raise ConnectorConfigError(f"{setting}: maps none of {', '.join(MAPPED_FIELDS)}")
    name = raw.get("name")
    names = [name] if isinstance(name, str) else name if isinstance(name, list) else []
    if name is not None and not names:
        raise ConnectorConfigError(f"{setting}.name: a path, or a list of paths joined with spaces")

    def one(key: str) -> Path | None:
        return parse_path(raw[key], f"{setting}.{key}") if key in raw else None

    return FieldMapping(
        record=parse_path(raw["record"], f"{setting}.record") if "record" in raw else (),
        name=tuple(parse_path(p, f"{setting}.name[{i}]") for i, p in enumerate(names)),
        email=one("email"),
        external_id=one("external_id"),
        language=one("language"),
    )


_MISSING = object()


def dig(doc: Any, path: Path) -> Any:
    value = doc
    for step in path:
        if isinstance(step, int) and isinstance(value, list):
            if step >= len(value):
                return _MISSING
            value = value[step]
        elif isinstance(value, dict) and str(step) in value:
            value = value[str(step)]
        else:
            return _MISSING
    return value


def language_tag(text: str) -> str | None:
    """Canonical case of a BCP 47 tag (`PT_br` -> `pt-BR`), or None if it is not one."""
    if not _LANGUAGE.fullmatch(text):
        return None
    first, *rest = re.split(r"[-_]", text)
    parts = [first.lower()]
    for part in rest:
        parts.append(part.upper() if len(part) == 2 else part.title() if len(part) == 4 else part.lower())
    return "-".join(parts)


def person_from(doc: Any, mapping: FieldMapping, system: str) -> ExternalCustomer | None:
    """The person in a CRM answer, or None when the answer says nobody has this number. A field whose
    value is unusable is left out and named in `ignored` (with the reason, not the value)."""
    record = dig(doc, mapping.record)
    if isinstance(record, list) and not mapping.record:
        record = record[0] if record else None
    if record is _MISSING or record is None or record == []:
        return None
    if not isinstance(record, dict):
        raise CrmError(f"the person in the answer is a {type(record).__name__}, not an object")
    ignored: dict[str, str] = {}

    def text(name: str, path: Path | None) -> str | None:
        if path is None:
            return None
        value = dig(record, path)
        if value is _MISSING or value is None or value == "":
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            ignored[name] = f"a {type(value).__name__}, not text"
            return None
        return str(value).strip() or None

    parts = [text("name", p) for p in mapping.name]
    name = " ".join(p for p in parts if p) or None
    if name is not None and (not name.isprintable() or len(name) > MAX_NAME):
        ignored["name"] = f"control characters or longer than {MAX_NAME} characters"
        name = None
    email = text("email", mapping.email)
    if email is not None:
        try:
            email = identity.normalize("email", email)
        except identity.InvalidIdentity:
            ignored["email"] = "not an e-mail address"
            email = None
    external_id = text("external_id", mapping.external_id)
    if external_id is not None:
        try:
            external_id = identity.normalize("external", external_id, system=system)
        except identity.InvalidIdentity:
            ignored["external_id"] = "not a usable id (empty, too long or control characters)"
            external_id = None
    raw_language = text("language", mapping.language)
    language = language_tag(raw_language) if raw_language is not None else None
    if raw_language is not None and language is None:
        ignored["language"] = "not a language tag (e.g. es, pt-BR)"
    return ExternalCustomer(system, name, email, external_id, language, ignored)


# The generic REST connector -----------------------------------------------------------------------


def check_url_template(template: str, setting: str = "HILO_CRM_URL") -> str:
    if "{phone}" not in template:
        raise ConnectorConfigError(f"{setting}: must contain {{phone}} where the caller's number goes")
    if "{" in template.replace("{phone}", "") or "}" in template.replace("{phone}", ""):
        raise ConnectorConfigError(f"{setting}: {{phone}} is the only placeholder allowed")
    parts = urlsplit(template.replace("{phone}", "0"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectorConfigError(f"{setting}: must be an http:// or https:// URL with a host")
    return template


def check_system(system: str, setting: str = "HILO_CRM_SYSTEM") -> str:
    try:
        return identity.external_parts(identity.normalize("external", "probe", system=system))[0]
    except identity.InvalidIdentity as exc:
        raise ConnectorConfigError(f"{setting}: {exc.problem}") from None


class RestCrmConnector:
    """GET the URL template with the caller's E.164 number put in (URL-encoded), read the person out of the
    JSON answer with the mapping. 404, an empty list or null: not known. Any other non-2xx, a redirect
    (not followed: the auth header stays with the CRM), a body that is not JSON: CrmError."""

    def __init__(
        self,
        *,
        system: str,
        url_template: str,
        mapping: FieldMapping,
        auth_header: str = "Authorization",
        auth_value: SecretStr | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.system = check_system(system)
        self.url_template = check_url_template(url_template)
        if not _HEADER_NAME.fullmatch(auth_header):
            raise ConnectorConfigError(f"HILO_CRM_AUTH_HEADER: {auth_header!r} is not an HTTP header name")
        self.mapping = mapping
        self.auth_header = auth_header
        self.auth_value = auth_value
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def url_for(self, e164: str) -> str:
        return self.url_template.replace("{phone}", quote(e164, safe=""))

    async def find_by_phone(self, e164: str) -> ExternalCustomer | None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        headers = {"Accept": "application/json"}
        if self.auth_value is not None and self.auth_value.get_secret_value():
            headers[self.auth_header] = self.auth_value.get_secret_value()
        try:
            async with self._session.get(self.url_for(e164), headers=headers, allow_redirects=False) as resp:
                if resp.status == 404:
                    return None
                if not 200 <= resp.status < 300:
                    raise CrmError(f"HTTP {resp.status}")
                body = await resp.content.read(MAX_BODY + 1)
        except TimeoutError:
            raise CrmError(f"no answer within {self.timeout_s:g} s") from None
        except aiohttp.ClientError as exc:  # its text would carry the URL, and so the caller's number
            raise CrmError(f"request failed ({type(exc).__name__})") from None
        if len(body) > MAX_BODY:
            raise CrmError(f"answer larger than {MAX_BODY} bytes")
        try:
            doc = json.loads(body)
        except ValueError:
            raise CrmError("the answer is not JSON") from None
        return person_from(doc, self.mapping, self.system)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def from_settings(settings: Any) -> RestCrmConnector | None:
    """The connector HILO_CRM_URL asks for, or None when it is not set. Raises ConnectorConfigError on a
    setting that cannot work, so a server does not start half-configured."""
    if not settings.crm_url:
        return None
    return RestCrmConnector(
        system=settings.crm_system,
        url_template=settings.crm_url,
        mapping=parse_mapping(settings.crm_mapping),
        auth_header=settings.crm_auth_header,
        auth_value=settings.crm_auth,
        timeout_s=settings.crm_timeout_s,
    )


# Writing the enrichment ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Enriched:
    customer_id: uuid.UUID
    source: str
    fields: dict[str, str]  # profile fields set: display_name, preferred_language
    identities: list[dict[str, str]]  # the CRM's identities the customer has now
    conflicts: list[dict[str, str]]  # the CRM's identities another customer owns (left with them)


_ALREADY_ENRICHED = (
    "SELECT EXISTS (SELECT 1 FROM timeline_events WHERE customer_id = $1"
    " AND type = 'customer.enriched' AND data->>'source' = $2)"
)


class EnrichmentStore:
    def __init__(self, pool: asyncpg.Pool, timeline: Timeline) -> None:
        self.pool = pool
        self.timeline = timeline

    async def apply(self, interaction: Interaction, found: ExternalCustomer) -> Enriched | None:
        """Enrich the interaction's customer with what the CRM said; None when there was nothing to do
        (already enriched from this source, merged away meanwhile, or the CRM told nothing new)."""
        customer_id = interaction.customer_id
        if await self.pool.fetchval(_ALREADY_ENRICHED, customer_id, found.source):
            return None
        identities: list[dict[str, str]] = []
        conflicts: list[dict[str, str]] = []
        for kind, value in (("email", found.email), ("external", found.external_id)):
            if value is None:
                continue
            try:
                await identity.link_identity(self.pool, customer_id, kind, value)
            except identity.IdentityTaken as taken:
                conflicts.append({"kind": kind, "value": value, "owner_customer_id": str(taken.owner_id)})
                continue
            except (identity.MergedCustomer, identity.CustomerNotFound):
                log.info("customer %s was merged or removed before its enrichment from %s", customer_id, found.source)
                return None
            identities.append({"kind": kind, "value": value})
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT display_name, preferred_language, merged_into FROM customers WHERE id = $1 FOR UPDATE",
                customer_id,
            )
            # Under the row lock: of two enrichments at once, the second sees the first one's event.
            if row is None or row["merged_into"] is not None:
                return None
            if await conn.fetchval(_ALREADY_ENRICHED, customer_id, found.source):
                return None
            fields: dict[str, str] = {}
            if found.name and row["display_name"] is None:
                fields["display_name"] = found.name
            if found.language and row["preferred_language"] is None:
                fields["preferred_language"] = found.language
            if not (fields or identities or conflicts):
                return None
            if fields:
                sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, start=2))
                await conn.execute(
                    f"UPDATE customers SET {sets} WHERE id = $1",  # noqa: S608 (names are constants above)
                    customer_id,
                    *fields.values(),
                )
            data: dict[str, Any] = {"source": found.source, "fields": fields, "identities": identities}
            if conflicts:
                data["conflicts"] = conflicts
            if found.ignored:
                data["ignored"] = found.ignored
            events = [await append(conn, interaction.id, customer_id, interaction.channel, "customer.enriched", data)]
            for conflict in conflicts:
                events.append(
                    await append(
                        conn,
                        interaction.id,
                        customer_id,
                        interaction.channel,
                        "customer.identity_conflict",
                        {"source": found.source, **conflict},
                    )
                )
        for event in events:  # durable first, then fanned out
            await self.timeline.publish(event)
        return Enriched(customer_id, found.source, fields, identities, conflicts)


# The call's hook ----------------------------------------------------------------------------------


class CallerEnrichment:
    """Looks a new caller up in the CRM within a time box; what is slower lands in the background."""

    def __init__(self, connector: CrmConnector, store: EnrichmentStore, *, box_s: float, timeout_s: float) -> None:
        self.connector = connector
        self.store = store
        self.box_s = box_s
        self.timeout_s = timeout_s
        self._running: dict[uuid.UUID, asyncio.Task[Enriched | None]] = {}

    async def on_new_caller(self, interaction: Interaction, customer_id: uuid.UUID, e164: str) -> str | None:
        """The hook of ivr/inbound.py: returns the caller's name if the CRM gave one within the box."""
        task = self._running.get(customer_id)
        if task is None:  # one lookup per customer at a time
            task = asyncio.create_task(self._enrich(interaction, e164), name=f"crm-enrich-{customer_id}")
            self._running[customer_id] = task
            task.add_done_callback(lambda _: self._running.pop(customer_id, None))
        done, _ = await asyncio.wait({task}, timeout=self.box_s)
        if not done or task.cancelled():
            return None
        result = task.result()  # _enrich never raises
        return result.fields.get("display_name") if result else None

    async def _enrich(self, interaction: Interaction, e164: str) -> Enriched | None:
        system = self.connector.system
        try:
            async with asyncio.timeout(self.timeout_s):
                found = await self.connector.find_by_phone(e164)
                if found is None:
                    log.info("CRM %s does not know the caller of interaction %s", system, interaction.id)
                    return None
                return await self.store.apply(interaction, found)
        except CrmError as exc:
            log.warning("CRM %s lookup for interaction %s failed: %s", system, interaction.id, exc)
        except TimeoutError:
            log.warning(
                "CRM %s gave no enrichment for interaction %s within %g s", system, interaction.id, self.timeout_s
            )
        except Exception as exc:  # never the call's problem; the text may carry data, so only its kind
            log.error("CRM %s enrichment for interaction %s failed: %s", system, interaction.id, type(exc).__name__)
        return None

    async def wait_idle(self) -> None:
        """Until every lookup in the background has finished (tests, shutdown)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        for task in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.connector.close()
