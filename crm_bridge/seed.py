"""Demo data: customers from dialplans/demo-customers.yaml and agents from dialplans/routing.yaml."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from crm_bridge import customers
from crm_bridge.phones import to_e164
from dialplans.models import Agent, load_demo_customers, load_routing


async def upsert_agents(pool: asyncpg.Pool, agents: list[Agent]) -> None:
    await pool.executemany(
        "INSERT INTO agents (id, name, sip_endpoint, queues) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (id) DO UPDATE SET name = excluded.name, sip_endpoint = excluded.sip_endpoint,"
        " queues = excluded.queues",
        [(a.id, a.name, a.sip_endpoint, a.queues) for a in agents],
    )


async def seed_demo(pool: asyncpg.Pool, folder: Path, region: str) -> dict[str, int]:
    demo = load_demo_customers(folder)
    routing = load_routing(folder)
    for person in demo.customers:
        for phone in person.phones:
            found = await customers.identify(pool, "phone", to_e164(phone, region), person.name)
            await pool.execute(
                "UPDATE customers SET display_name = $2, preferred_language = $3 WHERE id = $1",
                found.customer_id,
                person.name,
                person.language,
            )
    await upsert_agents(pool, routing.agents)
    return {"customers": len(demo.customers), "agents": len(routing.agents)}
