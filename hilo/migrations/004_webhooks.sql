-- Outbound webhooks: who wants which timeline events, and one delivery row per (subscription, event).
--
-- Deliveries are written by a trigger in the very transaction that appends the event to the timeline,
-- so an event that is on the timeline can never be missing its deliveries (a crash between the two
-- cannot happen). The trigger then wakes the delivery workers with NOTIFY (sent at commit).

CREATE TABLE webhook_subscriptions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    url         text NOT NULL CHECK (url ~ '^https?://[^/?#[:space:]]+'),
    -- the HMAC-SHA256 key the receiver verifies signatures with: shown once, when the subscription is made
    secret      text NOT NULL CHECK (length(secret) >= 32),
    -- event types wanted: exact ('agent.answered'), a family ('ivr.*', any type starting 'ivr.'), or '*'
    event_types text[] NOT NULL CHECK (cardinality(event_types) > 0),
    -- an inactive subscription gets no new deliveries, and its pending ones wait until it is active again
    active      boolean NOT NULL DEFAULT true,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    -- sent as Hilo-Webhook-Id: the same on every attempt and replay, so receivers can drop duplicates
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    subscription_id uuid NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    event_id        bigint NOT NULL REFERENCES timeline_events (id),
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- the node sending it now, and until when: another node takes it over only after that
    lease           uuid,
    leased_until    timestamptz,
    last_status     integer,
    last_error      text,
    replays         integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    dead_at         timestamptz,
    UNIQUE (subscription_id, event_id),
    CHECK ((state = 'delivered') = (delivered_at IS NOT NULL)),
    CHECK ((state = 'dead') = (dead_at IS NOT NULL))
);
-- The head of each subscription's line (its oldest pending delivery) is what workers look for.
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (subscription_id, event_id) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_dead ON webhook_deliveries (dead_at) WHERE state = 'dead';
CREATE INDEX webhook_deliveries_delivered ON webhook_deliveries (delivered_at) WHERE state = 'delivered';

CREATE FUNCTION webhook_wants(event_types text[], event_type text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM unnest(event_types) AS t
        WHERE t = '*' OR t = event_type OR (right(t, 2) = '.*' AND starts_with(event_type, left(t, -1)))
    )
$$;

CREATE FUNCTION timeline_events_to_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (subscription_id, event_id)
    SELECT s.id, NEW.id FROM webhook_subscriptions s
    WHERE s.active AND webhook_wants(s.event_types, NEW.type);
    IF FOUND THEN
        PERFORM pg_notify('hilo_webhook_deliveries', '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER timeline_events_to_webhooks AFTER INSERT ON timeline_events
    FOR EACH ROW EXECUTE FUNCTION timeline_events_to_webhooks();
