-- Call recordings (recordings/): one row per recorded conversation or voicemail, the file itself encrypted
-- in the recording store; and the audit of everything done with a recording (append-only).

CREATE TABLE recordings (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind           text NOT NULL CHECK (kind IN ('call', 'voicemail')),
    interaction_id uuid NOT NULL REFERENCES interactions (id),
    customer_id    uuid NOT NULL REFERENCES customers (id),
    agent_id       text REFERENCES agents (id),  -- the agent on the call: agents may hear their own calls only
    queue          text,
    -- recording: Asterisk is writing it; storing: being encrypted into the store; stored: in the store;
    -- failed: could not be recorded or stored (failure says why); deleted: removed by retention.
    state          text NOT NULL DEFAULT 'recording'
                   CHECK (state IN ('recording', 'storing', 'stored', 'failed', 'deleted')),
    asterisk_name  text NOT NULL UNIQUE,  -- the live/stored recording's name in Asterisk's spool
    started_at     timestamptz NOT NULL,
    ended_at       timestamptz,
    duration_s     double precision,  -- of the stored file, paused spans (as silence) included
    -- PCI pauses as offsets from the start of the recording: [{"start_s": 12.4, "end_s": 31.0}, ...];
    -- end_s is null while the recording is paused. The stored file holds silence there.
    paused_spans   jsonb NOT NULL DEFAULT '[]',
    storage_key    text,  -- where the encrypted file is in the store
    key_id         text,  -- which key of HILO_RECORDING_KEYS encrypted it
    sha256         text,  -- of the plaintext WAV, as stored
    size_bytes     bigint,
    retention_days integer NOT NULL CHECK (retention_days >= 1),
    delete_after   timestamptz NOT NULL,  -- started_at + retention_days; a legal hold overrides it
    legal_hold     boolean NOT NULL DEFAULT false,
    hold_reason    text,
    failure        text,
    deleted_at     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX recordings_interaction ON recordings (interaction_id);
CREATE INDEX recordings_customer ON recordings (customer_id, started_at);
CREATE INDEX recordings_agent ON recordings (agent_id, started_at);
CREATE INDEX recordings_due ON recordings (delete_after) WHERE deleted_at IS NULL AND NOT legal_hold;
CREATE INDEX recordings_unfinished ON recordings (started_at) WHERE state IN ('recording', 'storing');

CREATE TABLE recording_audit (
    id           bigserial PRIMARY KEY,
    recording_id uuid NOT NULL REFERENCES recordings (id),
    -- url: a playback/download URL was issued; playback, download: the audio was served;
    -- denied: a request for it was refused; pause, resume, hold, release, deleted.
    action       text NOT NULL
                 CHECK (action IN ('url', 'playback', 'download', 'denied', 'pause', 'resume', 'hold', 'release',
                                   'deleted')),
    actor        text NOT NULL,  -- console:<user>, api:<role>, or system:<job>
    detail       jsonb NOT NULL DEFAULT '{}',
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX recording_audit_recording ON recording_audit (recording_id, at);

CREATE FUNCTION recording_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'recording_audit is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER recording_audit_append_only BEFORE UPDATE OR DELETE ON recording_audit
    FOR EACH ROW EXECUTE FUNCTION recording_audit_append_only();
