"""Routing: which agent gets which interaction. Live agent state is in Redis, changed atomically."""
