-- Customers, their identities (one per kind+value, never shared), agents, interactions and the timeline.

CREATE TABLE customers (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    display_name text,
    preferred_language text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE identities (
    id          bigserial PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES customers (id),
    kind        text NOT NULL CHECK (kind IN ('phone', 'whatsapp', 'email', 'webchat', 'external')),
    value       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, value)
);
CREATE INDEX identities_customer ON identities (customer_id);

CREATE TABLE agents (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    sip_endpoint text NOT NULL UNIQUE,
    queues       text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE interactions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id uuid NOT NULL REFERENCES customers (id),
    channel     text NOT NULL CHECK (channel IN ('voice', 'sms', 'whatsapp', 'webchat')),
    direction   text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    state       text NOT NULL,
    dialed      text,
    queue       text,
    agent_id    text REFERENCES agents (id),
    outcome     text,
    hangup_by   text,
    context     jsonb NOT NULL DEFAULT '{}',
    -- the Asterisk channel id of the customer's leg: the key a resync after a restart looks calls up by
    channel_ref text UNIQUE,
    started_at  timestamptz NOT NULL DEFAULT now(),
    answered_at timestamptz,
    ended_at    timestamptz
);
CREATE INDEX interactions_customer ON interactions (customer_id, started_at);
CREATE INDEX interactions_open ON interactions (state) WHERE ended_at IS NULL;

CREATE TABLE timeline_events (
    id             bigserial PRIMARY KEY,
    customer_id    uuid NOT NULL REFERENCES customers (id),
    interaction_id uuid REFERENCES interactions (id),
    type           text NOT NULL,
    channel        text NOT NULL,
    at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    data           jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX timeline_customer_at ON timeline_events (customer_id, at, id);

-- The timeline is append-only: history is never rewritten.
CREATE FUNCTION timeline_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'timeline_events is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER timeline_events_append_only BEFORE UPDATE OR DELETE ON timeline_events
    FOR EACH ROW EXECUTE FUNCTION timeline_events_append_only();
