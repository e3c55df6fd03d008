-- What supervisors (and agents, for their own calls) did to live work: who, what, when, to which target.
-- Append-only: an action is written before it is answered as done, and also when it failed (ok = false).
CREATE TABLE supervisor_actions (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,  -- the console user name, or "api-token" for the configured bearer token
    actor_role  text NOT NULL,
    action      text NOT NULL CHECK (action IN (
        'listen', 'whisper', 'barge', 'supervision-end', 'hold', 'unhold', 'agent-state', 'move')),
    target_kind text NOT NULL CHECK (target_kind IN ('interaction', 'agent', 'supervision')),
    target_id   text NOT NULL,
    ok          boolean NOT NULL DEFAULT true,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX supervisor_actions_at ON supervisor_actions (at DESC, id DESC);
CREATE INDEX supervisor_actions_target ON supervisor_actions (target_kind, target_id, at DESC);
