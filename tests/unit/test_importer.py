"""The CSV side of the bulk import: header checks, row validation with line numbers and field names, and
which customer each row is (planning), without a database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from crm_bridge.importer import (
    Attrs,
    CsvSource,
    CustomerRow,
    ImportFileError,
    Rejected,
    estimate_rows,
    plan_batch,
    rejected_path,
    time_ordered_id,
    validate_batch,
)

HEADER = "name,phone,email,whatsapp,external_id,language,preferred_channel\n"


def read(path: Path, region: str | None = "ES") -> list[CustomerRow | Rejected]:
    source = CsvSource(path)
    try:
        return [r for batch in source.batches(3) for r in validate_batch(source.header, batch, region)]
    finally:
        source.close()


def write(tmp_path: Path, text: str | bytes, name: str = "customers.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def rejected(rows: list[CustomerRow | Rejected]) -> dict[int, str]:
    return {r.line: r.reason for r in rows if isinstance(r, Rejected)}


def accepted(rows: list[CustomerRow | Rejected]) -> dict[int, CustomerRow]:
    return {r.line: r for r in rows if isinstance(r, CustomerRow)}


# The header ---------------------------------------------------------------------------------------


def test_an_empty_file_is_refused_as_a_whole(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match=r"customers\.csv: empty file: the first line must be a header"):
        CsvSource(write(tmp_path, ""))


def test_a_file_with_only_a_byte_order_mark_is_empty(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="empty file"):
        CsvSource(write(tmp_path, b"\xef\xbb\xbf"))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match=r"nope\.csv: cannot open"):
        CsvSource(tmp_path / "nope.csv")


def test_a_header_without_any_identity_column_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match=r"customers\.csv:1: no identity column: .*phone, email, whatsapp"):
        CsvSource(write(tmp_path, "name,language\nAna,es\n"))


def test_an_unknown_header_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match=r":1: unknown column 'phone_number' \(known: name, phone"):
        CsvSource(write(tmp_path, "name,phone_number\nAna,600112233\n"))


def test_a_column_named_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match=r":1: column 'phone' appears twice"):
        CsvSource(write(tmp_path, "phone,Phone\n1,2\n"))


def test_a_header_column_without_a_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match=r":1: header column 2 has no name"):
        CsvSource(write(tmp_path, "phone,,email\n"))


def test_a_blank_first_line_is_not_a_header(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match=r":1: the first line must be the header"):
        CsvSource(write(tmp_path, "\nphone\n600112233\n"))


def test_a_byte_order_mark_and_any_column_order_and_case_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffEmail, Phone ,NAME\r\nana@example.com,600 11 22 33,Ana\r\n".encode())
    rows = read(path)
    assert rows == [CustomerRow(2, "Ana", None, None, (("phone", "+34600112233"), ("email", "ana@example.com")))]


def test_a_header_only_file_has_no_rows(tmp_path: Path) -> None:
    assert read(write(tmp_path, HEADER)) == []


# Rows ---------------------------------------------------------------------------------------------


def test_every_identity_kind_is_normalised(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "Ana,0034 600 11 22 33,Ana@Example.COM,+34600112233,Salesforce:0035A,PT-br,SMS\n")
    (row,) = read(path)
    assert row == CustomerRow(
        2,
        "Ana",
        "pt-BR",
        "sms",
        (
            ("phone", "+34600112233"),
            ("email", "ana@example.com"),
            ("whatsapp", "+34600112233"),
            ("external", "salesforce:0035A"),
        ),
    )


def test_quoted_fields_keep_commas_quotes_and_line_breaks_and_lines_stay_right(tmp_path: Path) -> None:
    text = (
        "name,phone,email\n"
        '"García, Ana ""la jefa""",600112233,\n'
        '"two\nline name",600112234,\n'  # starts on line 3, ends on line 4
        "Bea,not a phone,\n"  # line 5
    )
    rows = read(write(tmp_path, text))
    assert accepted(rows)[2].name == 'García, Ana "la jefa"'
    reasons = rejected(rows)
    assert list(reasons) == [3, 5]
    assert reasons[3] == "name: contains control characters"  # a line break is not part of a name
    assert reasons[5].startswith("phone: 'not a phone' is not a phone number")


def test_reasons_name_each_bad_field_and_all_of_them(tmp_path: Path) -> None:
    text = HEADER + "Ana,12,ana@,34abc,crm,english please,fax\n"
    (bad,) = read(write(tmp_path, text))
    assert isinstance(bad, Rejected)
    assert bad.line == 2
    parts = bad.reason.split("; ")
    assert [p.split(":")[0] for p in parts] == [
        "phone",
        "email",
        "whatsapp",
        "external_id",
        "language",
        "preferred_channel",
    ]
    assert "preferred_channel: 'fax' is not one of voice, sms, whatsapp, webchat, email" in parts
    assert bad.fields == ["Ana", "12", "ana@", "34abc", "crm", "english please", "fax"]


def test_a_row_without_any_identity_is_rejected(tmp_path: Path) -> None:
    rows = read(write(tmp_path, HEADER + "Ana,,,,,es,voice\n"))
    assert rejected(rows) == {2: "no identity: a row needs at least one of phone, email, whatsapp, external_id"}


def test_a_row_with_the_wrong_number_of_fields_is_rejected(tmp_path: Path) -> None:
    rows = read(write(tmp_path, "name,phone\nAna,600112233,extra\nBea\nCarla,600112235\n"))
    assert rejected(rows) == {
        2: "3 fields, but the header has 2 columns",
        3: "1 fields, but the header has 2 columns",
    }
    assert list(accepted(rows)) == [4]


def test_blank_lines_are_skipped_and_do_not_shift_line_numbers(tmp_path: Path) -> None:
    rows = read(write(tmp_path, "phone\n\n600112233\n\n\nbad\n"))
    assert list(accepted(rows)) == [3]
    assert list(rejected(rows)) == [6]


def test_bytes_that_are_not_utf8_reject_their_row_only(tmp_path: Path) -> None:
    path = write(tmp_path, b"name,phone\nJo\xe3o,600112233\nAna,600112234\n")
    rows = read(path)
    assert rejected(rows) == {2: "name: not valid UTF-8"}
    assert list(accepted(rows)) == [3]


def test_a_record_the_csv_reader_cannot_parse_is_rejected_with_its_line(tmp_path: Path) -> None:
    rows = read(write(tmp_path, 'name,phone\n"Ana"x,600112233\nBea,600112234\n'))
    assert rejected(rows) == {2: "not readable as CSV: ',' expected after '\"'"}
    assert list(accepted(rows)) == [3]


def test_control_characters_and_overlong_names_are_rejected(tmp_path: Path) -> None:
    rows = read(write(tmp_path, f"name,phone\nA\x00na,600112233\n{'x' * 201},600112234\n"))
    assert rejected(rows) == {2: "name: contains control characters", 3: "name: longer than 200 characters"}


def test_without_a_region_national_numbers_are_rejected(tmp_path: Path) -> None:
    rows = read(write(tmp_path, "phone\n600112233\n+34600112233\n"), region=None)
    assert list(rejected(rows)) == [2]
    assert list(accepted(rows)) == [3]


def test_the_same_identity_twice_in_a_row_counts_once(tmp_path: Path) -> None:
    (row,) = read(write(tmp_path, "phone,whatsapp,email\n600112233,34600112233,\n"))
    assert isinstance(row, CustomerRow)
    assert row.identities == (("phone", "+34600112233"), ("whatsapp", "+34600112233"))


def test_rejected_file_name_and_row_estimate(tmp_path: Path) -> None:
    assert rejected_path(Path("/x/customers.CSV")) == Path("/x/customers.rejected.csv")
    assert rejected_path(Path("/x/export")) == Path("/x/export.rejected.csv")
    assert estimate_rows(write(tmp_path, "phone\n1\n2\n")) == 2


# Planning -----------------------------------------------------------------------------------------


def ids() -> Iterator[uuid.UUID]:
    n = 0
    while True:
        n += 1
        yield uuid.UUID(int=n)


def row(line: int, *identities: tuple[str, str], name: str | None = None, language: str | None = None) -> CustomerRow:
    return CustomerRow(line, name, language, None, tuple(identities))


PHONE_A, PHONE_B = ("phone", "+34600000001"), ("phone", "+34600000002")
MAIL_A, MAIL_B = ("email", "a@example.com"), ("email", "b@example.com")


def test_rows_sharing_an_identity_are_one_new_customer_with_the_first_non_empty_values() -> None:
    fresh = ids()
    plan = plan_batch(
        [row(2, PHONE_A, name="Ana"), row(3, PHONE_A, MAIL_A, language="es"), row(4, MAIL_A, name="Ana G.")],
        {},
        {},
        new_id=lambda: next(fresh),
    )
    one = uuid.UUID(int=1)
    assert plan.creates == {one: Attrs("Ana", "es", None)}
    assert plan.given == {one: 0b011}  # name and language given by the file
    assert plan.claims == {PHONE_A: (one, True), MAIL_A: (one, True)}
    assert plan.accepted == 3 and not plan.conflicts and not plan.updates and not plan.matched


def test_a_row_bridging_two_customers_made_earlier_in_the_file_is_a_conflict() -> None:
    fresh = ids()
    plan = plan_batch([row(2, PHONE_A), row(3, MAIL_B), row(4, PHONE_A, MAIL_B)], {}, {}, new_id=lambda: next(fresh))
    assert len(plan.creates) == 2
    (conflict,) = plan.conflicts
    assert conflict.line == 4
    assert conflict.reason.startswith("conflict: the row's identities belong to different customers (phone -> customer")
    assert "(created from line 2)" in conflict.reason and "(created from line 3)" in conflict.reason
    assert plan.accepted == 2


def test_a_row_of_a_known_customer_enriches_it() -> None:
    known = uuid.UUID(int=99)
    plan = plan_batch(
        [row(2, PHONE_A, MAIL_A, language="pt-BR")],
        {PHONE_A: known},
        {known: Attrs("Ana", "es", "voice")},
        new_id=lambda: pytest.fail("no new customer expected"),
    )
    assert plan.updates == {known: Attrs("Ana", "pt-BR", "voice")}
    assert plan.claims == {PHONE_A: (known, False), MAIL_A: (known, True)}
    assert plan.matched == {known} and plan.enriched == {known}


def test_a_row_that_adds_nothing_leaves_its_customer_unchanged() -> None:
    known = uuid.UUID(int=99)
    plan = plan_batch([row(2, PHONE_A, name="Ana")], {PHONE_A: known}, {known: Attrs("Ana", None, None)})
    assert plan.matched == {known} and not plan.enriched and not plan.updates and not plan.creates


def test_the_first_row_of_a_known_customer_replaces_its_name_and_later_rows_do_not() -> None:
    known = uuid.UUID(int=99)
    plan = plan_batch(
        [row(2, PHONE_A, name="Bea"), row(3, PHONE_A, name="Ana", language="es")],
        {PHONE_A: known},
        {known: Attrs("Ana", None, None)},
    )
    assert plan.updates == {known: Attrs("Bea", "es", None)}


def test_what_an_earlier_batch_of_the_file_gave_is_not_replaced_by_a_later_row() -> None:
    # the file's first row for this customer (an earlier batch) named it Bea; this batch's row says Ana
    known = uuid.UUID(int=99)
    plan = plan_batch(
        [row(9, PHONE_A, name="Ana", language="es")],
        {PHONE_A: known},
        {known: Attrs("Bea", None, None)},
        given={known: 1},
    )
    assert plan.updates == {known: Attrs("Bea", "es", None)}
    assert plan.given == {known: 0b011}


def test_identities_of_two_known_customers_are_a_conflict_never_a_merge() -> None:
    one, two = uuid.UUID(int=98), uuid.UUID(int=99)
    plan = plan_batch(
        [row(2, PHONE_A, MAIL_B, PHONE_B)],
        {PHONE_A: one, PHONE_B: one, MAIL_B: two},
        {one: Attrs(None, None, None), two: Attrs(None, None, None)},
    )
    (conflict,) = plan.conflicts
    assert f"phone, phone -> customer {one}; email -> customer {two}" in conflict.reason
    assert not plan.claims and not plan.updates and not plan.creates


def test_an_identity_of_a_merged_away_customer_rejects_the_row() -> None:
    gone, survivor = uuid.UUID(int=98), uuid.UUID(int=99)
    plan = plan_batch([row(2, PHONE_A)], {PHONE_A: gone}, {gone: Attrs(None, None, None)}, {gone: survivor})
    assert plan.conflicts[0].reason == f"phone: belongs to customer {gone}, merged into {survivor}"


def test_new_customers_get_ascending_version_7_ids() -> None:
    made = [time_ordered_id() for _ in range(20_000)]  # many share a millisecond: the counter orders them
    assert made == sorted(made) and len(set(made)) == len(made)
    assert {u.version for u in made} == {7} and made[0].variant == uuid.RFC_4122
