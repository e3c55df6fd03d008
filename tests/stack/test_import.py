"""The bulk customer import against the real PostgreSQL test database: idempotent re-runs, enriching known
customers, conflicts rejected (never merged), bad rows reported by line, dry runs, batch boundaries, and
first contacts on live calls racing the import."""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import stat
from pathlib import Path

import pytest

from crm_bridge import identity
from crm_bridge.import_cli import run_customers_command
from crm_bridge.importer import Importer, Summary
from tests.stack.conftest import Stack

HEADER = "name,phone,email,whatsapp,external_id,language,preferred_channel\n"
GOOD = (
    HEADER + "Marta Ruiz,600 10 00 01,marta@example.com,,crm:m1,es,voice\n"
    "Rui Costa,+351 912 345 678,,351912345678,,pt-PT,whatsapp\n"
    # same person as line 2, met again by e-mail and CRM id: enriches that customer, no new one
    "Marta R.,,MARTA@example.com,,crm:m1,,sms\n"
    "Li Wei,0034 600 10 00 03,li@example.com,,,en,\n"
)


async def run(stack: Stack, path: Path, *, dry_run: bool = False, batch_size: int = 50_000) -> Summary:
    async with stack.pool.acquire() as conn:
        return await Importer(conn, path, "ES", dry_run=dry_run, batch_size=batch_size, workers=0).run()


async def counts(stack: Stack) -> tuple[int, int]:
    row = await stack.pool.fetchrow(
        "SELECT (SELECT count(*) FROM customers) AS customers, (SELECT count(*) FROM identities) AS identities"
    )
    assert row is not None
    return row["customers"], row["identities"]


async def customer_of(stack: Stack, kind: str, value: str) -> dict[str, object]:
    row = await stack.pool.fetchrow(
        "SELECT c.id, c.display_name, c.preferred_language, c.preferred_channel,"
        " array_agg(j.kind || ':' || j.value ORDER BY j.kind, j.value) AS identities"
        " FROM identities i JOIN customers c ON c.id = i.customer_id JOIN identities j ON j.customer_id = c.id"
        " WHERE i.kind = $1 AND i.value = $2 GROUP BY c.id",
        kind,
        value,
    )
    assert row is not None, f"no customer with {kind} {value}"
    return dict(row)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "customers.csv"
    path.write_text(text, encoding="utf-8")
    return path


async def test_importing_the_same_file_twice_changes_nothing_the_second_time(stack: Stack, tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    before = await counts(stack)

    first = await run(stack, path)
    assert (first.rows, first.imported, first.rejected) == (4, 4, 0)
    assert (first.created, first.updated, first.unchanged) == (3, 0, 0)
    after_first = await counts(stack)
    # 3 customers; identities: Marta phone+email+crm, Rui phone+whatsapp, Li phone+email
    assert after_first == (before[0] + 3, before[1] + 7)
    marta = await customer_of(stack, "email", "marta@example.com")
    # the first value the file gives wins; the later row's empty language cell erased nothing
    assert (marta["display_name"], marta["preferred_language"], marta["preferred_channel"]) == (
        "Marta Ruiz",
        "es",
        "voice",
    )
    assert marta["identities"] == ["email:marta@example.com", "external:crm:m1", "phone:+34600100001"]
    assert (await customer_of(stack, "whatsapp", "+351912345678"))["preferred_language"] == "pt-PT"
    assert first.rejected_file is None and not (tmp_path / "customers.rejected.csv").exists()

    second = await run(stack, path)
    assert (second.rows, second.imported, second.rejected) == (4, 4, 0)
    assert (second.created, second.updated, second.unchanged) == (0, 0, 3)
    assert await counts(stack) == after_first
    duplicates = await stack.pool.fetchval(
        "SELECT count(*) FROM (SELECT display_name FROM customers WHERE display_name IN"
        " ('Marta Ruiz', 'Rui Costa', 'Li Wei') GROUP BY display_name HAVING count(*) > 1) d"
    )
    assert duplicates == 0


async def test_a_row_of_an_existing_customer_enriches_it(stack: Stack, tmp_path: Path) -> None:
    caller = await identity.identify_or_create(stack.pool, "phone", "+34 600 20 00 01", "ES")
    before = await counts(stack)
    path = write(tmp_path, HEADER + "Pablo Gil,600200001,pablo@example.com,,hubspot:77,es,email\n")

    summary = await run(stack, path)

    assert (summary.created, summary.updated, summary.unchanged) == (0, 1, 0)
    assert await counts(stack) == (before[0], before[1] + 2)
    pablo = await customer_of(stack, "external", "hubspot:77")
    assert pablo["id"] == caller.customer_id
    assert (pablo["display_name"], pablo["preferred_language"], pablo["preferred_channel"]) == (
        "Pablo Gil",
        "es",
        "email",
    )
    # the seeded demo customer Ana García gets a language only if the row says so: a name-only row
    ana_path = write(tmp_path, "phone,name\n+34 911 22 23 33,Ana García\n")
    again = await run(stack, ana_path)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 1)


async def test_a_row_whose_identities_belong_to_two_customers_is_rejected_not_merged(
    stack: Stack, tmp_path: Path
) -> None:
    one = await identity.identify_or_create(stack.pool, "phone", "+34 600 30 00 01", "ES")
    two = await identity.identify_or_create(stack.pool, "email", "other@example.com")
    before = await counts(stack)
    path = write(tmp_path, HEADER + "Fine,600300002,,,,,\nBoth,600300001,other@example.com,,,,\n")

    summary = await run(stack, path)

    assert (summary.rows, summary.imported, summary.rejected, summary.created) == (2, 1, 1, 1)
    assert await counts(stack) == (before[0] + 1, before[1] + 1)
    merged = await stack.pool.fetchval(
        "SELECT count(*) FROM customers WHERE id = ANY($1::uuid[]) AND merged_into IS NOT NULL",
        [one.customer_id, two.customer_id],
    )
    assert merged == 0
    assert summary.rejected_file == tmp_path / "customers.rejected.csv"
    with summary.rejected_file.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["line"], r["name"], r["email"]) for r in rows] == [("3", "Both", "other@example.com")]
    assert rows[0]["reason"] == (
        f"conflict: the row's identities belong to different customers (phone -> customer {one.customer_id};"
        f" email -> customer {two.customer_id}); merge those customers first, or split the row"
    )


async def test_bad_rows_are_reported_by_line_and_the_rest_is_imported(stack: Stack, tmp_path: Path) -> None:
    text = (
        HEADER
        + "Ok One,600400001,,,,,\n"
        + "Bad Phone,12,,,,,\n"  # line 3
        + '"Multi\nLine",600400002,,,,,\n'  # line 4-5
        + "No Identity,,,,,es,\n"  # line 6
        + "\n"
        + "Bad Channel,600400003,,,,,fax\n"  # line 8
        + "Ok Two,,ok2@example.com,,,,\n"  # line 9
    )
    before = await counts(stack)
    left = tmp_path / "customers.rejected.csv"
    left.write_text("a list from an earlier run\n")
    left.chmod(0o644)
    umask = os.umask(0o022)
    try:
        async with stack.pool.acquire() as conn:
            importer = Importer(conn, write(tmp_path, text), "ES", workers=0)
            summary = await importer.run()
    finally:
        os.umask(umask)

    assert (summary.rows, summary.imported, summary.rejected, summary.created) == (6, 2, 4, 2)
    assert summary.rejected_file == left
    assert stat.S_IMODE(left.stat().st_mode) == 0o600, "the rejected rows (personal data) are readable by others"
    assert await counts(stack) == (before[0] + 2, before[1] + 2)
    reasons = {r.line: r.reason for r in importer.rejected_lines}
    assert list(reasons) == [3, 4, 6, 8]
    assert reasons[3].startswith("phone: ")
    assert reasons[4] == "name: contains control characters"
    assert reasons[6].startswith("no identity")
    assert reasons[8].startswith("preferred_channel: 'fax'")
    assert summary.rejected_file is not None
    with summary.rejected_file.open(newline="", encoding="utf-8") as f:
        assert [r["line"] for r in csv.DictReader(f)] == ["3", "4", "6", "8"]


async def test_a_dry_run_writes_nothing_and_counts_what_would_happen(stack: Stack, tmp_path: Path) -> None:
    await identity.identify_or_create(stack.pool, "phone", "+34 600 50 00 01", "ES")
    before = await counts(stack)
    # batches of 2: the dry run must still see what its own earlier batches would have written
    text = (
        HEADER
        + "A,600500001,a@example.com,,,,\nB,600500002,,,,,\nB2,600500002,b@example.com,,,,\nC,,b@example.com,,,,\n"
    )
    summary = await run(stack, write(tmp_path, text), dry_run=True, batch_size=2)
    assert summary.dry_run
    assert (summary.rows, summary.imported, summary.created, summary.updated, summary.unchanged) == (4, 4, 1, 1, 0)
    assert await counts(stack) == before


async def test_batch_boundaries_do_not_change_the_outcome(stack: Stack, tmp_path: Path) -> None:
    text = HEADER + "".join(
        f"P{n},6006{n:05d},p{n // 2}@example.com,,,,\n"  # rows 2k and 2k+1 share an e-mail: one customer
        for n in range(40)
    )
    text += "Bridge,600600000,p7@example.com,,,,\n"  # joins customers of rows 0-1 and 14-15: a conflict
    path = write(tmp_path, text)
    before = await counts(stack)
    summary = await run(stack, path, batch_size=3)
    assert (summary.created, summary.imported, summary.rejected) == (20, 40, 1)
    assert await counts(stack) == (before[0] + 20, before[1] + 60)
    again = await run(stack, path, batch_size=7)
    assert (again.created, again.updated, again.unchanged, again.rejected) == (0, 0, 20, 1)


async def test_first_contacts_racing_the_import_leave_one_customer_per_number(stack: Stack, tmp_path: Path) -> None:
    numbers = [f"6007{n:05d}" for n in range(300)]
    path = write(tmp_path, "phone,name\n" + "".join(f"{n},N{n}\n" for n in numbers))
    before = await counts(stack)

    async def callers() -> None:
        for n in numbers[::-3]:  # from the other end, so some land before and some after the import's batch
            await identity.identify_or_create(stack.pool, "phone", n, "ES")

    summary, _ = await asyncio.gather(run(stack, path, batch_size=50), callers())

    assert summary.imported == 300 and summary.rejected == 0
    assert summary.created + summary.updated + summary.unchanged == 300
    assert await counts(stack) == (before[0] + 300, before[1] + 300)
    orphans = await stack.pool.fetchval(
        "SELECT count(*) FROM customers c WHERE NOT EXISTS (SELECT 1 FROM identities i WHERE i.customer_id = c.id)"
    )
    assert orphans == 0


async def test_the_command_reports_rejects_masked_and_exits_1(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "phone,email\n600800001,\n+999 5550 1234,\n600800002,not-an-address@\n")
    args = argparse.Namespace(file=path, region=None, dry_run=False, batch_size=50_000)
    assert await run_customers_command(args, stack.settings) == 1
    out, err = capsys.readouterr()
    assert out.strip() == "3 rows: 1 imported, 2 rejected; customers: 1 created, 0 updated, 0 unchanged"
    # the terminal gets numbers masked; the rejected file keeps the rows as they were
    assert f"{path}:3: phone: '+********234' is not a phone number" in err
    assert "5550" not in err
    assert f"{path}:4: email: 'not-an-address@' is not an e-mail address" in err
    assert f"rejected rows, with line and reason: {tmp_path / 'customers.rejected.csv'}" in err
    assert "+999 5550 1234" in (tmp_path / "customers.rejected.csv").read_text()

    missing = argparse.Namespace(file=tmp_path / "none.csv", region=None, dry_run=False, batch_size=50_000)
    assert await run_customers_command(missing, stack.settings) == 2
    assert "none.csv: cannot open" in capsys.readouterr().err
