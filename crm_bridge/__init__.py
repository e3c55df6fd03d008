"""The unified customer store: customers, identities, interactions and the append-only timeline."""
