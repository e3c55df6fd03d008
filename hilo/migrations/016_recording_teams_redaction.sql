-- Recordings by team, and nothing of a deleted recording left behind.
--
-- 1. The teams a supervisor supervises (recordings/access.py): a supervisor uses the recordings of agents in
--    those teams (agents.teams, routing.yaml), and of calls with no agent whose queue an agent of those teams
--    serves. Set with `hilo users add NAME --role supervisor --team T ...`; only supervisors have teams.
ALTER TABLE console_users
    ADD COLUMN teams text[] NOT NULL DEFAULT '{}',
    ADD CONSTRAINT console_users_teams_of_supervisors CHECK (role = 'supervisor' OR teams = '{}');

-- 2. The transcript's words are also on the timeline (`recording.transcribed`). When the recording is deleted
--    they are redacted there, in the deleting transaction: `text` becomes null, and `redacted`, `redacted_at`
--    and `redaction_reason` say that it happened, when and why. This is the one rewrite the append-only
--    timeline allows, and only through redact_recording_transcript(): it sets a transaction-local marker
--    naming the recording, and the trigger lets an UPDATE through only for that recording's
--    `recording.transcribed` events and only if nothing but those four keys changes. (It keeps code from
--    rewriting history by mistake; it is not a barrier against the database owner, who could drop the trigger.)
CREATE OR REPLACE FUNCTION timeline_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    redaction CONSTANT text[] := ARRAY['text', 'redacted', 'redacted_at', 'redaction_reason'];
BEGIN
    IF TG_OP = 'UPDATE'
       AND OLD.type = 'recording.transcribed'
       AND current_setting('hilo.redacting_recording', true) = OLD.data->>'recording_id'
       AND (NEW.id, NEW.customer_id, NEW.interaction_id, NEW.type, NEW.channel, NEW.at)
           IS NOT DISTINCT FROM (OLD.id, OLD.customer_id, OLD.interaction_id, OLD.type, OLD.channel, OLD.at)
       AND NEW.data - redaction = OLD.data - redaction
       AND NEW.data->'text' = 'null'::jsonb
       AND NEW.data->'redacted' = 'true'::jsonb
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'timeline_events is append-only (% refused)', TG_OP;
END $$;

-- Finds a recording's transcript events without reading the whole timeline.
CREATE INDEX timeline_recording_transcribed ON timeline_events ((data->>'recording_id'))
    WHERE type = 'recording.transcribed';

-- Redacts the transcript text of `recording` on the timeline; returns how many events it redacted (0 when
-- there were none or they already were).
CREATE FUNCTION redact_recording_transcript(recording uuid, reason text) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    redacted integer;
BEGIN
    PERFORM set_config('hilo.redacting_recording', recording::text, true);
    UPDATE timeline_events
       SET data = data || jsonb_build_object(
               'text', NULL, 'redacted', true, 'redacted_at', clock_timestamp(), 'redaction_reason', reason)
     WHERE type = 'recording.transcribed' AND data->>'recording_id' = recording::text
       AND data->'redacted' IS DISTINCT FROM 'true'::jsonb;
    GET DIAGNOSTICS redacted = ROW_COUNT;
    PERFORM set_config('hilo.redacting_recording', '', true);
    RETURN redacted;
END $$;

-- Migration 013's trigger, which deletes the transcript with the recording, now also redacts the timeline.
-- The retention job redacts first with its own reason; this catches any other way a recording is deleted.
CREATE OR REPLACE FUNCTION recording_transcript_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state = 'stored' AND OLD.state IS DISTINCT FROM 'stored' THEN
        INSERT INTO recording_transcripts (recording_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
        PERFORM pg_notify('hilo_recording_transcripts', NEW.id::text);
    END IF;
    -- Deleting a recording deletes its words: the transcript, and its text on the timeline.
    IF NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL THEN
        UPDATE recording_transcripts SET state = 'deleted', text = NULL, updated_at = now()
         WHERE recording_id = NEW.id;
        PERFORM redact_recording_transcript(NEW.id, 'recording deleted');
    END IF;
    RETURN NEW;
END $$;
