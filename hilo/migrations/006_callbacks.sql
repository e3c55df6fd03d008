-- Callbacks a caller asked for instead of waiting (flow node `callback`): durable before the caller hears
-- the confirmation, one per interaction, worked through by routing when an agent is free.
CREATE TABLE callbacks (
    id             bigserial PRIMARY KEY,
    interaction_id uuid NOT NULL UNIQUE REFERENCES interactions (id),
    customer_id    uuid NOT NULL REFERENCES customers (id),
    number         text NOT NULL,
    queue          text,
    state          text NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'dialing', 'done', 'failed', 'cancelled')),
    attempts       integer NOT NULL DEFAULT 0,
    context        jsonb NOT NULL DEFAULT '{}',
    requested_at   timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX callbacks_pending ON callbacks (requested_at) WHERE state = 'pending';
