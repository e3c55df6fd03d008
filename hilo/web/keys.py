"""Typed application keys for the kernel's resources, set by the composition root (server/app.py) as each
resource opens. A handler reads what it needs, `request.app[POOL]`, and imports nothing above the kernel.
A feature's own objects have their key beside their class (`ROUTING` in routing/engine.py, `CALLS` in
ivr/inbound.py, ...), so the key's type is the class and nothing needs an `assert ... is not None`."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry

from hilo.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", CollectorRegistry)  # what /metrics exposes
POOL = web.AppKey("pool", asyncpg.Pool)  # the server's PostgreSQL pool
REDIS = web.AppKey("redis", aioredis.Redis)
