"""The unified customer store against the real PostgreSQL test database: identities, first contacts
racing each other, merge and unmerge."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from crm_bridge import customers, identity
from crm_bridge.identity import IdentityTaken, MergedCustomer, MergeRefused, UnmergeRefused
from crm_bridge.timeline import Interaction, Timeline
from tests.stack.conftest import Stack


async def _no_publish(event: dict[str, Any]) -> None:
    return None


def timeline(stack: Stack) -> Timeline:
    return Timeline(stack.pool, _no_publish)


async def customer_with_history(
    stack: Stack, identities: list[tuple[str, str]], events: list[str], *, cases: int = 0
) -> tuple[uuid.UUID, Interaction]:
    kind, raw = identities[0]
    customer_id = (await identity.identify_or_create(stack.pool, kind, raw, "ES")).customer_id
    for kind, raw in identities[1:]:
        await identity.link_identity(stack.pool, customer_id, kind, raw, "ES")
    tl = timeline(stack)
    interaction = await tl.start_interaction(customer_id, "voice", "inbound", dialed="100")
    for type_ in events:
        await tl.record(interaction, type_)
    await tl.end_interaction(interaction, "completed", "caller")
    for n in range(cases):
        await stack.pool.execute(
            "INSERT INTO cases (customer_id, interaction_id, subject) VALUES ($1, $2, $3)",
            customer_id,
            interaction.id,
            f"case {n}",
        )
    return customer_id, interaction


async def split(pool: asyncpg.Pool, *customer_ids: uuid.UUID) -> dict[uuid.UUID, dict[str, Any]]:
    """Which identities, interactions, cases and timeline rows each customer owns, and its merged_into."""
    out: dict[uuid.UUID, dict[str, Any]] = {}
    for cid in customer_ids:
        out[cid] = {
            "identities": sorted(
                (r["id"], r["kind"], r["value"])
                for r in await pool.fetch("SELECT id, kind, value FROM identities WHERE customer_id = $1", cid)
            ),
            "interactions": sorted(
                r["id"] for r in await pool.fetch("SELECT id FROM interactions WHERE customer_id = $1", cid)
            ),
            "cases": sorted(r["id"] for r in await pool.fetch("SELECT id FROM cases WHERE customer_id = $1", cid)),
            "events": [
                r["id"]
                for r in await pool.fetch("SELECT id FROM timeline_events WHERE customer_id = $1 ORDER BY id", cid)
            ],
            "merged_into": await pool.fetchval("SELECT merged_into FROM customers WHERE id = $1", cid),
        }
    return out


async def test_twenty_concurrent_first_contacts_in_different_formats_make_one_customer(stack: Stack) -> None:
    formats = ["+34 600 44 55 66", "0034600445566", "600445566", "+34-600-445-566", "600 44 55 66"]
    before = await stack.pool.fetchval("SELECT count(*) FROM customers")
    results = await asyncio.gather(
        *(identity.identify_or_create(stack.pool, "phone", formats[i % len(formats)], "ES") for i in range(20))
    )
    assert len({r.customer_id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert await stack.pool.fetchval("SELECT count(*) FROM customers") == before + 1
    rows = await stack.pool.fetch(
        "SELECT customer_id, value FROM identities WHERE kind = 'phone' AND value = '+34600445566'"
    )
    assert [(r["customer_id"], r["value"]) for r in rows] == [(results[0].customer_id, "+34600445566")]
    found = await identity.resolve(stack.pool, "phone", "600 445 566", "ES")
    assert found is not None and found.customer_id == results[0].customer_id


async def test_brazilian_mobile_old_and_new_form_are_one_customer(stack: Stack) -> None:
    # João Silva is seeded as +55 11 98765-4321; his number in the old 8-digit form is him
    joao = await identity.resolve(stack.pool, "phone", "+55 11 8765-4321", "ES")
    assert joao is not None and joao.display_name == "João Silva"
    first = await identity.identify_or_create(stack.pool, "phone", "+55 61 9876-5432", "ES")
    again = await identity.identify_or_create(stack.pool, "phone", "(61) 99876-5432", "BR")
    assert first.created and not again.created and again.customer_id == first.customer_id
    assert await stack.pool.fetchval("SELECT value FROM identities WHERE customer_id = $1", first.customer_id) == (
        "+5561998765432"
    )
    # a wa_id without the 9 links to the same person as a whatsapp identity of the same canonical number
    linked = await identity.link_identity(stack.pool, first.customer_id, "whatsapp", "556198765432")
    assert linked.value == "+5561998765432"


async def test_merge_keeps_every_identity_and_event_and_writes_the_audit_row(stack: Stack) -> None:
    ana, ana_call = await customer_with_history(
        stack, [("phone", "+34 600 10 20 30"), ("email", "Ana@Example.com")], ["ivr.greeting", "ivr.input"]
    )
    twin, twin_call = await customer_with_history(
        stack,
        [("whatsapp", "34600999888")],
        ["ivr.greeting"],
        cases=1,
    )
    await identity.link_identity(stack.pool, twin, "external", "0035g00000AbCdE", system="salesforce")
    await identity.link_identity(stack.pool, twin, "whatsapp_bsuid", "ES.1234567890")
    tl = timeline(stack)
    ana_events = [e["id"] for e in await tl.customer_timeline(ana)]
    twin_events = [e["id"] for e in await tl.customer_timeline(twin)]
    before = await split(stack.pool, ana, twin)

    merge_id = await identity.merge(stack.pool, ana, twin, by="user:bob@api", reason="same person, confirmed on call")

    after = await split(stack.pool, ana, twin)
    # every identity, interaction and case of the twin is now Ana's; none was lost or duplicated
    assert after[ana]["identities"] == sorted(before[ana]["identities"] + before[twin]["identities"])
    assert after[ana]["interactions"] == sorted(before[ana]["interactions"] + before[twin]["interactions"])
    assert after[ana]["cases"] == before[twin]["cases"] and len(after[ana]["cases"]) == 1
    assert after[twin]["identities"] == after[twin]["interactions"] == after[twin]["cases"] == []
    # history is not rewritten: each event keeps its customer; Ana's timeline shows both
    assert (after[ana]["events"], after[twin]["events"]) == (before[ana]["events"], before[twin]["events"])
    assert after[twin]["merged_into"] == ana and after[ana]["merged_into"] is None
    merged_timeline = await tl.customer_timeline(ana)
    assert sorted(e["id"] for e in merged_timeline) == sorted(ana_events + twin_events)
    assert {e["interaction_id"] for e in merged_timeline} == {str(ana_call.id), str(twin_call.id)}
    assert [e["id"] for e in await tl.customer_timeline(twin)] == twin_events

    for kind, raw, system in [
        ("whatsapp", "+34600999888", None),
        ("external", "0035g00000AbCdE", "salesforce"),
        ("whatsapp_bsuid", "ES.1234567890", None),
        ("email", "ana@example.com", None),
    ]:
        found = await identity.resolve(stack.pool, kind, raw, "ES", system=system)
        assert found is not None and found.customer_id == ana, (kind, raw)
    assert (
        await stack.pool.fetchval(
            "SELECT system FROM identities WHERE kind = 'external' AND value = 'salesforce:0035g00000AbCdE'"
        )
        == "salesforce"
    )

    async with stack.pool.acquire() as conn:
        record = await identity.get_merge(conn, merge_id)
    assert (record.survivor_id, record.merged_id, record.merged_by, record.reason) == (
        ana,
        twin,
        "user:bob@api",
        "same person, confirmed on call",
    )
    assert record.identity_ids == [i for i, _, _ in before[twin]["identities"]]
    assert record.interaction_ids == before[twin]["interactions"]
    assert record.case_ids == before[twin]["cases"]
    assert record.timeline_event_ids == twin_events
    assert record.undone_at is None and record.undone_by is None


async def test_unmerge_restores_exactly_the_previous_split(stack: Stack) -> None:
    ana, _ = await customer_with_history(stack, [("phone", "+34 600 10 20 31")], ["ivr.greeting"], cases=1)
    twin, _ = await customer_with_history(
        stack, [("email", "twin@example.com"), ("webchat", "tok-1")], ["ivr.greeting", "ivr.input"], cases=2
    )
    before = await split(stack.pool, ana, twin)
    merge_id = await identity.merge(stack.pool, ana, twin, by="user:alice@api", reason="looked alike")
    # life goes on for the survivor between the merge and its undo: that stays the survivor's
    later_identity = await identity.link_identity(stack.pool, ana, "email", "ana.later@example.com")
    later_call, _ = await customer_with_history(stack, [("phone", "+34 600 10 20 31")], ["ivr.menu"])
    assert later_call == ana

    record = await identity.unmerge(stack.pool, merge_id, by="user:carol@api")

    after = await split(stack.pool, ana, twin)
    assert after[twin] == before[twin]
    assert after[ana]["identities"] == sorted(
        [*before[ana]["identities"], (later_identity.id, "email", "ana.later@example.com")]
    )
    assert set(before[ana]["interactions"]) < set(after[ana]["interactions"])
    assert not set(after[ana]["interactions"]) & set(before[twin]["interactions"])
    assert after[ana]["cases"] == before[ana]["cases"]
    tl = timeline(stack)
    assert [e["id"] for e in await tl.customer_timeline(twin)] == before[twin]["events"]
    assert not {e["id"] for e in await tl.customer_timeline(ana)} & set(before[twin]["events"])
    found = await identity.resolve(stack.pool, "email", "TWIN@example.com")
    assert found is not None and found.customer_id == twin
    assert record.undone_by == "user:carol@api" and record.undone_at is not None

    with pytest.raises(UnmergeRefused, match="already undone"):
        await identity.unmerge(stack.pool, merge_id, by="user:carol@api")
    # undone, the two can be merged again, and the audit keeps both merges
    await identity.merge(stack.pool, ana, twin, by="user:alice@api", reason="confirmed this time")
    assert await stack.pool.fetchval("SELECT count(*) FROM customer_merges WHERE merged_id = $1", twin) == 2


async def test_chained_merges_show_every_timeline_and_undo_in_reverse_order(stack: Stack) -> None:
    first, _ = await customer_with_history(stack, [("phone", "+34 600 10 20 41")], ["ivr.greeting"])
    middle, _ = await customer_with_history(stack, [("phone", "+34 600 10 20 42")], ["ivr.greeting"])
    last, _ = await customer_with_history(stack, [("phone", "+34 600 10 20 43")], ["ivr.greeting"])
    before = await split(stack.pool, first, middle, last)
    tl = timeline(stack)
    m1 = await identity.merge(stack.pool, middle, first, by="user:bob@api", reason="dup")
    m2 = await identity.merge(stack.pool, last, middle, by="user:bob@api", reason="dup")

    everything = sorted(e for c in before.values() for e in c["events"])
    assert sorted(e["id"] for e in await tl.customer_timeline(last)) == everything
    found = await identity.resolve(stack.pool, "phone", "600102041", "ES")
    assert found is not None and found.customer_id == last

    with pytest.raises(UnmergeRefused, match=f"merge {m2}"):
        await identity.unmerge(stack.pool, m1, by="user:bob@api")
    await identity.unmerge(stack.pool, m2, by="user:bob@api")
    await identity.unmerge(stack.pool, m1, by="user:bob@api")
    assert await split(stack.pool, first, middle, last) == before


async def test_self_merge_and_double_merge_are_refused(stack: Stack) -> None:
    a, _ = await customer_with_history(stack, [("phone", "+34 600 10 20 51")], [])
    b, _ = await customer_with_history(stack, [("phone", "+34 600 10 20 52")], [])
    c, _ = await customer_with_history(stack, [("phone", "+34 600 10 20 53")], [])
    with pytest.raises(MergeRefused, match="into itself"):
        await identity.merge(stack.pool, a, a, by="user:bob@api", reason="oops")
    await identity.merge(stack.pool, a, b, by="user:bob@api", reason="dup")
    with pytest.raises(MergeRefused, match=f"{b} is already merged into {a}"):
        await identity.merge(stack.pool, c, b, by="user:bob@api", reason="dup")
    with pytest.raises(MergeRefused, match=f"{b} is merged into {a}: merge into that customer instead"):
        await identity.merge(stack.pool, b, c, by="user:bob@api", reason="dup")
    with pytest.raises(identity.CustomerNotFound):
        await identity.merge(stack.pool, a, uuid.uuid4(), by="user:bob@api", reason="dup")
    with pytest.raises(identity.MergeNotFound):
        await identity.unmerge(stack.pool, uuid.uuid4(), by="user:bob@api")
    assert await stack.pool.fetchval("SELECT count(*) FROM customer_merges") == 1


async def test_concurrent_opposite_merges_cannot_interleave(stack: Stack) -> None:
    a, _ = await customer_with_history(stack, [("phone", "+34 600 10 20 61")], ["ivr.greeting"])
    b, _ = await customer_with_history(stack, [("phone", "+34 600 10 20 62")], ["ivr.greeting"])
    results = await asyncio.gather(
        *(
            identity.merge(stack.pool, *((a, b) if i % 2 else (b, a)), by="user:bob@api", reason="race")
            for i in range(10)
        ),
        return_exceptions=True,
    )
    done = [r for r in results if isinstance(r, uuid.UUID)]
    refused = [r for r in results if isinstance(r, MergeRefused)]
    assert len(done) == 1 and len(refused) == 9, results
    merged_into = {
        r["id"]: r["merged_into"]
        for r in await stack.pool.fetch("SELECT id, merged_into FROM customers WHERE id = ANY($1::uuid[])", [a, b])
    }
    assert sorted(v is None for v in merged_into.values()) == [False, True]
    survivor = next(k for k, v in merged_into.items() if v is None)
    assert await stack.pool.fetchval("SELECT count(*) FROM identities WHERE customer_id = $1", survivor) == 2


async def test_link_identity_refuses_an_identity_of_another_customer(stack: Stack) -> None:
    ana = (await identity.identify_or_create(stack.pool, "phone", "+34 600 10 20 71", "ES")).customer_id
    bob = (await identity.identify_or_create(stack.pool, "phone", "+34 600 10 20 72", "ES")).customer_id
    linked = await identity.link_identity(stack.pool, ana, "email", "ana@example.org")
    assert linked.created
    again = await identity.link_identity(stack.pool, ana, "email", " ANA@example.org")
    assert (again.id, again.created) == (linked.id, False)
    with pytest.raises(IdentityTaken, match=f"email identity 'ana@example.org' belongs to customer {ana}"):
        await identity.link_identity(stack.pool, bob, "email", "Ana@Example.org")
    with pytest.raises(IdentityTaken):
        await identity.link_identity(stack.pool, bob, "phone", "0034600102071", "ES")
    with pytest.raises(identity.InvalidIdentity, match="invalid email identity"):
        await identity.link_identity(stack.pool, bob, "email", "not-an-address")
    await identity.merge(stack.pool, ana, bob, by="user:bob@api", reason="dup")
    with pytest.raises(MergedCustomer, match=f"merged into {ana}"):
        await identity.link_identity(stack.pool, bob, "webchat", "tok-2")
    assert await stack.pool.fetchval("SELECT count(*) FROM identities WHERE value = 'ana@example.org'") == 1


async def test_consent_is_kept_per_channel(stack: Stack) -> None:
    ana = (await identity.identify_or_create(stack.pool, "phone", "+34 600 10 20 81", "ES")).customer_id
    await customers.set_consent(stack.pool, ana, "whatsapp", True, "ivr")
    consent = await customers.set_consent(stack.pool, ana, "sms", False, "agent:bob")
    assert {k: (v["granted"], v["source"]) for k, v in consent.items()} == {
        "whatsapp": (True, "ivr"),
        "sms": (False, "agent:bob"),
    }
    assert all(isinstance(v["at"], str) for v in consent.values())
    with pytest.raises(ValueError, match="no consent channel 'fax'"):
        await customers.set_consent(stack.pool, ana, "fax", True, "ivr")
    with pytest.raises(LookupError):
        await customers.set_consent(stack.pool, uuid.uuid4(), "sms", True, "ivr")
