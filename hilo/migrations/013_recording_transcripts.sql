-- Transcripts of stored recordings (recordings/transcripts.py): one job per recording, queued by a trigger in
-- the very transaction that marks the recording stored (so a stored recording can never miss its job), worked
-- by a background worker that leases it (a node that dies mid-way leaves a lease that runs out, and the job is
-- taken up again), retried a few times, then left `failed` with the reason. The text is searchable with
-- PostgreSQL full-text search in the transcript's own language.

CREATE TABLE recording_transcripts (
    recording_id    uuid PRIMARY KEY REFERENCES recordings (id),
    -- pending: waiting or being worked (leased_until in the future); done: text holds the transcript;
    -- failed: gave up (error says why); deleted: the recording was deleted by retention, and the text with it.
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed', 'deleted')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_until    timestamptz,
    language        text,  -- 'en', 'es', ...: of the customer, else of the call's flow, else the server default
    engine          text,  -- the recognizer that made it (pocketsphinx, vosk)
    text            text,
    audio_s         double precision,  -- of speech decoded (paused spans are never decoded)
    decode_s        double precision,
    error           text,
    -- the search document, stemmed in the transcript's language ('simple' for one PostgreSQL has no rules for)
    search          tsvector GENERATED ALWAYS AS (
                        to_tsvector(
                            CASE language WHEN 'en' THEN 'english'::regconfig WHEN 'es' THEN 'spanish'::regconfig
                                          ELSE 'simple'::regconfig END,
                            coalesce(text, ''))
                    ) STORED,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz
);
CREATE INDEX recording_transcripts_due ON recording_transcripts (next_attempt_at) WHERE state = 'pending';
CREATE INDEX recording_transcripts_search ON recording_transcripts USING gin (search);

-- A recording that becomes stored gets its transcript job; the workers are woken at commit.
CREATE FUNCTION recording_transcript_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state = 'stored' AND OLD.state IS DISTINCT FROM 'stored' THEN
        INSERT INTO recording_transcripts (recording_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
        PERFORM pg_notify('hilo_recording_transcripts', NEW.id::text);
    END IF;
    -- Retention deletes the words with the audio.
    IF NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL THEN
        UPDATE recording_transcripts SET state = 'deleted', text = NULL, updated_at = now()
         WHERE recording_id = NEW.id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER recording_transcript_enqueue AFTER UPDATE OF state, deleted_at ON recordings
    FOR EACH ROW EXECUTE FUNCTION recording_transcript_enqueue();
