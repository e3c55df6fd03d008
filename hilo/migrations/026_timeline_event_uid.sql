-- Each timeline event written by Hilo carries its own id, given when the fact is accepted: a write that
-- timed out (and may still have committed) and went to the node's spool (hilo/spool.py) is replayed with
-- ON CONFLICT (uid) DO NOTHING, so it has one effect. Rows written before this migration have none.
ALTER TABLE timeline_events ADD COLUMN uid uuid;
CREATE UNIQUE INDEX timeline_events_uid ON timeline_events (uid);
