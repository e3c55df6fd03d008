"""The live resources of one Hilo server, as the composition root (server/app.py) opens them: its own
registry for their life cycle, and what the stack tests reach into. Handlers never read it: each gets what
it needs through a typed key (hilo/web/keys.py, and each feature's key beside its class)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry

from asterisk.ami import AmiClient
from asterisk.ari import AriClient
from asterisk.sip_guard import SipGuard
from bridges.conversations import Conversations
from bridges.http import Messaging
from bridges.webchat import WebChat
from console.screenpop import ScreenPops
from crm_bridge.timeline import Timeline
from crm_bridge.webhooks import DeliveryWorker
from flows.runtime import FlowRuntime
from hilo.settings import Settings
from ivr.inbound import InboundCalls
from recordings.calls import CallRecorder
from recordings.transcripts import TranscriptWorker
from reports.monitor import WallboardMonitor
from routing.engine import RoutingEngine
from routing.live import AgentBoard


@dataclass
class Services:
    settings: Settings
    registry: CollectorRegistry
    pool: asyncpg.Pool | None = None  # the call path's: calls, routing, the console and the API
    # webhook deliveries, transcripts, reports and the wallboard, the outbox, recording housekeeping
    background_pool: asyncpg.Pool | None = None
    redis: aioredis.Redis | None = None
    ari: AriClient | None = None
    ami: AmiClient | None = None
    calls: InboundCalls | None = None
    board: AgentBoard | None = None
    routing: RoutingEngine | None = None  # who gets which interaction; `board` is its agents' view
    timeline: Timeline | None = None
    flows: FlowRuntime | None = None
    webhooks: DeliveryWorker | None = None
    recordings: CallRecorder | None = None  # None: no HILO_RECORDING_KEYS, nothing is recorded
    transcripts: TranscriptWorker | None = None  # None: recordings or HILO_TRANSCRIPTS off
    wallboard: WallboardMonitor | None = None  # the wallboard, its alerts and the KPI reports
    messaging: Messaging | None = None  # SMS/WhatsApp webhooks, the inbox processor and the outbox
    conversations: Conversations | None = None  # the inbox's handler: flows, agents, threads over text
    webchat: WebChat | None = None  # the web chat visitors' side (bridges/webchat.py)
    screenpops: ScreenPops | None = None  # the agent's console: pops before ringing, chat events
    sip_guard: SipGuard | None = None  # counts refused SIP requests, blocks sources that keep failing


SERVICES = web.AppKey("services", Services)
