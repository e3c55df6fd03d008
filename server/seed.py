"""Demo data: customers from dialplans/demo-customers.yaml and agents from dialplans/routing.yaml."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from crm_bridge import customers, identity, verification
from crm_bridge.phones import to_e164
from dialplans.models import Agent, load_demo_customers, load_routing
from routing.store import RoutingStore


async def upsert_agents(pool: asyncpg.Pool, agents: list[Agent]) -> None:
    await RoutingStore(pool).put_agents(agents)


async def seed_demo(pool: asyncpg.Pool, folder: Path, region: str) -> dict[str, int]:
    demo = load_demo_customers(folder)
    routing = load_routing(folder)
    for person in demo.customers:
        customer_id = None
        for phone in person.phones:
            found = await customers.identify(pool, "phone", to_e164(phone, region), person.name)
            customer_id = found.customer_id
            await pool.execute(
                "UPDATE customers SET display_name = $2, preferred_language = $3 WHERE id = $1",
                found.customer_id,
                person.name,
                person.language,
            )
        if customer_id is None:
            continue
        for account in person.accounts:
            await identity.link_identity(pool, customer_id, "external", f"account:{account}")
        # Hashing is slow on purpose: the secrets hash side by side.
        await asyncio.gather(*(verification.set_secret(pool, customer_id, f, v) for f, v in person.secrets.items()))
    await RoutingStore(pool).put_queues(routing.queues)
    await upsert_agents(pool, routing.agents)
    return {"customers": len(demo.customers), "agents": len(routing.agents)}
