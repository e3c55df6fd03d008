"""The composition root: `init_app` opens every resource as an aiohttp cleanup context and wires the
pieces together. Nothing here decides anything about calls; it only connects objects."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from asterisk import rest as asterisk_rest
from asterisk.ami import AmiClient
from asterisk.ari import AriClient
from asterisk.dialplan import NumbersDialplanSync
from asterisk.sip_guard import SIP_GUARD, AclFile, SipGuard, guard_config, pjsip_reload
from bridges import http as bridges_http
from bridges import webchat
from bridges.conversations import CONVERSATIONS, Conversations, flow_by_channel
from bridges.messages import InboundMessage
from bridges.webchat_limits import webchat_limits
from console import api as console_api
from console import call_control, transfers
from console import chat as console_chat
from console.screenpop import SCREENPOPS, ScreenPops
from crm_bridge import connectors, verification
from crm_bridge import rest as crm_rest
from crm_bridge.timeline import TIMELINE, Timeline
from crm_bridge.webhooks import DeliveryWorker, RetryPolicy
from dialplans.models import load_phones, load_routing
from flows import rest as flows_rest
from flows.hours import Calendars
from flows.runtime import FLOWS, FlowRuntime, LiveFlows, checks_for
from hilo.degraded import Degradations
from hilo.notifier import Notifier
from hilo.passwords import Peppers
from hilo.settings import Settings
from hilo.spool import Spool
from hilo.stores import background_pool, redis_client, server_pool
from hilo.web.api import add_api, build_api
from hilo.web.auth import AUTH_KEY, TokenAuth
from hilo.web.forwarded import Proxies, add_transport_security
from hilo.web.keys import POOL, REDIS, REGISTRY, SETTINGS
from hilo.web.openapi import Api
from hilo.web.sessions import SESSIONS, SessionStore
from hilo.web.signin import SIGNIN, SignInLimiter, signin_limits
from hilo.web.unavailable import unavailable
from ivr.call_owners import CallOwners, tell_workers
from ivr.inbound import CALLS, TECHNICAL_PROBLEM_PROMPT, CallMetrics, InboundCalls
from ivr.reconcile import ReconcileMetrics
from ivr.waiting import warm_up
from recordings import rest as recordings_rest
from recordings import setup as recording_setup
from recordings.calls import RECORDER
from reports import rest as reports_rest
from reports.config import load_kpi_config
from reports.metrics import KpiCollector
from reports.monitor import WALLBOARD, WallboardMonitor
from reports.service import Reports
from reports.wallboard import QueueInfo, Wallboard
from routing import rest as routing_rest
from routing.engine import ROUTING, RoutingEngine
from routing.live import BOARD, AgentBoard
from routing.presence import EndpointPresence, routing_presence
from server import health
from server.seed import upsert_agents
from server.services import SERVICES, Services
from speech.listener import SpeechService
from speech.tts import PromptCache, voice_for

log = logging.getLogger(__name__)


def hilo_api() -> Api:
    """The one API: every feature's route table, served and described together at /api/openapi.json."""
    return build_api(
        crm_rest.ROUTES,  # customers, identities, merges, timeline, cases, webhooks
        routing_rest.ROUTES,
        call_control.ROUTES,  # hold, supervision, moves, the audit of live work
        transfers.ROUTES,
        recordings_rest.ROUTES,
        reports_rest.ROUTES,
        console_api.ROUTES,  # /api/agents (handled by console/api.py)
        flows_rest.ROUTES,  # /api/flows… (handled by flows/rest.py)
        health.ROUTES,  # /api/health: /healthz with its details, for staff
        asterisk_rest.ROUTES,  # /api/sip/blocks: the SIP guard's block list
    )


def init_app(settings: Settings) -> web.Application:
    routing = load_routing(settings.dialplans_dir)
    checks_for(settings.dialplans_dir)  # a broken routing.yaml stops the start here, before any connection
    load_phones(settings.dialplans_dir)  # so does a broken or missing phones.yaml (agents' phones are checked)
    crm = connectors.from_settings(settings)  # so does a HILO_CRM_* setting that cannot work
    recording_keys = recording_setup.key_ring(settings)  # and a HILO_RECORDING_KEYS entry that cannot be used
    messaging_config = bridges_http.load_messaging_config(settings)  # and a broken channels.yaml
    proxies = Proxies.parse(settings.trusted_proxies)  # and HILO_TRUSTED_PROXIES
    peppers = Peppers.parse(  # and a pepper too short to be one
        settings.secret_pepper.get_secret_value(), settings.secret_pepper_previous.get_secret_value()
    )
    sip_guard_config = guard_config(  # and a HILO_SIP_NEVER_BLOCK entry that is not an address
        block_after=settings.sip_block_after,
        window_s=settings.sip_block_window_s,
        block_s=settings.sip_block_s,
        max_blocked=settings.sip_block_max,
        never_block=settings.sip_never_block,
    )
    # and a broken kpis.yaml; a queue's service-level threshold is its routing.yaml SLA
    kpi_config = load_kpi_config(settings.dialplans_dir, {q.id: q.sla.within_s for q in routing.queues})
    registry = CollectorRegistry()
    services = Services(settings=settings, registry=registry)
    app = web.Application(middlewares=[unavailable])  # PostgreSQL away: 503 with Retry-After, not 500
    app[SERVICES] = services
    app[SETTINGS] = settings
    app[REGISTRY] = registry
    app[AUTH_KEY] = TokenAuth({settings.api_token.get_secret_value(): "admin"})
    add_transport_security(app, proxies, settings.hsts_max_age_s)  # X-Forwarded-* from trusted proxies; HSTS
    verification.use_peppers(peppers)  # customers' PIN / date-of-birth hashes
    if peppers.current is None:
        log.warning("HILO_SECRET_PEPPER is not set: customers' PIN and date-of-birth hashes have no pepper")
    else:
        log.info("customers' secrets are hashed with pepper %s", peppers.current.id)  # an id, not the pepper
    metrics = CallMetrics(
        started=Counter("hilo_calls_started", "Inbound calls answered", registry=registry),
        ended=Counter("hilo_calls_ended", "Calls ended, by outcome", ["outcome"], registry=registry),
        active=Gauge("hilo_calls_active", "Calls in progress on this node", registry=registry),
        reconcile=ReconcileMetrics(
            reconciled=Counter(
                "hilo_reconciled",
                "Interactions the reconciler ended because nothing was behind them any more, by reason",
                ["reason"],
                registry=registry,
            ),
            violations=Gauge(
                "hilo_invariant_violations", "Breaches of the routing invariants the last pass found", registry=registry
            ),
        ),
    )
    # A slow or missing store never drops a call: each degraded moment is counted, and timeline writes that
    # could not reach PostgreSQL in time wait in this node's spool (hilo/spool.py).
    degradations = Degradations(registry)
    spool = Spool(settings.spool_dir / f"{settings.node}.spool", settings.spool_max_mb * 1024 * 1024)
    Gauge("hilo_spool_records", "Timeline writes waiting in this node's spool", registry=registry).set_function(
        lambda: len(spool)
    )
    Gauge("hilo_spool_bytes", "Size of this node's spool file", registry=registry).set_function(lambda: spool.size)

    async def postgres(app: web.Application) -> AsyncIterator[None]:
        # Two pools, so background work can never starve the calls (hilo/stores.py).
        services.pool = await server_pool(settings)
        services.background_pool = await background_pool(settings)
        await upsert_agents(services.pool, routing.agents)
        app[POOL] = services.pool
        yield
        await services.background_pool.close()
        await services.pool.close()

    async def redis(app: web.Application) -> AsyncIterator[None]:
        # named, so CLIENT LIST tells this deployment's connections (sessions, pub/sub feeds) from others'
        services.redis = redis_client(settings, client_name=settings.namespace)
        await services.redis.ping()
        app[REDIS] = services.redis
        app[SESSIONS] = SessionStore(services.redis, settings.namespace)
        app[SIGNIN] = SignInLimiter(services.redis, settings.namespace, signin_limits(settings))
        assert services.pool is not None
        # routing.yaml seeds the routing configuration in PostgreSQL; the live state is in Redis (rebuilt
        # from PostgreSQL if Redis has none). An offer nobody settles outlives any ring timeout.
        services.routing = RoutingEngine(
            services.redis,
            services.pool,
            settings.namespace,
            default_max_wait_s=settings.queue_max_wait_s,
            offer_ttl_s=settings.ring_timeout_s + 60,
            calendars=lambda: services.flows.current.calendars if services.flows else Calendars(),
        )
        await services.routing.start(seed=routing)
        services.board = AgentBoard(services.routing)
        app[ROUTING], app[BOARD] = services.routing, services.board
        yield
        await services.routing.close()
        await services.redis.aclose()

    async def telephony(app: web.Application) -> AsyncIterator[None]:
        assert services.pool is not None and services.redis is not None and services.board is not None
        assert services.routing is not None
        notifier = Notifier(services.redis, settings.namespace, degradations)
        left = await asyncio.to_thread(spool.open)
        if left:
            log.warning("the spool %s holds %d timeline writes of an earlier run: replaying them", spool.path, left)
        services.timeline = Timeline(
            services.pool,
            notifier.publish,
            spool=spool,
            budget_s=settings.store_write_budget_s,
            degradations=degradations,
        )
        await services.timeline.start()
        app[TIMELINE] = services.timeline
        # kept prompts for good; personal ones (rendered from a caller's data) deleted once unused a while
        prompts = PromptCache(settings.tts_cache_dir, settings.sounds_dir, personal_ttl_s=settings.tts_personal_ttl_s)
        services.ami = AmiClient(
            settings.ami_host, settings.ami_port, settings.ami_user, settings.ami_password.get_secret_value()
        )
        numbers_dialplan = NumbersDialplanSync(services.ami, settings.asterisk_root)
        # Asterisk's security events counted; sources that keep failing refused. Every worker would count each
        # event again (AMI sends it to every session): the first worker alone guards.
        if settings.sip_guard and settings.worker <= 1:
            ami = services.ami
            services.sip_guard = SipGuard(
                services.redis,
                settings.namespace,
                sip_guard_config,
                acl=AclFile(settings.asterisk_root, settings.namespace),
                reload=lambda: pjsip_reload(ami),
                registry=registry,
            )
            services.ami.handlers.append(services.sip_guard.on_ami_event)
            app[SIP_GUARD] = services.sip_guard
        syncing: set[asyncio.Task[bool]] = set()

        async def prepare_version(flows: LiveFlows) -> None:
            # Before a version goes live, so no caller waits for synthesis of a static prompt.
            for text, voice, language in flows.static_prompts():
                await prompts.render(text, voice, language, keep=True)
            # Asterisk's numbers follow in the background (AMI may still be logging in).
            task = asyncio.create_task(numbers_dialplan.sync(flows.numbers, source=f"flow version {flows.version}"))
            syncing.add(task)
            task.add_done_callback(syncing.discard)

        queue_prompts = [text for q in routing.queues for text in (q.no_agent_prompt, q.closed_prompt)]
        for text in [TECHNICAL_PROBLEM_PROMPT, *queue_prompts]:
            await prompts.render(text, voice_for("en", None), "en", keep=True)
        services.flows = FlowRuntime(
            services.pool,
            settings.dialplans_dir,
            settings.database_url.get_secret_value(),
            prepare=prepare_version,
            announce=notifier.publish,
            sounds_root=settings.sounds_dir.parent,  # Asterisk's sounds: hilo/ is where the prompts go
        )
        await services.flows.start()  # refuses to start on a flow version with problems
        flows = services.flows
        app[FLOWS] = flows
        # One screen-pop publisher for voice and text: the pop before an agent's phone rings, chat events after.
        services.screenpops = ScreenPops(services.pool, services.redis, settings.namespace, lambda: flows.current.flows)
        app[SCREENPOPS] = services.screenpops
        services.ari = AriClient(  # its Stasis app: the calls this process owns (one per worker)
            settings.ari_url, settings.ari_user, settings.ari_password.get_secret_value(), settings.stasis_app
        )
        services.calls = InboundCalls(
            ari=services.ari,
            pool=services.pool,
            timeline=services.timeline,
            engine=services.routing,
            prompts=prompts,
            live_flows=lambda: flows.current,
            routing=routing,
            metrics=metrics,
            default_region=settings.default_region,
            ring_timeout_s=settings.ring_timeout_s,
            queue_max_wait_s=settings.queue_max_wait_s,
            wrapup_s=settings.wrapup_s,
            # the screen-pop is published to the agent's console before their phone rings
            on_offer=services.screenpops.on_offer,
            identify_budget_s=settings.identify_budget_s,
            degradations=degradations,
            reconcile_interval_s=settings.reconcile_interval_s,
            reconcile_grace_s=settings.reconcile_grace_s,
        )
        app[CALLS] = services.calls
        dialler = services.calls.callbacks
        dialler.dial, dialler.customer_ring_s = settings.callback_dial, settings.callback_ring_s
        dialler.max_attempts, dialler.retry_s = settings.callback_max_attempts, settings.callback_retry_s
        # the fixed parts of queue announcements, rendered before the first caller waits
        warming = asyncio.create_task(warm_up(prompts, voice_for("en", None), "en"), name="warm-announcements")
        enrichment = None
        if crm is not None:  # a caller new to Hilo is looked up in the company's CRM, within a time box
            enrichment = connectors.CallerEnrichment(
                crm,
                connectors.EnrichmentStore(services.pool, services.timeline),
                box_s=settings.crm_timebox_s,
                timeout_s=settings.crm_timeout_s,
            )
            services.calls.on_new_caller = enrichment.on_new_caller
        speech = SpeechService.from_config(settings.vosk_models, settings.speech_engines, settings.speech_media_host)
        services.calls.speech = speech
        # Agents whose phone stops answering Asterisk's OPTIONS are not offered calls until it answers again.
        presence = EndpointPresence(
            services.ari, {a.sip_endpoint: a.id for a in routing.agents}, routing_presence(services.routing)
        )
        owners = None
        if settings.workers > 1:  # a call another worker owns is acted on by its owner (hold, unhold)
            owners = CallOwners(services.redis, settings.namespace, settings.stasis_app, services.calls.live)
            await owners.start()
            services.calls.owners = owners
        ari = services.ari  # the dialplan learns how many worker apps serve this namespace (context hilo-stasis)
        ari.on_connect.append(lambda: tell_workers(ari, settings.namespace, settings.workers))
        await services.ari.start()
        await services.ami.start()
        if services.sip_guard is not None:
            await services.sip_guard.start()
        yield
        warming.cancel()
        if services.sip_guard is not None:
            await services.sip_guard.close()
        await services.calls.close()
        if owners is not None:
            await owners.close()
        speech.close()
        if enrichment is not None:
            await enrichment.close()
        await presence.close()
        await services.ari.close()
        await services.ami.close()
        await services.flows.close()
        for task in list(syncing):
            task.cancel()
        prompts.close()
        await services.timeline.close()
        spool.close()

    async def webhooks(_: web.Application) -> AsyncIterator[None]:
        assert services.background_pool is not None
        policy = RetryPolicy(
            settings.webhook_max_attempts,
            settings.webhook_backoff_s,
            settings.webhook_backoff_max_s,
            settings.webhook_timeout_s,
        )
        services.webhooks = DeliveryWorker(services.background_pool, settings.database_url.get_secret_value(), policy)
        await services.webhooks.start()
        yield
        await services.webhooks.close()

    app.cleanup_ctx.extend([postgres, redis, telephony])
    app.cleanup_ctx.append(webhooks)

    async def to_conversations(message: InboundMessage) -> None:
        # The inbox's handler from its first message on: until the conversation layer runs (and after it
        # stopped) a message fails and the inbox tries it again later, rather than taking it as processed.
        if services.conversations is None:
            raise RuntimeError("the conversation layer is not running")
        await services.conversations(message)

    async def messaging(_: web.Application) -> AsyncIterator[None]:
        # Inbound SMS/WhatsApp are stored before they are acknowledged, then processed by the inbox's
        # handler: the conversation layer (`to_conversations`, started just after this).
        assert services.pool is not None and services.background_pool is not None
        services.messaging = bridges_http.create_messaging(
            settings,
            services.pool,
            outbox_pool=services.background_pool,  # sending out is background work
            config=messaging_config,
            handler=to_conversations,
        )
        await services.messaging.start()
        yield
        await services.messaging.close()

    app.cleanup_ctx.append(messaging)

    async def conversations(app: web.Application) -> AsyncIterator[None]:
        # Text conversations (bridges/conversations.py) answer the inbox; web chat replies go out through
        # the outbox with the web chat sender, to the visitor's socket on whichever node holds it.
        assert services.pool is not None and services.redis is not None and services.routing is not None
        assert services.timeline is not None and services.flows is not None and services.messaging is not None
        flows, messaging_now = services.flows, services.messaging
        messaging_now.outbox.register(webchat.WebChatSender(services.redis, settings.namespace))
        services.webchat = webchat.WebChat(
            messaging_now.inbox,
            services.redis,
            settings.namespace,
            limits=webchat_limits(settings),
            trusted_proxies=messaging_now.trusted_proxies,
            channels=messaging_now.channels,
        )
        services.webchat.start()  # one Redis subscription for every visitor socket on this node
        assert services.screenpops is not None
        services.conversations = Conversations(
            pool=services.pool,
            redis=services.redis,
            namespace=settings.namespace,
            publish=services.timeline.publish,
            engine=services.routing,
            outbox=messaging_now.outbox,
            live_flows=lambda: flows.current,
            pick_flow=flow_by_channel(messaging_now.channels),
            default_region=settings.default_region,
            wrapup_s=settings.wrapup_s,
            queue_max_wait_s=settings.queue_max_wait_s,
            survey_wait_s=settings.conversation_survey_wait_s,
            on_offer=services.screenpops.on_offer,
            tell_agent=services.screenpops.tell,
        )
        assert services.calls is not None  # one outbound policy (routing.yaml's) for callbacks booked by voice or text
        services.conversations.outbound = services.calls.outbound
        await services.conversations.start()
        app[CONVERSATIONS] = services.conversations
        yield
        conversations_now, services.conversations = services.conversations, None
        await conversations_now.close()
        await services.webchat.close()

    app.cleanup_ctx.append(conversations)

    async def recordings(app: web.Application) -> AsyncIterator[None]:
        assert services.pool is not None and services.timeline is not None
        assert services.ari is not None and services.calls is not None
        if recording_keys is None:
            log.warning("recordings are off: HILO_RECORDING_KEYS is not set (voicemail stays in Asterisk's spool)")
            yield
            return
        services.recordings = recording_setup.call_recorder(
            settings,
            recording_keys,
            ari=services.ari,
            pool=services.pool,
            timeline=services.timeline,
            queues=routing.queues,
        )
        services.calls.recorder = services.recordings
        app[RECORDER] = services.recordings
        assert services.background_pool is not None
        background = services.background_pool
        async with (
            recording_setup.housekeeping(services.recordings, settings, background),  # spool sweep + retention purge
            recording_setup.transcription(services.recordings, settings, background) as transcripts,
        ):
            services.transcripts = transcripts
            yield

    app.cleanup_ctx.append(recordings)

    async def wallboard(app: web.Application) -> AsyncIterator[None]:
        assert services.background_pool is not None and services.redis is not None and services.board is not None
        background = services.background_pool  # the wallboard's reads and the KPI reports
        board = Wallboard(background, services.board, kpi_config, [QueueInfo(q.id, q.name) for q in routing.queues])
        services.wallboard = WallboardMonitor(
            board,
            Reports(background, kpi_config, timeout=settings.db_report_timeout_s),
            services.redis,
            settings.namespace,
        )
        await services.wallboard.start()
        app[WALLBOARD] = services.wallboard
        yield
        await services.wallboard.close()

    app.cleanup_ctx.append(wallboard)
    registry.register(KpiCollector(lambda: services.wallboard))  # the KPIs on /metrics
    add_api(app, hilo_api())
    health.add_routes(app)  # /healthz, /metrics (anonymous: minimal and aggregates only)
    console_api.add_routes(app)  # /api/agents…, the agent console, the wallboard and reports pages
    flows_rest.add_flow_routes(app)
    console_chat.add_routes(app)  # the console's chat pane: /console/api/chats…
    webchat.add_routes(app, lambda: services.webchat)  # the web chat widget and its visitors' socket
    bridges_http.add_routes(app, lambda: services.messaging)  # /webhooks/twilio/…, /webhooks/whatsapp
    return app


def run(settings: Settings) -> None:
    app = init_app(settings)
    log.info(
        "Hilo listening on http://%s:%d (Stasis app %s)", settings.http_host, settings.http_port, settings.stasis_app
    )
    # Workers share the port (SO_REUSEPORT: the kernel spreads connections); every request any worker takes
    # reaches the call it names through its owner (ivr/call_owners.py).
    reuse_port = True if settings.workers > 1 else None
    web.run_app(app, host=settings.http_host, port=settings.http_port, print=None, reuse_port=reuse_port)
