-- KPI reports read one row per interaction instead of re-reading every event of a period (reports/facts.py).
-- The row is derived from the timeline, the one source of truth, by one definition (the view below), and
-- kept in the same transaction as the event that changes it, so a report is exactly as fresh as the
-- timeline. `hilo reports rebuild` recomputes every row from the view.

-- What an interaction's events say for the KPIs: its first interaction.started, the first routing.queued,
-- agent.answered, interaction.ended, agent.disposition and agent.call_ended, whether callbacks were
-- requested / connected / failed, its holds and unholds, and its survey answers. The customer is the one
-- the interaction started with; merges are resolved when a report is read.
CREATE VIEW contact_facts_from_timeline AS
WITH started AS (
    SELECT DISTINCT ON (interaction_id) interaction_id, customer_id, channel, at
    FROM timeline_events
    WHERE type = 'interaction.started' AND interaction_id IS NOT NULL
    ORDER BY interaction_id, at, id
)
SELECT s.interaction_id, s.customer_id, s.channel, s.at AS started_at,
    min(e.at) FILTER (WHERE e.type = 'routing.queued') AS queued_at,
    (array_agg(e.data ->> 'queue' ORDER BY e.at, e.id) FILTER (WHERE e.type = 'routing.queued'))[1] AS queue,
    min(e.at) FILTER (WHERE e.type = 'agent.answered') AS answered_at,
    (array_agg(e.data ->> 'agent' ORDER BY e.at, e.id) FILTER (WHERE e.type = 'agent.answered'))[1] AS agent,
    min(e.at) FILTER (WHERE e.type = 'interaction.ended') AS ended_at,
    (array_agg(e.data ->> 'outcome' ORDER BY e.at, e.id) FILTER (WHERE e.type = 'interaction.ended'))[1]
        AS outcome,
    min(e.at) FILTER (WHERE e.type = 'agent.disposition') AS wrapped_at,
    coalesce(bool_or(e.type = 'callback.requested'), false) AS callback_requested,
    coalesce(bool_or(e.type = 'callback.connected'), false) AS callback_connected,
    coalesce(bool_or(e.type = 'callback.failed'), false) AS callback_failed,
    min(e.at) FILTER (WHERE e.type = 'agent.call_ended') AS agent_ended_at,
    coalesce(array_agg(e.at ORDER BY e.at) FILTER (WHERE e.type = 'call.held'), '{}') AS held,
    coalesce(array_agg(e.at ORDER BY e.at) FILTER (WHERE e.type = 'call.unheld'), '{}') AS unheld,
    jsonb_agg(e.data ORDER BY e.at, e.id) FILTER (WHERE e.type = 'survey.answer') AS surveys
FROM started s
LEFT JOIN timeline_events e ON e.interaction_id = s.interaction_id AND e.type IN (
    'routing.queued', 'agent.answered', 'interaction.ended', 'agent.disposition', 'callback.requested',
    'survey.answer', 'agent.call_ended', 'call.held', 'call.unheld', 'callback.connected', 'callback.failed')
GROUP BY s.interaction_id, s.customer_id, s.channel, s.at;

CREATE TABLE contact_facts (
    interaction_id     uuid PRIMARY KEY,
    customer_id        uuid NOT NULL,
    channel            text NOT NULL,
    started_at         timestamptz NOT NULL,
    queued_at          timestamptz,
    queue              text,
    answered_at        timestamptz,
    agent              text,
    ended_at           timestamptz,
    outcome            text,
    wrapped_at         timestamptz,
    callback_requested boolean NOT NULL,
    callback_connected boolean NOT NULL,
    callback_failed    boolean NOT NULL,
    agent_ended_at     timestamptz,
    held               timestamptz[] NOT NULL,
    unheld             timestamptz[] NOT NULL,
    surveys            jsonb
);
-- A period's contacts; the follow-up lookups read only who, where and when (index-only).
CREATE INDEX contact_facts_started ON contact_facts (started_at) INCLUDE (interaction_id, customer_id, channel);

-- Recomputes one interaction's row from its events. Serialised per interaction: a transaction adding an
-- event waits for another one adding an event of the same interaction to commit, then recomputes from a
-- fresh snapshot (READ COMMITTED) that holds both, so no event is lost between two concurrent writers.
CREATE FUNCTION contact_facts_refresh(interaction uuid) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(18, hashtext(interaction::text));
    INSERT INTO contact_facts SELECT * FROM contact_facts_from_timeline WHERE interaction_id = interaction
    ON CONFLICT (interaction_id) DO UPDATE SET
        customer_id = EXCLUDED.customer_id, channel = EXCLUDED.channel, started_at = EXCLUDED.started_at,
        queued_at = EXCLUDED.queued_at, queue = EXCLUDED.queue, answered_at = EXCLUDED.answered_at,
        agent = EXCLUDED.agent, ended_at = EXCLUDED.ended_at, outcome = EXCLUDED.outcome,
        wrapped_at = EXCLUDED.wrapped_at, callback_requested = EXCLUDED.callback_requested,
        callback_connected = EXCLUDED.callback_connected, callback_failed = EXCLUDED.callback_failed,
        agent_ended_at = EXCLUDED.agent_ended_at, held = EXCLUDED.held, unheld = EXCLUDED.unheld,
        surveys = EXCLUDED.surveys;
END $$;

CREATE FUNCTION contact_facts_follow_timeline() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM contact_facts_refresh(NEW.interaction_id);
    RETURN NULL;
END $$;

-- Only the event types the view reads change a row (the same list as reports/facts.py CONTACT_EVENTS).
CREATE TRIGGER contact_facts_follow_timeline AFTER INSERT ON timeline_events
    FOR EACH ROW WHEN (NEW.interaction_id IS NOT NULL AND NEW.type IN (
        'interaction.started', 'routing.queued', 'agent.answered', 'interaction.ended', 'agent.disposition',
        'callback.requested', 'survey.answer', 'agent.call_ended', 'call.held', 'call.unheld',
        'callback.connected', 'callback.failed'))
    EXECUTE FUNCTION contact_facts_follow_timeline();

-- The timeline already written (also what `hilo reports rebuild` does).
INSERT INTO contact_facts SELECT * FROM contact_facts_from_timeline;
