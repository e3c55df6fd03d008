"""Routing: which agent gets which interaction (skills, priority, capacity, SLA escalation and overflow),
one atomic Lua decision per event in Redis with the durable record in PostgreSQL, agent presence, and the
routing admin API. Ringing phones is the call's work (ivr/agent_leg.py)."""
