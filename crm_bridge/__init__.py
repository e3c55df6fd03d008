"""The unified customer store: customers, identities, merges, interactions and the append-only timeline,
cases, the customer import, CRM connectors, outbound webhooks, and the customer API."""
