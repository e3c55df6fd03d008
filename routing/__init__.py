"""Routing: which agent gets which interaction (skills, priority, capacity, SLA escalation and overflow),
one atomic Lua decision per event in Redis with the durable record in PostgreSQL, agent presence, the
routing admin API, and the outbound policy (where Hilo may dial on its own: outbound.py). Ringing phones is
the call's work (ivr/agent_leg.py)."""
