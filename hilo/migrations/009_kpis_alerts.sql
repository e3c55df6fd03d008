-- KPIs read the timeline by event type and time, and each interaction's events; the wallboard's alerts
-- are facts about a queue, not about a customer, sent to webhook subscriptions like timeline events.

-- Contacts of a period (interaction.started in a range) and today's counts (agent.answered since midnight).
CREATE INDEX timeline_events_type_at ON timeline_events (type, at);
-- The events of one interaction.
CREATE INDEX timeline_events_interaction ON timeline_events (interaction_id, type) WHERE interaction_id IS NOT NULL;

-- Facts that belong to no customer's timeline (alert.raised, alert.cleared). Append-only like the timeline.
CREATE TABLE ops_events (
    id   bigserial PRIMARY KEY,
    type text NOT NULL,
    at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    data jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX ops_events_type_at ON ops_events (type, at);

-- A queue over one of its thresholds (dialplans/kpis.yaml), from raised to cleared.
CREATE TABLE queue_alerts (
    id            bigserial PRIMARY KEY,
    queue         text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('waiting', 'longest_wait', 'service_level')),
    threshold     double precision NOT NULL,
    raised_value  double precision NOT NULL,
    raised_at     timestamptz NOT NULL DEFAULT now(),
    cleared_value double precision,  -- null when there was nothing to measure (no call in the window)
    cleared_at    timestamptz
);
-- At most one open alert per queue and kind: of several Hilo nodes seeing the same breach, the one whose
-- insert succeeds is the one that announces it, so a breach is announced once.
CREATE UNIQUE INDEX queue_alerts_open ON queue_alerts (queue, kind) WHERE cleared_at IS NULL;
CREATE INDEX queue_alerts_raised ON queue_alerts (raised_at);

-- A delivery now carries either a timeline event or an ops event. Each kind keeps its own order per
-- subscription (crm_bridge/webhooks.py): an alert never waits behind a customer's events, nor they behind it.
ALTER TABLE webhook_deliveries
    ALTER COLUMN event_id DROP NOT NULL,
    ADD COLUMN ops_event_id bigint REFERENCES ops_events (id),
    ADD CONSTRAINT webhook_deliveries_one_source CHECK (num_nonnulls(event_id, ops_event_id) = 1),
    ADD CONSTRAINT webhook_deliveries_ops_once UNIQUE (subscription_id, ops_event_id);
CREATE INDEX webhook_deliveries_ops_pending ON webhook_deliveries (subscription_id, ops_event_id)
    WHERE state = 'pending' AND ops_event_id IS NOT NULL;

CREATE FUNCTION ops_events_to_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (subscription_id, ops_event_id)
    SELECT s.id, NEW.id FROM webhook_subscriptions s
    WHERE s.active AND webhook_wants(s.event_types, NEW.type);
    IF FOUND THEN
        PERFORM pg_notify('hilo_webhook_deliveries', '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER ops_events_to_webhooks AFTER INSERT ON ops_events
    FOR EACH ROW EXECUTE FUNCTION ops_events_to_webhooks();

CREATE FUNCTION ops_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ops_events is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER ops_events_append_only BEFORE UPDATE OR DELETE ON ops_events
    FOR EACH ROW EXECUTE FUNCTION ops_events_append_only();
