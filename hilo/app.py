"""The composition root: `init_app` opens every resource as an aiohttp cleanup context and wires the
pieces together. Nothing here decides anything about calls; it only connects objects."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from asterisk.ami import AmiClient
from asterisk.ari import AriClient
from asterisk.dialplan import NumbersDialplanSync
from console import api
from console.auth import AUTH_KEY, TokenAuth
from console.screenpop import ScreenPops
from crm_bridge import rest as crm_rest
from crm_bridge.db import create_pool
from crm_bridge.seed import upsert_agents
from crm_bridge.timeline import Timeline
from crm_bridge.webhooks import DeliveryWorker, RetryPolicy
from dialplans.models import load_routing
from hilo.notifier import Notifier
from hilo.services import SERVICES, Services
from hilo.settings import Settings
from ivr.flows.live import FlowRuntime, LiveFlows, checks_for
from ivr.flows.rest import add_flow_routes
from ivr.inbound import TECHNICAL_PROBLEM_PROMPT, CallMetrics, InboundCalls
from ivr.tts import PromptCache, voice_for
from routing.live import AgentBoard

log = logging.getLogger(__name__)


def init_app(settings: Settings) -> web.Application:
    routing = load_routing(settings.dialplans_dir)
    checks_for(settings.dialplans_dir)  # a broken routing.yaml stops the start here, before any connection
    registry = CollectorRegistry()
    services = Services(settings=settings, registry=registry)
    app = web.Application()
    app[SERVICES] = services
    app[AUTH_KEY] = TokenAuth({settings.api_token.get_secret_value(): "admin"})
    metrics = CallMetrics(
        started=Counter("hilo_calls_started", "Inbound calls answered", registry=registry),
        ended=Counter("hilo_calls_ended", "Calls ended, by outcome", ["outcome"], registry=registry),
        active=Gauge("hilo_calls_active", "Calls in progress on this node", registry=registry),
    )

    async def postgres(_: web.Application) -> AsyncIterator[None]:
        services.pool = await create_pool(settings.database_url.get_secret_value(), min_size=2, max_size=10)
        await upsert_agents(services.pool, routing.agents)
        yield
        await services.pool.close()

    async def redis(_: web.Application) -> AsyncIterator[None]:
        services.redis = aioredis.from_url(settings.redis_url.get_secret_value())
        await services.redis.ping()
        services.board = AgentBoard(services.redis, settings.namespace)
        await services.board.load(routing.agents)
        yield
        await services.redis.aclose()

    async def telephony(_: web.Application) -> AsyncIterator[None]:
        assert services.pool is not None and services.redis is not None and services.board is not None
        notifier = Notifier(services.redis, settings.namespace)
        services.timeline = Timeline(services.pool, notifier.publish)
        prompts = PromptCache(settings.tts_cache_dir, settings.sounds_dir)
        services.ami = AmiClient(
            settings.ami_host, settings.ami_port, settings.ami_user, settings.ami_password.get_secret_value()
        )
        numbers_dialplan = NumbersDialplanSync(services.ami, settings.asterisk_root)
        syncing: set[asyncio.Task[bool]] = set()

        async def prepare_version(flows: LiveFlows) -> None:
            # Before a version goes live, so no caller waits for synthesis of a static prompt.
            for text, voice, language in flows.static_prompts():
                await prompts.render(text, voice, language)
            # Asterisk's numbers follow in the background (AMI may still be logging in).
            task = asyncio.create_task(numbers_dialplan.sync(flows.numbers, source=f"flow version {flows.version}"))
            syncing.add(task)
            task.add_done_callback(syncing.discard)

        for text in [TECHNICAL_PROBLEM_PROMPT, *(q.no_agent_prompt for q in routing.queues)]:
            await prompts.render(text, voice_for("en", None), "en")
        services.flows = FlowRuntime(
            services.pool,
            settings.dialplans_dir,
            settings.database_url.get_secret_value(),
            prepare=prepare_version,
            announce=notifier.publish,
        )
        await services.flows.start()  # refuses to start on a flow version with problems
        flows = services.flows
        services.ari = AriClient(
            settings.ari_url, settings.ari_user, settings.ari_password.get_secret_value(), settings.namespace
        )
        services.calls = InboundCalls(
            ari=services.ari,
            pool=services.pool,
            timeline=services.timeline,
            board=services.board,
            prompts=prompts,
            live_flows=lambda: flows.current,
            routing=routing,
            metrics=metrics,
            default_region=settings.default_region,
            ring_timeout_s=settings.ring_timeout_s,
            queue_max_wait_s=settings.queue_max_wait_s,
            wrapup_s=settings.wrapup_s,
            # the screen-pop is published to the agent's console before their phone rings
            on_offer=ScreenPops(
                services.pool, services.redis, settings.namespace, lambda: flows.current.flows
            ).on_offer,
        )
        await services.ari.start()
        await services.ami.start()
        yield
        await services.calls.close()
        await services.ari.close()
        await services.ami.close()
        await services.flows.close()
        for task in list(syncing):
            task.cancel()
        prompts.close()

    async def webhooks(_: web.Application) -> AsyncIterator[None]:
        assert services.pool is not None
        policy = RetryPolicy(
            settings.webhook_max_attempts,
            settings.webhook_backoff_s,
            settings.webhook_backoff_max_s,
            settings.webhook_timeout_s,
        )
        services.webhooks = DeliveryWorker(services.pool, settings.database_url.get_secret_value(), policy)
        await services.webhooks.start()
        yield
        await services.webhooks.close()

    app.cleanup_ctx.extend([postgres, redis, telephony])
    app.cleanup_ctx.append(webhooks)
    crm_rest.add_routes(app)  # customers, identities, merges, timeline, cases, webhooks, /api/openapi.json
    api.add_routes(app)
    add_flow_routes(app)
    return app


def run(settings: Settings) -> None:
    app = init_app(settings)
    log.info("Hilo listening on http://%s:%d", settings.http_host, settings.http_port)
    web.run_app(app, host=settings.http_host, port=settings.http_port, print=None)
