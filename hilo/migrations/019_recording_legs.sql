-- Per-leg call recordings (recordings/calls.py): besides the bridge's mixed audio, a queue may record each
-- side of the conversation on its own (routing.yaml `recording: {legs: true}`). A leg is a recording like any
-- other (same store, pause, access rule, retention), tied to the mixed recording of the same conversation.
ALTER TABLE recordings
    ADD COLUMN leg text NOT NULL DEFAULT 'mixed' CHECK (leg IN ('mixed', 'caller', 'agent')),
    -- the conversation's mixed recording, for a caller or agent leg; null for the mixed one itself
    ADD COLUMN mixed_id uuid REFERENCES recordings (id),
    ADD CONSTRAINT recordings_leg_of_a_mixed CHECK ((leg = 'mixed') = (mixed_id IS NULL));
CREATE INDEX recordings_mixed ON recordings (mixed_id) WHERE mixed_id IS NOT NULL;

-- Only the mixed recording is transcribed: it holds both speakers already, and the two legs would triple the
-- speech engine's work for the same words (migration 016's function, with the leg check added).
CREATE OR REPLACE FUNCTION recording_transcript_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state = 'stored' AND OLD.state IS DISTINCT FROM 'stored' AND NEW.leg = 'mixed' THEN
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
