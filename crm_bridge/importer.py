"""Bulk customer import from a CSV file (`hilo customers import`).

The file has a header line naming its columns, any of:
  name, phone, email, whatsapp, external_id (`<system>:<id>`), language (e.g. `es`, `pt-BR`),
  preferred_channel (voice, sms, whatsapp, webchat, email)
and every row needs at least one identity (phone, email, whatsapp or external_id). Each row is validated
and put in canonical form in Python with `identity.normalize`; a bad row is rejected with its line number
and a reason naming the field, copied to `<file>.rejected.csv`, and the import goes on.

Which customer a row is, in file order (so the outcome does not depend on where batches split):
- none of its identities is known: a new customer;
- they all belong to one customer (already in the store, or made by an earlier row of this file): that
  customer, enriched with the row's other identities and its non-empty name, language and channel (an
  empty cell never erases what the store has);
- they belong to two or more different customers: the row is rejected as a conflict. The import never
  merges customers; an agent merges them (with an audit trail), then the row can be imported again.
A customer's name, language and channel each become the first non-empty value the file gives for them,
replacing what the store had (an empty cell never erases). The first, not the last: a later row cannot be
known before its batch, and with the first the outcome does not depend on where batches split. Importing
the same file twice therefore changes nothing the second time.

Loading: rows are read in batches; each batch runs in one transaction on one connection: its identities
go by COPY into a temporary table and are matched against the store with one join (locking the customers
they belong to, so a merge cannot move them meanwhile), the batch is planned in Python, the plan goes by
COPY into two more temporary tables, and set-based INSERT ... ON CONFLICT / UPDATE statements apply it.
A first contact on a live call racing the import for the same identity is detected (an identity not owned
by the customer the plan says) and the batch is planned again."""

from __future__ import annotations

import asyncio
import csv
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TextIO

import asyncpg
import phonenumbers

from crm_bridge.identity import InvalidIdentity, normalize

if TYPE_CHECKING:
    import _csv

    from hilo.db import Conn

log = logging.getLogger(__name__)

COLUMNS = ("name", "phone", "email", "whatsapp", "external_id", "language", "preferred_channel")
# CSV column -> identity kind
IDENTITY_COLUMNS = {"phone": "phone", "email": "email", "whatsapp": "whatsapp", "external_id": "external"}
_COLUMN_OF_KIND = {kind: column for column, kind in IDENTITY_COLUMNS.items()}
# Same list as the customers.preferred_channel check in migration 002.
CHANNELS = ("voice", "sms", "whatsapp", "webchat", "email")
BATCH_SIZE = 50_000
MAX_NAME = 200
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}")
_RETRIES = 8
_BACKOFF_S = 0.05  # before the nth retry: up to n times this, at random (racers get out of the way)
_KEEP_REJECTED = 100

Key = tuple[str, str]  # (kind, canonical value)


class ImportFileError(Exception):
    """The file as a whole cannot be imported (missing, empty, bad header): nothing was imported."""


class ImportAborted(Exception):
    """A batch could not be applied (e.g. it kept racing live first contacts); earlier batches stay."""


# Reading and validating rows ----------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    columns: tuple[str, ...]  # the file's columns, in file order, lowercased

    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.columns)}


# Rows are named tuples: cheap to make and to pickle to and from the validation worker.


class RawRow(NamedTuple):
    line: int  # the line the record starts on (a quoted field may span lines)
    fields: list[str]
    error: str | None = None  # the CSV reader's complaint, if it could not read the record


class CustomerRow(NamedTuple):
    """A valid row, normalised (its raw fields stay with the batch's RawRows)."""

    line: int
    name: str | None
    language: str | None
    channel: str | None
    identities: tuple[Key, ...]


class Rejected(NamedTuple):
    line: int
    fields: list[str]  # as read, for the rejected file
    reason: str


def parse_header(path: Path, fields: list[str]) -> Header:
    names = [f.strip().lower() for f in fields]
    for position, name in enumerate(names, 1):
        if not name:
            raise ImportFileError(f"{path}:1: header column {position} has no name")
        if name not in COLUMNS:
            raise ImportFileError(f"{path}:1: unknown column {fields[position - 1]!r} (known: {', '.join(COLUMNS)})")
        if names.index(name) != position - 1:
            raise ImportFileError(f"{path}:1: column {name!r} appears twice")
    if not set(names) & IDENTITY_COLUMNS.keys():
        raise ImportFileError(
            f"{path}:1: no identity column: the header needs at least one of {', '.join(IDENTITY_COLUMNS)}"
        )
    return Header(tuple(names))


class CsvSource:
    """The rows of a CSV file, header checked. UTF-8 with or without a byte-order mark; bytes that are not
    UTF-8 reject their row (not the file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file: TextIO = path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")
        except OSError as exc:
            raise ImportFileError(f"{path}: cannot open: {exc.strerror}") from exc
        self._reader = csv.reader(self._file, strict=True)
        first = self._next()
        while first is not None and first.error is None and not first.fields:
            first = self._next()  # blank lines before the header
        if first is None or first.line != 1:
            self.close()
            raise ImportFileError(
                f"{self.path}: empty file: the first line must be a header naming the columns"
                f" (any of {', '.join(COLUMNS)})"
                if first is None
                else f"{self.path}:1: the first line must be the header, not blank"
            )
        if first.error is not None:
            self.close()
            raise ImportFileError(f"{self.path}:1: header not readable as CSV: {first.error}")
        try:
            self.header = parse_header(path, first.fields)
        except ImportFileError:
            self.close()
            raise

    def _next(self) -> RawRow | None:
        start = self._reader.line_num + 1
        try:
            fields = next(self._reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            return RawRow(start, [], f"not readable as CSV: {exc}")
        return RawRow(start, fields)

    def batches(self, size: int) -> Iterator[list[RawRow]]:
        batch: list[RawRow] = []
        while (row := self._next()) is not None:
            if not row.fields and row.error is None:
                continue  # blank line
            batch.append(row)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def close(self) -> None:
        self._file.close()


def validate_batch(header: Header, rows: Sequence[RawRow], region: str | None) -> list[CustomerRow | Rejected]:
    """Validate and normalise rows (a pure function: it runs in a worker process during big imports)."""
    index = header.index()
    return [validate_row(header, index, row, region) for row in rows]


def validate_row(header: Header, index: Mapping[str, int], row: RawRow, region: str | None) -> CustomerRow | Rejected:
    if row.error is not None:
        return Rejected(row.line, row.fields, row.error)
    if len(row.fields) != len(header.columns):
        return Rejected(
            row.line, row.fields, f"{len(row.fields)} fields, but the header has {len(header.columns)} columns"
        )
    problems: list[str] = []

    def cell(column: str) -> str | None:
        at = index.get(column)
        if at is None:
            return None
        text = row.fields[at].strip()
        if not text:
            return None
        if any("\udc80" <= ch <= "\udcff" for ch in text):
            problems.append(f"{column}: not valid UTF-8")
            return None
        return text

    identities: list[Key] = []
    for column, kind in IDENTITY_COLUMNS.items():
        raw = cell(column)
        if raw is None:
            continue
        try:
            key = (kind, normalize(kind, raw, region))
        except InvalidIdentity as exc:
            problems.append(f"{column}: {exc.problem}")
            continue
        if key not in identities:
            identities.append(key)
    name = cell("name")
    if name is not None:
        if not name.isprintable():
            problems.append("name: contains control characters")
        elif len(name) > MAX_NAME:
            problems.append(f"name: longer than {MAX_NAME} characters")
    language = cell("language")
    if language is not None:
        if _LANGUAGE.fullmatch(language):
            language = _language_tag(language)
        else:
            problems.append(f"language: {language!r} is not a language tag (e.g. es, pt-BR)")
    channel = cell("preferred_channel")
    if channel is not None:
        channel = channel.lower()
        if channel not in CHANNELS:
            problems.append(f"preferred_channel: {channel!r} is not one of {', '.join(CHANNELS)}")
    if not identities and not problems:
        problems.append(f"no identity: a row needs at least one of {', '.join(IDENTITY_COLUMNS)}")
    if problems:
        return Rejected(row.line, row.fields, "; ".join(problems))
    return CustomerRow(row.line, name, language, channel, tuple(identities))


def _language_tag(text: str) -> str:
    """Canonical case of a language tag: language lowercase, script Titlecase, region uppercase."""
    first, *rest = re.split(r"[-_]", text)
    parts = [first.lower()]
    for part in rest:
        parts.append(part.upper() if len(part) == 2 else part.title() if len(part) == 4 else part.lower())
    return "-".join(parts)


# Planning a batch ---------------------------------------------------------------------------------


class Attrs(NamedTuple):
    name: str | None
    language: str | None
    channel: str | None

    def given_by(self, row: CustomerRow, given: int) -> tuple[Attrs, int]:
        """These attributes after `row`, which sets those the file has not given yet (`given`: a bit per
        attribute, in field order); returns them and the bits given now."""
        values = list(self)
        for i, value in enumerate((row.name, row.language, row.channel)):
            if value is not None and not given & (1 << i):
                values[i] = value
                given |= 1 << i
        return Attrs(*values), given


@dataclass
class BatchPlan:
    creates: dict[uuid.UUID, Attrs] = field(default_factory=dict)
    updates: dict[uuid.UUID, Attrs] = field(default_factory=dict)  # existing customers whose attributes change
    # every identity of every accepted row with the customer it must belong to; `True` when it is to be added
    claims: dict[Key, tuple[uuid.UUID, bool]] = field(default_factory=dict)
    matched: set[uuid.UUID] = field(default_factory=set)  # existing customers the batch's rows are
    enriched: set[uuid.UUID] = field(default_factory=set)  # existing customers the batch changes
    # every customer the batch's rows are, with the attributes the file has given it so far (bits)
    given: dict[uuid.UUID, int] = field(default_factory=dict)
    conflicts: list[Rejected] = field(default_factory=list)
    accepted: int = 0


def plan_batch(
    rows: Sequence[CustomerRow],
    owners: Mapping[Key, uuid.UUID],
    existing: Mapping[uuid.UUID, Attrs],
    merged: Mapping[uuid.UUID, uuid.UUID] | None = None,
    given: Mapping[uuid.UUID, int] | None = None,
    new_id: Callable[[], uuid.UUID] | None = None,
) -> BatchPlan:
    """Which customer each row is and what to write, rows taken in file order (see the module docstring).

    Conflicting rows come back as Rejected without their fields (the caller has them).
    `owners`: the customer each already-known identity of the batch belongs to; `existing`: those
    customers' attributes; `merged`: any of them merged into another customer (identities move with a
    merge, so this only happens if the store is inconsistent: such rows are rejected, not guessed);
    `given`: the attributes earlier batches of the file gave to customers (see Attrs.given_by)."""
    plan = BatchPlan()
    earlier = given or {}
    new_id = new_id or time_ordered_id
    owner = dict(owners)
    current = dict(existing)
    origin: dict[uuid.UUID, int] = {}  # line that created each new customer
    merged = merged or {}
    for row in rows:
        found: dict[uuid.UUID, list[str]] = {}
        for key in row.identities:
            if key in owner:
                found.setdefault(owner[key], []).append(_COLUMN_OF_KIND[key[0]])
        gone = [cid for cid in found if cid in merged]
        if gone:
            plan.conflicts.append(
                Rejected(
                    row.line,
                    [],
                    "; ".join(
                        f"{', '.join(found[cid])}: belongs to customer {cid}, merged into {merged[cid]}" for cid in gone
                    ),
                )
            )
            continue
        if len(found) > 1:
            owners_said = "; ".join(
                f"{', '.join(columns)} -> customer {cid}"
                + (f" (created from line {origin[cid]})" if cid in origin else "")
                for cid, columns in found.items()
            )
            plan.conflicts.append(
                Rejected(
                    row.line,
                    [],
                    f"conflict: the row's identities belong to different customers ({owners_said});"
                    " merge those customers first, or split the row",
                )
            )
            continue
        plan.accepted += 1
        if not found:
            cid = new_id()
            origin[cid] = row.line
            current[cid], plan.given[cid] = Attrs(None, None, None).given_by(row, 0)
            plan.creates[cid] = current[cid]
        else:
            (cid,) = found
            current[cid], plan.given[cid] = current[cid].given_by(row, plan.given.get(cid, earlier.get(cid, 0)))
            if cid in plan.creates:
                plan.creates[cid] = current[cid]
            else:
                plan.matched.add(cid)
        for key in row.identities:
            if key in owner:
                plan.claims.setdefault(key, (cid, False))
                continue
            owner[key] = cid
            plan.claims[key] = (cid, True)
            if cid not in plan.creates:
                plan.enriched.add(cid)
    for cid in plan.matched:
        if current[cid] != existing[cid]:
            plan.updates[cid] = current[cid]
            plan.enriched.add(cid)
    return plan


class _Clock:
    last_ms = 0
    counter = 0


def time_ordered_id() -> uuid.UUID:
    """A version-7 UUID (RFC 9562): milliseconds since the epoch, a 12-bit counter, 62 random bits. An import's
    new customers get ascending ids, so their rows land at the right-hand edge of the customers primary key
    and of the identities_customer index instead of on random pages of indexes that outgrow PostgreSQL's
    buffers. Any UUID is a valid customer id; the rest of Hilo keeps using random (v4) ones."""
    ms = time.time_ns() // 1_000_000
    if ms > _Clock.last_ms:
        _Clock.last_ms, _Clock.counter = ms, 0
    else:  # same millisecond (or the clock stepped back): count on, borrowing the next millisecond if full
        _Clock.counter += 1
        if _Clock.counter > 0xFFF:
            _Clock.last_ms, _Clock.counter = _Clock.last_ms + 1, 0
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    return uuid.UUID(int=(_Clock.last_ms << 80) | (0x7 << 76) | (_Clock.counter << 64) | (0b10 << 62) | rand)


# Applying batches ---------------------------------------------------------------------------------


@dataclass
class Summary:
    rows: int = 0  # data rows read (blank lines not counted)
    imported: int = 0  # rows applied to a customer
    rejected: int = 0  # rows refused (invalid or conflicting), listed in the rejected file
    created: int = 0  # customers
    updated: int = 0
    unchanged: int = 0
    rejected_file: Path | None = None
    dry_run: bool = False

    def __str__(self) -> str:
        head = "dry run, nothing written: " if self.dry_run else ""
        return (
            f"{head}{self.rows} rows: {self.imported} imported, {self.rejected} rejected;"
            f" customers: {self.created} created, {self.updated} updated, {self.unchanged} unchanged"
        )


class _Race(Exception):
    """The store changed under the batch (a live first contact or a merge): plan it again."""


_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS import_keys (kind text NOT NULL, value text NOT NULL) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS import_customers (
    id uuid NOT NULL, created boolean NOT NULL,
    display_name text, preferred_language text, preferred_channel text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS import_identities (
    customer_id uuid NOT NULL, kind text NOT NULL, value text NOT NULL, new boolean NOT NULL
) ON COMMIT DELETE ROWS;
"""
_DROP_STAGING = "DROP TABLE IF EXISTS import_keys, import_customers, import_identities"

# The customers the batch's known identities belong to, locked in id order (the order merges lock in) so
# a merge cannot move those identities before the batch commits.
_OWNERS = """
SELECT k.kind, k.value, c.id, c.merged_into, c.display_name, c.preferred_language, c.preferred_channel
FROM import_keys k
JOIN identities i ON i.kind = k.kind AND i.value = k.value
JOIN customers c ON c.id = i.customer_id
ORDER BY c.id
"""

_INSERT_CUSTOMERS = """
INSERT INTO customers (id, display_name, preferred_language, preferred_channel)
SELECT id, display_name, preferred_language, preferred_channel FROM import_customers WHERE created
ON CONFLICT (id) DO NOTHING
"""
_UPDATE_CUSTOMERS = """
UPDATE customers c SET display_name = s.display_name, preferred_language = s.preferred_language,
    preferred_channel = s.preferred_channel
FROM import_customers s WHERE s.id = c.id AND NOT s.created AND c.merged_into IS NULL
"""
_INSERT_IDENTITIES = """
INSERT INTO identities (customer_id, kind, value)
SELECT customer_id, kind, value FROM import_identities WHERE new
ON CONFLICT (kind, value) DO NOTHING
"""
# Claims the store disagrees with: an identity a concurrent first contact took, or one a merge moved.
_MISMATCHES = """
SELECT count(*) FROM import_identities s
LEFT JOIN identities i ON i.kind = s.kind AND i.value = s.value
WHERE i.customer_id IS DISTINCT FROM s.customer_id
"""


@dataclass
class _Known:
    """What a dry run would have written so far: later batches must see it, since the store does not."""

    owners: dict[Key, uuid.UUID] = field(default_factory=dict)
    attrs: dict[uuid.UUID, Attrs] = field(default_factory=dict)

    def remember(self, plan: BatchPlan) -> None:
        self.attrs.update(plan.creates)
        self.attrs.update(plan.updates)
        for key, (cid, new) in plan.claims.items():
            if new:
                self.owners[key] = cid


class Importer:
    """Imports one CSV file over one connection; `run` returns the summary."""

    def __init__(
        self,
        conn: Conn,
        path: Path,
        region: str | None,
        *,
        dry_run: bool = False,
        batch_size: int = BATCH_SIZE,
        workers: int = 1,
        progress: Callable[[int], object] | None = None,
    ) -> None:
        if region is not None and region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {region!r}: give an ISO 3166 code such as ES")
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        self.conn = conn
        self.path = path
        self.region = region.upper() if region else None
        self.dry_run = dry_run
        self.batch_size = batch_size
        self.workers = workers
        self.progress = progress or (lambda rows: None)
        self.summary = Summary(dry_run=dry_run, rejected_file=rejected_path(path))
        # every customer the file's rows are, with the attributes the file gave it (Attrs.given_by)
        self._given: dict[uuid.UUID, int] = {}
        self._created: set[uuid.UUID] = set()
        self._enriched: set[uuid.UUID] = set()
        self._known = _Known() if dry_run else None
        self._rejects: _csv.Writer | None = None
        # the first rejections (reasons, without the rows' data) for the caller to show; all are in the file
        self.rejected_lines: list[Rejected] = []
        self._rejects_file: TextIO | None = None

    async def run(self) -> Summary:
        source = CsvSource(self.path)
        executor: Executor | None = None
        try:
            if self.workers > 0:
                # Validation (phonenumbers) is the CPU-heavy part: a worker validates the next batch while
                # this process and PostgreSQL apply the current one.
                executor = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"))
            await self.conn.execute(_STAGING)
            await self._run(source, executor)
        finally:
            source.close()
            if executor is not None:
                executor.shutdown(cancel_futures=True)
            if self._rejects_file is not None:
                self._rejects_file.close()
            if not self.conn.is_closed():
                await self.conn.execute(_DROP_STAGING)
        s = self.summary
        s.created = len(self._created)
        s.updated = len(self._enriched - self._created)
        s.unchanged = len(self._given) - s.created - s.updated
        if s.rejected == 0:
            assert s.rejected_file is not None
            s.rejected_file.unlink(missing_ok=True)  # a stale list from an earlier run would mislead
            s.rejected_file = None
        return s

    async def _run(self, source: CsvSource, executor: Executor | None) -> None:
        loop = asyncio.get_running_loop()
        batches = source.batches(self.batch_size)
        Checked = asyncio.Future[list[CustomerRow | Rejected]]

        def validate_next() -> tuple[list[RawRow], Checked] | None:
            raw = next(batches, None)
            if raw is None:
                return None
            if executor is None:
                done: Checked = loop.create_future()
                done.set_result(validate_batch(source.header, raw, self.region))
                return raw, done
            return raw, loop.run_in_executor(executor, validate_batch, source.header, raw, self.region)

        pending = validate_next()
        while pending is not None:
            raw, checking = pending
            checked = await checking
            pending = validate_next()
            await self._apply(source.header, raw, checked)
            self.progress(len(checked))

    async def _apply(self, header: Header, raw: list[RawRow], checked: list[CustomerRow | Rejected]) -> None:
        rows = [r for r in checked if isinstance(r, CustomerRow)]
        invalid = [r for r in checked if isinstance(r, Rejected)]
        for attempt in range(1, _RETRIES + 1):
            try:
                plan = await self._apply_once(rows)
                break
            except (_Race, asyncpg.DeadlockDetectedError) as exc:
                log.info(
                    "import batch from line %d raced the live store (%s), attempt %d", checked[0].line, exc, attempt
                )
                await asyncio.sleep(random.uniform(0, attempt * _BACKOFF_S))
        else:
            raise ImportAborted(
                f"{self.path}: the batch from line {checked[0].line} kept racing live changes to the same"
                f" customers after {_RETRIES} attempts; earlier batches are imported, run the import again"
            )
        self._given.update(plan.given)
        self._created.update(plan.creates)
        self._enriched.update(plan.enriched)
        if self._known is not None:
            self._known.remember(plan)
        self.summary.rows += len(checked)
        self.summary.imported += plan.accepted
        if plan.conflicts:
            fields = {r.line: r.fields for r in raw}
            invalid += [r._replace(fields=fields[r.line]) for r in plan.conflicts]
        rejected = sorted(invalid, key=lambda r: r.line)
        self.summary.rejected += len(rejected)
        if rejected:
            self._write_rejects(header, rejected)

    async def _apply_once(self, rows: list[CustomerRow]) -> BatchPlan:
        if not rows:
            return BatchPlan()
        conn = self.conn
        async with conn.transaction():
            keys = {key for row in rows for key in row.identities}
            await conn.copy_records_to_table("import_keys", records=keys)
            await conn.execute("ANALYZE import_keys")
            found = await conn.fetch(_OWNERS if self.dry_run else _OWNERS + " FOR SHARE OF c")
            owners = {(r["kind"], r["value"]): r["id"] for r in found}
            existing = {
                r["id"]: Attrs(r["display_name"], r["preferred_language"], r["preferred_channel"]) for r in found
            }
            merged = {r["id"]: r["merged_into"] for r in found if r["merged_into"] is not None}
            if self._known is not None:
                # A dry run's earlier batches wrote nothing: what they would have written comes first.
                owners.update((key, self._known.owners[key]) for key in keys if key in self._known.owners)
                existing.update(
                    (cid, self._known.attrs[cid]) for cid in set(owners.values()) if cid in self._known.attrs
                )
            plan = plan_batch(rows, owners, existing, merged, self._given)
            if self.dry_run:
                return plan
            await self._write(plan)
            return plan

    async def _write(self, plan: BatchPlan) -> None:
        conn = self.conn
        customers = [(cid, True, a.name, a.language, a.channel) for cid, a in plan.creates.items()]
        customers += [(cid, False, a.name, a.language, a.channel) for cid, a in plan.updates.items()]
        if customers:
            await conn.copy_records_to_table("import_customers", records=customers)
        claims = [(cid, kind, value, new) for (kind, value), (cid, new) in plan.claims.items()]
        await conn.copy_records_to_table("import_identities", records=claims)
        await conn.execute("ANALYZE import_identities")
        if plan.creates:
            await conn.execute(_INSERT_CUSTOMERS)
        if plan.updates:
            status = await conn.execute(_UPDATE_CUSTOMERS)
            if int(status.split()[-1]) != len(plan.updates):
                raise _Race("a customer to update was merged meanwhile")
        await conn.execute(_INSERT_IDENTITIES)
        mismatches = await conn.fetchval(_MISMATCHES)
        if mismatches:
            raise _Race(f"{mismatches} identities were taken or moved meanwhile")

    def _write_rejects(self, header: Header, rejected: list[Rejected]) -> None:
        if self._rejects is None:
            assert self.summary.rejected_file is not None
            # The rows as read, personal data included: readable by this user only, whatever the umask (and
            # a list left by an earlier run, whatever its mode, is made so before it is overwritten).
            fd = os.open(self.summary.rejected_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            os.fchmod(fd, 0o600)
            self._rejects_file = os.fdopen(fd, "w", newline="", encoding="utf-8", errors="surrogateescape")
            self._rejects = csv.writer(self._rejects_file)
            self._rejects.writerow(["line", "reason", *header.columns])
        for r in rejected:
            self._rejects.writerow([r.line, r.reason, *r.fields])
        room = max(0, _KEEP_REJECTED - len(self.rejected_lines))
        self.rejected_lines.extend(r._replace(fields=[]) for r in rejected[:room])


def rejected_path(path: Path) -> Path:
    """`customers.csv` -> `customers.rejected.csv` (beside the file)."""
    stem = path.name[: -len(".csv")] if path.name.lower().endswith(".csv") else path.name
    return path.with_name(f"{stem}.rejected.csv")


def estimate_rows(path: Path) -> int:
    """Data rows in the file, counted as line breaks (quoted fields spanning lines make it an over-estimate);
    for the progress bar only."""
    count = 0
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                count += chunk.count(b"\n")
    except OSError:
        return 0  # the import itself says what is wrong with the file
    return max(count - 1, 0)
