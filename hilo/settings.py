"""All configuration, read from HILO_* environment variables (and `.run/env`, which `make run` writes)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HILO_", env_file=REPO_ROOT / ".run" / "env", extra="ignore")

    # One name for this Hilo deployment: the Stasis app, the Redis key prefix and the event channel.
    # The stack tests run a second Hilo beside the demo one under another namespace.
    namespace: str = "hilo"
    # Several worker processes on one machine (`hilo serve --workers N`, server/workers.py): worker i of N
    # (1..N) owns the calls of its own Stasis app `<namespace>-w<i>`; Redis and the event channel stay the
    # deployment's. With one worker (worker 0, the default) the Stasis app is the namespace, as always.
    workers: int = Field(default=1, ge=1, le=64)
    worker: int = Field(default=0, ge=0, le=64)

    ari_url: str = "http://127.0.0.1:8088/ari"
    ari_user: str = "hilo"
    ari_password: SecretStr = SecretStr("")
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_user: str = "hilo"
    ami_password: SecretStr = SecretStr("")

    database_url: SecretStr = SecretStr("postgresql://hilo@127.0.0.1:5432/hilo")
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    # Bounds on waiting for the stores, so a stalled PostgreSQL or Redis (or a runaway query) fails one
    # request instead of holding a pooled connection for good. db_command_timeout_s: each statement of the
    # server's pool (client side: asyncpg cancels it); the KPI reports' reads, which may take long on a large
    # period, get db_report_timeout_s instead. Command-line tools (migrations, `hilo reports rebuild`, the
    # importer) have no bound. redis_timeout_s: connecting to Redis, and each command's answer (listening on
    # pub/sub is not bounded by it).
    db_command_timeout_s: float = Field(default=60.0, gt=0)
    db_report_timeout_s: float = Field(default=600.0, gt=0)
    # The same bounds kept by PostgreSQL itself on every connection of the server's pools (hilo/stores.py), so
    # they hold even when the client is gone or stuck: a statement of the call path's pool runs at most
    # db_statement_timeout_s, of the background pool db_background_statement_timeout_s (a KPI report's read
    # lifts it to db_report_timeout_s); any statement waits for a lock at most db_lock_timeout_s; a transaction
    # left idle (its client stalled between statements) longer than db_idle_in_transaction_timeout_s is ended.
    db_statement_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    db_background_statement_timeout_s: float = Field(default=60.0, gt=0, le=86_400)
    db_lock_timeout_s: float = Field(default=5.0, gt=0, le=3600)
    db_idle_in_transaction_timeout_s: float = Field(default=60.0, gt=0, le=86_400)
    redis_timeout_s: float = Field(default=5.0, gt=0, le=120)
    # Connections of a server's Redis client. At a peak every caller in a queue sends commands at once:
    # past this many, a command waits (at most redis_timeout_s) for a connection instead of failing.
    redis_max_connections: int = Field(default=200, ge=4, le=10000)
    # Two PostgreSQL pools per server (hilo/stores.py), so background work can never starve the calls:
    # db_pool_size connections for the call path (calls, routing, the console and the API) and
    # db_background_pool_size for the background (webhook deliveries, transcripts, KPI reports and the
    # wallboard, the messaging outbox, recording housekeeping). The defaults suit a 2-core PostgreSQL;
    # both pools of every node count against its max_connections (100 by default).
    db_pool_size: int = Field(default=10, ge=2, le=500)
    db_background_pool_size: int = Field(default=4, ge=1, le=500)
    # A slow store never drops a call (ivr/inbound.py, crm_bridge/timeline.py): identification waits at most
    # identify_budget_s (then the call goes on as not yet identified, and is identified when the store
    # answers); a timeline write waits at most store_write_budget_s, then goes to the node's durable spool
    # (spool_dir/<namespace>.spool, at most spool_max_mb), replayed in order when the store answers again.
    identify_budget_s: float = Field(default=0.5, gt=0, le=5)
    store_write_budget_s: float = Field(default=1.0, gt=0, le=30)
    spool_dir: Path = REPO_ROOT / ".run" / "spool"
    spool_max_mb: int = Field(default=64, ge=1, le=10_000)

    http_host: str = "127.0.0.1"
    http_port: int = 8080
    api_token: SecretStr = SecretStr("")
    # Behind a TLS proxy (hilo/web/forwarded.py): its X-Forwarded-For/-Proto/-Host are believed only when the
    # request comes from trusted_proxies (addresses or networks, "10.0.0.1,10.1.0.0/16"). A request that is
    # HTTPS (to Hilo itself or through such a proxy) gets the session cookie `Secure` and answers carry
    # Strict-Transport-Security with this max-age (0: no HSTS).
    trusted_proxies: str = ""
    hsts_max_age_s: int = Field(default=31536000, ge=0)
    # Console sign-in (hilo/web/signin.py): attempts, right or wrong, per client address in a window of
    # signin_rate_window_s; wrong ones per user name from all addresses (per address it is 5) in 15 minutes;
    # password checks at once on this node. Over any of them: 429 with Retry-After, before a hash is computed.
    signin_attempts_per_address: int = Field(default=20, ge=1)
    signin_rate_window_s: int = Field(default=60, ge=1, le=3600)
    signin_failures_per_user: int = Field(default=30, ge=5)
    signin_concurrent_checks: int = Field(default=8, ge=1, le=256)
    # Customers' PIN / date-of-birth hashes are keyed with this pepper (crm_bridge/verification.py; at least
    # 16 characters; empty: none). To rotate it, put the old value in secret_pepper_previous (comma-separated):
    # those hashes still verify and are re-hashed with the new pepper at their next successful verification.
    secret_pepper: SecretStr = SecretStr("")
    secret_pepper_previous: SecretStr = SecretStr("")
    # The Prometheus scrape token (server/health.py): `/metrics` without it has the aggregates only (per
    # queue, channel, the whole centre); with `Authorization: Bearer <metrics_token>` the per-agent series
    # too. Empty: per-agent series are never published.
    metrics_token: SecretStr = SecretStr("")

    # Where TTS prompts are written so that Asterisk can play them as `sound:hilo/<name>`.
    sounds_dir: Path = REPO_ROOT / ".run" / "sounds" / "hilo"
    tts_cache_dir: Path = REPO_ROOT / ".run" / "tts-cache"
    # A prompt rendered from a caller's data (speech/tts.py: "Welcome back, Ana") is deleted once unused this long.
    tts_personal_ttl_s: float = Field(default=3600.0, ge=60, le=86_400)
    dialplans_dir: Path = REPO_ROOT / "dialplans"
    default_region: str = "ES"  # ISO region of numbers dialled without a country code

    ring_timeout_s: int = 15
    queue_max_wait_s: int = 300
    wrapup_s: float = 0.0
    # The reconciler (ivr/reconcile.py): a pass every reconcile_interval_s ends what calls that are gone left
    # behind; a call's own task gets reconcile_grace_s to end it first (and a call that began less than that
    # ago is never judged).
    reconcile_interval_s: float = Field(default=5.0, gt=0, le=300)
    reconcile_grace_s: float = Field(default=10.0, ge=1, le=3600)
    # Booked callbacks (ivr/callbacks.py): how the customer is dialled (`{number}` = E.164; the dialplan
    # context hilo-callback dials out through the carrier trunk), how long their phone rings, how many
    # dials at most and the pause between them.
    callback_dial: str = "Local/{number}@hilo-callback"
    callback_ring_s: int = Field(default=30, ge=5, le=300)
    callback_max_attempts: int = Field(default=3, ge=1, le=20)
    callback_retry_s: float = Field(default=300.0, ge=1)

    # Outbound webhooks (crm_bridge/webhooks.py): a delivery is tried this many times, waiting
    # backoff_s * 2**(attempt-1) (jittered, capped at backoff_max_s) between tries, then dead-lettered.
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    webhook_backoff_s: float = Field(default=2.0, gt=0)
    webhook_backoff_max_s: float = Field(default=900.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)  # every POST, connecting included

    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    # SIP over TLS (the production profile of docker-compose.yml, asterisk/etc/production/hilo-tls.conf): the
    # port of Asterisk's TLS transport; phones are then rendered on it with SRTP required (`hilo phones
    # render`). 0: no TLS (the local stack: plain SIP on loopback).
    sip_tls_port: int = Field(default=0, ge=0, le=65535)
    # A file of HILO_PHONE_SECRET_<ENDPOINT>=... lines, the phones' passwords where no .run/env holds them
    # (docker-compose.yml: `hilo phones new-secrets` fills it, in a volume of its own); the environment wins.
    phone_secrets_file: Path | None = None
    asterisk_root: Path | None = None
    # The SIP guard (asterisk/sip_guard.py): a source whose SIP requests Asterisk refused sip_block_after times
    # within sip_block_window_s (unknown name, wrong password, ...) is refused by Asterisk for sip_block_s;
    # at most sip_block_max sources at once. Never blocked: sip_never_block (addresses or networks, comma
    # separated) and the trunks' addresses in pjsip.conf. Blocking needs asterisk_root (Asterisk's config).
    sip_guard: bool = True
    sip_block_after: int = Field(default=5, ge=1, le=1000)
    sip_block_window_s: int = Field(default=60, ge=1, le=86_400)
    sip_block_s: int = Field(default=900, ge=1, le=30 * 86_400)
    sip_block_max: int = Field(default=1000, ge=1, le=100_000)
    sip_never_block: str = "127.0.0.1/32,::1/128"

    # Speech input (speech/). vosk_models: a vosk model folder per language, as JSON
    # (HILO_VOSK_MODELS='{"es": "/opt/vosk/vosk-model-small-es-0.42"}'); English works without one
    # (pocketsphinx). speech_engines: which engine serves a language when several could ('{"en": "vosk"}').
    # speech_media_host: the address Hilo receives call audio on (RTP from Asterisk's externalMedia).
    vosk_models: dict[str, Path] = Field(default_factory=dict)
    speech_engines: dict[str, str] = Field(default_factory=dict)
    speech_media_host: str = "127.0.0.1"

    # An outside CRM asked about callers Hilo has never seen (crm_bridge/connectors.py); off when crm_url is
    # empty. crm_url holds `{phone}` (the caller's E.164 number, URL-encoded); crm_auth is the value of the
    # crm_auth_header header (e.g. "Bearer ..."); crm_mapping says which answer fields give name, email,
    # external_id (stored as `<crm_system>:<id>`) and language. A call waits at most crm_timebox_s for it;
    # the lookup goes on in the background up to crm_timeout_s.
    crm_url: str = ""
    crm_system: str = "crm"
    crm_auth_header: str = "Authorization"
    crm_auth: SecretStr = SecretStr("")
    crm_mapping: str = '{"name": "name", "email": "email", "external_id": "id", "language": "language"}'
    crm_timebox_s: float = Field(default=0.8, gt=0, le=2.0)
    crm_timeout_s: float = Field(default=10.0, gt=0, le=120)

    # Call recordings (recordings/): encrypted files under recordings_dir. recording_keys lists every
    # AES-256 key still needed ("id:base64,id:base64"), recording_key_id the one new files are written
    # with; without keys nothing is recorded (voicemail stays in Asterisk's spool). Retention: days per
    # queue in routing.yaml, else recording_retention_days; the purge runs every recording_purge_interval_s.
    recordings_dir: Path = REPO_ROOT / ".run" / "recordings"
    recording_keys: SecretStr = SecretStr("")
    recording_key_id: str = ""
    recording_retention_days: int = Field(default=90, ge=1, le=36500)
    recording_purge_interval_s: float = Field(default=3600.0, gt=0)
    recording_url_ttl_s: int = Field(default=300, ge=10, le=86400)  # lifetime of a signed playback URL
    # Transcripts (recordings/transcripts.py): every stored recording is transcribed in the background with
    # the speech engine of its language (the call's flow's, else the customer's, else transcript_language);
    # a failure is retried transcript_max_attempts times in all, transcript_retry_s apart (doubling).
    transcripts: bool = True
    transcript_language: str = Field(default="en", pattern=r"^[a-z]{2,3}$")
    transcript_max_attempts: int = Field(default=3, ge=1, le=20)
    transcript_retry_s: float = Field(default=30.0, gt=0)

    # Messaging (bridges/, channels in dialplans/channels.yaml). public_base_url: the https origin the
    # providers call (their webhooks are signed over it); without it the request's own scheme and host,
    # from X-Forwarded-Proto/-Host only when the request comes from trusted_proxies (above).
    public_base_url: str = ""
    twilio_account_sid: str = ""  # the account of channels.yaml entries that name none
    twilio_auth_token: SecretStr = SecretStr("")  # signs Twilio's webhooks; the REST API password
    twilio_api_base: str = "https://api.twilio.com"
    whatsapp_app_secret: SecretStr = SecretStr("")  # signs the Cloud API's webhooks (X-Hub-Signature-256)
    whatsapp_verify_token: SecretStr = SecretStr("")  # the subscription handshake's hub.verify_token
    whatsapp_access_token: SecretStr = SecretStr("")  # bearer token of the Cloud API
    whatsapp_api_base: str = "https://graph.facebook.com"
    whatsapp_api_version: str = "v21.0"
    # Outbox: a send is tried messaging_max_attempts times, waiting backoff_s * 2**(attempt-1) (jittered,
    # capped) or the provider's Retry-After (at most retry_after_max_s: `inf` or a day is not taken as
    # given); each provider sends at most rate_per_s (bursts of burst).
    messaging_max_attempts: int = Field(default=10, ge=1, le=100)
    messaging_backoff_s: float = Field(default=1.0, gt=0)
    messaging_backoff_max_s: float = Field(default=300.0, gt=0)
    messaging_retry_after_max_s: float = Field(default=300.0, gt=0, le=86_400)
    messaging_send_timeout_s: float = Field(default=15.0, gt=0, le=120)
    # the conversation layer's time for one inbound message; a node stopped mid-way holds it 5 s longer
    messaging_handler_timeout_s: float = Field(default=30.0, gt=0)
    # a post-chat survey (a queue's `after_agent` on text) left unanswered this long ends quietly
    conversation_survey_wait_s: float = Field(default=3600.0, gt=0)
    twilio_rate_per_s: float = Field(default=10.0, gt=0)
    twilio_burst: int = Field(default=10, ge=1)
    whatsapp_rate_per_s: float = Field(default=20.0, gt=0)
    whatsapp_burst: int = Field(default=20, ge=1)
    # The public web chat socket's rate limits (bridges/webchat_limits.py), per window of webchat_rate_window_s
    # seconds; 0 turns one off.
    webchat_rate_window_s: int = Field(default=60, ge=1, le=3600)
    webchat_connects_per_address: int = Field(default=60, ge=0)
    webchat_connects_per_visitor: int = Field(default=20, ge=0)
    webchat_messages_per_address: int = Field(default=120, ge=0)
    webchat_messages_per_visitor: int = Field(default=30, ge=0)
    # How many web chat sockets may be open at once on one node: per client address (IPv6: per /64), per
    # visitor, and in all; 0 turns one off.
    webchat_sockets_per_address: int = Field(default=20, ge=0)
    webchat_sockets_per_visitor: int = Field(default=5, ge=0)
    webchat_sockets_total: int = Field(default=5000, ge=0)

    @model_validator(mode="after")
    def _worker_of_the_workers(self) -> Settings:
        if self.worker > self.workers:
            raise ValueError(f"HILO_WORKER={self.worker} is not one of the HILO_WORKERS={self.workers} workers (1..N)")
        return self

    @property
    def stasis_app(self) -> str:
        """This process's Stasis app: the namespace alone, or `<namespace>-w<i>` for worker i of several."""
        return worker_app(self.namespace, self.worker) if self.worker else self.namespace

    @property
    def node(self) -> str:
        """What names this process's own files (its spool): the Stasis app, one per process."""
        return self.stasis_app


def worker_app(namespace: str, worker: int) -> str:
    return f"{namespace}-w{worker}"


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
